# UperNet with a DiNAT backbone, in mixed precision: DiNAT's ADE20K dilations for
# 512x512 crops (the 'ade20k512' preset).
_base_ = './upernet_nat_ade20k-512x512_amp-160k.py'

model = dict(backbone=dict(type='DiNAT', dilations='ade20k512'))
