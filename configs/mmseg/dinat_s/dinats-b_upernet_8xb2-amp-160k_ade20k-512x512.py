_base_ = '../_base_/upernet_dinats_ade20k-512x512_amp-160k.py'
from nattk.backbones.weights import pretrained_url  # noqa: E402

# ImageNet weights the published model started from.
pretrained = pretrained_url('dinat_s_base.in1k_224')
# The published ADE20K weights (mmseg 0.x layout; see tools/convert_legacy_checkpoint.py).
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/ade20k/upernet_dinat_s_base.pth'  # noqa
model = dict(backbone=dict(arch='base', drop_path_rate=0.3,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
