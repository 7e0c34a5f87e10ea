_base_ = [
    '../_base_/models/cascade-mask-rcnn_dinat_fpn.py',
    '../_base_/coco-instance_ms-crop-3x.py',
]
from nattk.backbones.weights import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('dinat_large.in22k_224')
# The published COCO weights (mmdet 2.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/coco/cascadedmaskrcnn_dinat_large.pth'  # noqa
# FP32, as the original ("No mixed precision with float16 in DiNAT-L").
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=7.5e-05))
model = dict(backbone=dict(arch='large', drop_path_rate=0.6,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
             neck=dict(in_channels=[192, 384, 768, 1536]))
