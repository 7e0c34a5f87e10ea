# Quickstart: UperNet with `DiNAT-toy` (_base_/dinat-toy.py) trained from scratch on the
# generated toy ADE20K-layout set (tools/make_toy_dataset.py ade20k data/toy_ade20k).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/dinat-toy.py',
]
custom_imports = dict(imports=['nattk.segmentation'], allow_failed_imports=False)

num_iters = 2400
data_root = 'data/toy_ade20k/'
crop_size = (128, 128)
# ADE20K's label convention: 0 "other" is ignored (reduce_zero_label), then these three.
metainfo = dict(
    classes=('background', 'square', 'disk'),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75]])
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    pretrained=None,  # the base's ResNet URL
    data_preprocessor=dict(size=crop_size),
    backbone={{_base_.dinat_toy}},
    decode_head=dict(
        in_channels={{_base_.dinat_toy_channels}}, channels=64, num_classes=3, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=3, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=num_iters, val_interval=num_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.0), 'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=50, end=num_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=num_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
# Seeded data order, augmentation and initialisation; `deterministic` pins cuDNN's
# algorithms on a GPU (on a CPU the results depend on the thread count and the CPU).
randomness = dict(seed=0, deterministic=True)
# mmseg's default runtime turns cuDNN benchmarking on; `deterministic` wants it off.
env_cfg = dict(cudnn_benchmark=False)
