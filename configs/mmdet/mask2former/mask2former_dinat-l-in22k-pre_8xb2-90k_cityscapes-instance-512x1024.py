# Mask2Former DiNAT-L, Cityscapes instance segmentation (official yaml:
# cityscapes/instance-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_90k.yaml):
# the Cityscapes panoptic recipe on the 8 thing classes, with MMDetection's
# CityscapesDataset (instancesonly_filtered_gtFine_*.json from cityscapesscripts).
_base_ = './mask2former_dinat-l-in22k-pre_8xb2-90k_cityscapes-panoptic-512x1024.py'

published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_cityscapes_instance.pth'  # noqa

num_things_classes = 8
num_stuff_classes = 0
num_classes = num_things_classes + num_stuff_classes
crop_size = (512, 1024)  # (h, w), as the yaml's CROP.SIZE and BatchFixedSizePad
model = dict(
    data_preprocessor=dict(
        pad_seg=False,
        batch_augments=[
            dict(
                type='BatchFixedSizePad',
                size=crop_size,
                img_pad_value=0,
                pad_mask=True,
                mask_pad_value=0,
                pad_seg=False)
        ]),
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(
        num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=False, instance_on=True, semantic_on=False))

# The panoptic pipelines, loading instance annotations instead. Upstream's instance mapper
# keeps every instance, with an empty mask when the crop misses it (no FilterAnnotations),
# as the panoptic crop (RandomCropKeepEmpty) does.
train_pipeline, test_pipeline = [[
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
    if step.type == 'LoadPanopticAnnotations' else step for step in pipeline
] for pipeline in (_base_.train_pipeline, _base_.test_pipeline)]
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        ann_file='annotations/instancesonly_filtered_gtFine_train.json',
        data_prefix=dict(_delete_=True, img='leftImg8bit/train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        ann_file='annotations/instancesonly_filtered_gtFine_val.json',
        data_prefix=dict(_delete_=True, img='leftImg8bit/val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_val.json',
        metric=['bbox', 'segm'],
        backend_args={{_base_.backend_args}}),
    dict(
        type='CityScapesMetric',
        seg_prefix=data_root + 'gtFine/val',
        outfile_prefix='./work_dirs/cityscapes_metric/instance',
        backend_args={{_base_.backend_args}}),
]
test_evaluator = val_evaluator
