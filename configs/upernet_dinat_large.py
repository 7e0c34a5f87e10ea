# Short name for the flagship model: UperNet with DiNAT-Large (ImageNet-22k) on
# ADE20K, 160k iterations (published: 238M params, 2335G FLOPs, 54.0 / 54.9 mIoU).
#   python tools/train.py configs/upernet_dinat_large.py
_base_ = './mmseg/dinat/dinat-l-in22k-pre_upernet_8xb2-160k_ade20k-512x512.py'
