# Mask2Former with DiNAT-Large (ImageNet-22k), COCO panoptic, translated from the
# official Detectron2 yaml (maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml):
# kernel 11 with the Mask2Former dilations, drop-path 0.3, 200 queries, LSJ at 1024,
# AdamW lr 1e-4 wd 0.05 with backbone lr x0.1 and no decay on norms and query/level
# embeddings (rpb *is* decayed, as in Detectron2), full-model grad clip 0.01, FP32,
# 16 images per step for 100 epochs (737,500 iterations, steps at 655,556 / 710,184).
_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'
custom_imports = dict(imports=['nattk.detection'], allow_failed_imports=False)

# The yaml names "dinat_large_in22k_224.pkl", the kernel-7 file, while building a
# kernel-11 model; the 11x11-interpolated 22k weights are the consistent choice
# (kernel-7 files also load: their rpb are resized bicubically).
pretrained = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224_11x11interp.pth'  # noqa
# Published weights (Detectron2 layout).
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_coco_panoptic.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='DiNAT',
        arch='large',
        kernel_size=11,
        dilations='m2f',
        layer_scale=None,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(num_queries=200, in_channels=[192, 384, 768, 1536]))

# Base: AdamW 1e-4, wd 0.05, backbone lr_mult 0.1, norm_decay_mult 0 (every LayerNorm /
# GroupNorm), query_embed / query_feat / level_embed without decay, clip_grad 0.01.
optim_wrapper = dict(type='OptimWrapper')

max_iters = 737500
param_scheduler = dict(end=max_iters, milestones=[655556, 710184])
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
train_cfg = dict(
    max_iters=max_iters, val_interval=interval, dynamic_intervals=dynamic_intervals)
