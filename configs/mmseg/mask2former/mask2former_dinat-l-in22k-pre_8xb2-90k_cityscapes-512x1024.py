# Mask2Former with DiNAT-Large (ImageNet-22k), Cityscapes semantic segmentation, from
# the official Detectron2 yaml (cityscapes/semantic-segmentation/dinat/
# maskformer2_dinat_large_IN21k_384_bs16_90k.yaml): kernel 11 with the Mask2Former
# dilations, drop-path 0.3, 100 queries, short side int(x * 0.1 * 1024) for x = 5..20
# (max 4096), 512x1024 crops, test at 1024x2048, the ADE20K optimiser settings, FP32,
# 90k iterations of poly (0.9) at 16 images per step.
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py'
custom_imports = dict(imports=['nattk.segmentation'], allow_failed_imports=False)

pretrained = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224_11x11interp.pth'  # noqa
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

# Multi-scale + flip evaluation (`--tta`), the yaml's TEST.AUG: short side
# 512..1792 (max 4096), with flips.
tta_model = dict(type='SegTTAModel')
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
