# Mask R-CNN with a DiNAT_s backbone and FPN: DiNAT_s-Tiny's channels (Swin-T's).
_base_ = './mask-rcnn_dinat_fpn.py'

model = dict(backbone=dict(type='DiNAT_s'), neck=dict(in_channels=[96, 192, 384, 768]))
