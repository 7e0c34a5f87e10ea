_base_ = [
    '../_base_/models/cascade-mask-rcnn_nat_fpn.py',
    '../_base_/coco-instance_ms-crop-3x.py',
]
from nattk.backbones.pretrained import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('dinat_s_large.in22k_224')
# The published COCO weights (mmdet 2.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/coco/cascadedmaskrcnn_dinat_s_large.pth'  # noqa
model = dict(
    backbone=dict(
        type='DiNATs',
        arch='large',
        kernel_size=7,
        dilations='coco',
        layer_scale=None,
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    # fp16 as in the original (mmcv Fp16OptimizerHook, static loss scale 512)
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(lr=5e-05),
)
