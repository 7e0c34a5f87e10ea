# UperNet with a DiNAT_s backbone, in mixed precision: DiNAT_s-Tiny's channels (Swin-T's).
_base_ = './upernet_dinat_ade20k-512x512_amp-160k.py'

model = dict(
    backbone=dict(type='DiNAT_s'),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
