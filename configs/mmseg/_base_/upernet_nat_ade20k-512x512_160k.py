# UperNet with a NAT-family backbone on ADE20K, the NAT/DiNAT recipe (official
# mmseg 0.20 configs): 512x512 crops from images resized to (2048, 512) x [0.5, 2.0],
# AdamW lr 6e-5 wd 0.01 with no decay on rpb and norms, 1500-iteration linear warmup
# then poly (power 1.0) to 160k iterations, 16 images per step (8 GPUs x 2),
# auxiliary FCN head on level 3 with loss weight 0.4, whole-image inference.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['nattk.segmentation'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='NAT',
        arch='tiny',
        layer_scale=None,
        kernel_size=7,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150, loss_decode=dict(loss_weight=0.4)),
    test_cfg=dict(mode='whole'))

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    # Substring match, as in the originals: every rpb and every *norm* parameter.
    paramwise_cfg=dict(custom_keys={
        'rpb': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Multi-scale + flip evaluation (`tools/test.py --tta`): the official `--aug-test`
# resized to (2048, 512) x {0.5, ..., 1.75} and flipped.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
