_base_ = '../_base_/upernet_dinat_ade20k-512x512_amp-160k.py'
from nattk.backbones.weights import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('dinat_tiny.in1k_224')
# The published ADE20K weights (mmseg 0.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/ade20k/upernet_dinat_tiny.pth'  # noqa
model = dict(backbone=dict(arch='tiny', drop_path_rate=0.3,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
