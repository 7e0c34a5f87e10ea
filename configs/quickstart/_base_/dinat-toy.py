# `DiNAT-toy`, the backbone of the quickstart configs: DiNAT's structure at a quarter of
# DiNAT-Mini's width (embed_dim 32, depths [2, 2, 2, 2], kernel 7) with dilation 2 in the
# second block of the first two levels; 1.8M parameters, trained from scratch.
dinat_toy = dict(
    _delete_=True,
    type='DiNAT',
    embed_dim=32,
    depths=[2, 2, 2, 2],
    num_heads=[2, 4, 8, 16],
    mlp_ratio=2.0,
    kernel_size=7,
    dilations=[[1, 2], [1, 2], [1, 1], [1, 1]],
    drop_path_rate=0.0,
    init_cfg=None)
dinat_toy_channels = [32, 64, 128, 256]
