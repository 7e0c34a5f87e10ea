# Mask2Former DiNAT-L, ADE20K panoptic (official yaml:
# ade20k/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_160k.yaml):
# 200 queries, short side int(x * 0.1 * 640) for x = 5..20 (max 2560), 640x640 crop,
# SSD colour augmentation, flip; 160k iterations of poly (power 0.9) at 16 images/step.
_base_ = './mask2former_dinat-l-in22k-pre_8xb2-lsj-100e_coco-panoptic.py'

published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_ade20k_panoptic.pth'  # noqa

num_things_classes = 100
num_stuff_classes = 50
num_classes = num_things_classes + num_stuff_classes
image_size = (640, 640)
data_preprocessor = dict(
    batch_augments=[
        dict(
            type='BatchFixedSizePad',
            size=image_size,
            img_pad_value=0,
            pad_mask=True,
            mask_pad_value=0,
            pad_seg=True,
            seg_pad_value=255)
    ])
model = dict(
    data_preprocessor=data_preprocessor,
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(
        num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=True, instance_on=True, semantic_on=True))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),  # uint8, as upstream
    dict(
        type='LoadPanopticAnnotations',
        with_bbox=True,
        with_mask=True,
        with_seg=True,
        backend_args={{_base_.backend_args}}),
    dict(
        type='RandomChoiceResize',
        scales=[(2560, int(x * 0.1 * 640)) for x in range(5, 21)],
        keep_ratio=True),
    # Upstream's panoptic mapper keeps every segment, with an empty mask when the crop
    # misses it: things are kept so (stuff: see docs/recipe_differences.md).
    dict(type='RandomCropKeepEmpty', crop_size=image_size, crop_type='absolute'),
    dict(type='ColorAugSSD'),  # Detectron2's ColorAugSSDTransform (COLOR_AUG_SSD)
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadPanopticAnnotations', backend_args={{_base_.backend_args}}),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset_type = 'ADE20KPanopticDataset'
data_root = 'data/ADEChallengeData2016/'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ade20k_panoptic_train.json',
        data_prefix=dict(img='images/training/', seg='ade20k_panoptic_train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ade20k_panoptic_val.json',
        data_prefix=dict(img='images/validation/', seg='ade20k_panoptic_val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(
        type='CocoPanopticMetric',
        ann_file=data_root + 'ade20k_panoptic_val.json',
        seg_prefix=data_root + 'ade20k_panoptic_val/',
        backend_args={{_base_.backend_args}}),
    dict(
        type='CocoMetric',
        ann_file=data_root + 'ade20k_instance_val.json',
        metric=['bbox', 'segm'],
        backend_args={{_base_.backend_args}}),
    # mIoU of the semantic output against the panoptic PNGs' semantic map (see the
    # "Remaining differences" in docs/recipe_differences.md).
    dict(type='SemSegMetric', iou_metrics=['mIoU']),
]
test_evaluator = val_evaluator

max_iters = 160000
param_scheduler = dict(
    _delete_=True, type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
train_cfg = dict(
    max_iters=max_iters, val_interval=interval, dynamic_intervals=dynamic_intervals)
