# Mask2Former with DiNAT-Large (ImageNet-22k), ADE20K semantic segmentation, from the
# official Detectron2 yaml (ade20k/semantic-segmentation/dinat/
# maskformer2_dinat_large_IN21k_384_bs16_160k.yaml): kernel 11 with the Mask2Former
# dilations, drop-path 0.3, 100 queries, short side int(x * 0.1 * 640) for x = 5..20
# (max 2560), 640x640 crops, AdamW lr 1e-4 wd 0.05 with backbone lr x0.1 and no decay
# on norms (backbone's included) and query/level embeddings (rpb decayed, as in
# Detectron2), single-category crop limit off, grad clip 0.01,
# FP32, 160k iterations of poly (0.9) at 16 images per step.
_base_ = 'mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py'
from nattk.backbones.weights import pretrained_url  # noqa: E402

custom_imports = dict(imports=['nattk.segmentation'], allow_failed_imports=False)

# The yaml names the kernel-7 22k file for a kernel-11 model; the 11x11-interpolated
# 22k weights are the consistent choice (kernel-7 files load with resized rpb).
pretrained = pretrained_url('dinat_large.in22k_224_k11')
# Published weights (Detectron2 layout).
published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_ade20k_semantic.pth'  # noqa

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

# Mask2Former's Detectron2 parameter groups (nattk/optim_constructor.py): backbone lr
# x0.1, no decay on every norm layer (the backbone's LayerNorms included) and on the
# query/level embeddings, rpb decayed. MMEngine's default constructor cannot express it:
# a 'backbone' custom key switches norm_decay_mult off for the whole backbone.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='Detectron2OptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, backbone_lr_mult=0.1, weight_decay_norm=0.0,
                       weight_decay_embed=0.0))

# The yaml's crop has SINGLE_CATEGORY_MAX_AREA 1.0 (no constraint); mmseg's base uses 0.75.
# mmseg's PhotoMetricDistortion is Detectron2's ColorAugSSD (same steps, clipping, hue).
crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomChoiceResize',
        scales=[int(x * 0.1 * 640) for x in range(5, 21)],
        resize_type='ResizeShortestEdge',
        max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# Multi-scale + flip evaluation (`--tta`), the yaml's TEST.AUG: short side
# 320..1120 (max 4480), with flips. The scores are averaged as they are, as upstream
# (SegTTAModel would softmax Mask2Former's already normalised scores first).
tta_model = dict(type='MeanScoreSegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(4480, short), keep_ratio=True)
                for short in (320, 480, 640, 800, 960, 1120)
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
