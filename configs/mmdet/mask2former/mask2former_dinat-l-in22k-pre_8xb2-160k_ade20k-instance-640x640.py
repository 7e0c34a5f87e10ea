# Mask2Former DiNAT-L, ADE20K instance segmentation (official yaml:
# ade20k/instance-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_160k.yaml):
# the ADE20K panoptic recipe with the 100 thing classes only.
_base_ = './mask2former_dinat-l-in22k-pre_8xb2-160k_ade20k-panoptic-640x640.py'

published_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_ade20k_instance.pth'  # noqa

num_things_classes = 100
num_stuff_classes = 0
num_classes = num_things_classes + num_stuff_classes
image_size = (640, 640)
model = dict(
    data_preprocessor=dict(
        pad_seg=False,
        batch_augments=[
            dict(
                type='BatchFixedSizePad',
                size=image_size,
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
dataset_type = 'ADE20KInstanceDataset'
data_root = 'data/ADEChallengeData2016/'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        ann_file='ade20k_instance_train.json',
        data_prefix=dict(_delete_=True, img='images/training/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        ann_file='ade20k_instance_val.json',
        data_prefix=dict(_delete_=True, img='images/validation/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='CocoMetric',
    ann_file=data_root + 'ade20k_instance_val.json',
    metric=['bbox', 'segm'],
    backend_args={{_base_.backend_args}})
test_evaluator = val_evaluator
