_base_ = '../_base_/upernet_nat_ade20k-512x512_amp-160k.py'
from nattk.backbones.weights import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('nat_small.in1k_224')
# The published ADE20K weights (mmseg 0.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/nat/checkpoints/SEG/nat_small_upernet.pth'  # noqa
model = dict(backbone=dict(arch='small', layer_scale=1e-5, drop_path_rate=0.5,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
