_base_ = [
    '../_base_/models/mask-rcnn_nat_fpn.py',
    '../_base_/coco-instance_amp-ms-crop-3x.py',
]
from nattk.backbones.weights import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('nat_tiny.in1k_224')
# The published COCO weights (mmdet 2.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/nat/checkpoints/DET/nat_tiny_maskrcnn.pth'  # noqa
model = dict(backbone=dict(arch='tiny', drop_path_rate=0.2,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
