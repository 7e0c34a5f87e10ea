# Mask2Former with DiNAT-Large (ImageNet-22k), Cityscapes semantic segmentation, from
# the official Detectron2 yaml (cityscapes/semantic-segmentation/dinat/
# maskformer2_dinat_large_IN21k_384_bs16_90k.yaml): kernel 11 with the Mask2Former
# dilations, drop-path 0.3, 100 queries, short side int(x * 0.1 * 1024) for x = 5..20
# (max 4096), 512x1024 crops (no single-category limit), test at 1024x2048, the ADE20K
# optimiser settings, FP32,
# 90k iterations of poly (0.9) at 16 images per step.
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py'
from nattk.backbones.weights import pretrained_url  # noqa: E402

custom_imports = dict(imports=['nattk.segmentation'], allow_failed_imports=False)

pretrained = pretrained_url('dinat_large.in22k_224_k11')
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_cityscapes_semantic.pth'  # noqa

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
    decode_head=dict(num_queries=100, in_channels=[192, 384, 768, 1536]))

# Mask2Former's Detectron2 parameter groups, as in the ADE20K config.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='Detectron2OptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, backbone_lr_mult=0.1, weight_decay_norm=0.0,
                       weight_decay_embed=0.0))

# SINGLE_CATEGORY_MAX_AREA 1.0 in the yaml (mmseg's base: 0.75).
crop_size = (512, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomChoiceResize',
        scales=[int(1024 * x * 0.1) for x in range(5, 21)],
        resize_type='ResizeShortestEdge',
        max_size=4096),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# Multi-scale + flip evaluation (`--tta`), the yaml's TEST.AUG: short side
# 512..1792 (max 4096), with flips.
tta_model = dict(type='MeanScoreSegTTAModel')  # raw score mean, as upstream
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(4096, short), keep_ratio=True)
                for short in (512, 768, 1024, 1280, 1536, 1792)
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
