# Cascade Mask R-CNN with a NAT-family backbone and FPN. As in every official NAT /
# DiNAT Cascade config, the three bbox heads are 4conv1fc with SyncBN and GIoU loss.
_base_ = 'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'


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
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=stage_stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stage_stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                           [0.033, 0.033, 0.067, 0.067])
    ]))
