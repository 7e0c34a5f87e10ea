# Mask R-CNN with a NAT-family backbone and FPN (MMDetection's R50-FPN heads).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='NAT',
        arch='tiny',
        layer_scale=None,
        kernel_size=7,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.2),
    neck=dict(in_channels=[64, 128, 256, 512]))
