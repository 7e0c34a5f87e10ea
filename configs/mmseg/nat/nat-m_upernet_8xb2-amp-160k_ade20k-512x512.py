_base_ = '../_base_/upernet_nat_ade20k-512x512_amp-160k.py'
from nattk.backbones.weights import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('nat_mini.in1k_224')
# The published ADE20K weights (mmseg 0.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/nat/checkpoints/SEG/nat_mini_upernet.pth'  # noqa
model = dict(backbone=dict(arch='mini', drop_path_rate=0.2,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
