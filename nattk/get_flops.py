"""Parameters and FLOPs of a NAT / DiNAT / DiNAT_s model or of a shipped config.

FLOPs are fvcore-style multiply-accumulates (MMEngine's ``FlopAnalyzer``) with
neighborhood attention counted as N·k²·C MACs for QK plus the same for AV, as the
published tables were. Detection configs are counted on MMDetection 2.x's
``forward_dummy`` (1000 proposals, masks on 100) at 1280×800, segmentation configs on
MMSegmentation 0.x's ``forward_dummy`` (backbone + decode head) at 2048×512, unless
``--shape`` says otherwise.

Examples::

    python tools/get_flops.py nat_tiny                       # ImageNet classifier at 224²
    python tools/get_flops.py dinat_large --shape 384 384 --kernel-size 11
    python tools/get_flops.py configs/mmdet/nat/mask-rcnn_nat-t_fpn_amp-ms-crop-3x_coco.py
"""

from __future__ import annotations

import argparse

import torch
from mmengine.analysis import FlopAnalyzer

from nattk.backbones.flops import NA_FLOP_HANDLES
from nattk.backbones.variants import create_model

# (H, W) of the published tables.
DEFAULT_SHAPES = {"mmdet": (800, 1280), "mmseg": (512, 2048)}


def count(model: torch.nn.Module, shape: tuple[int, int]) -> tuple[int, int]:
    """(parameters, FLOPs) of ``model`` on one ``3×H×W`` image."""
    model.eval()
    analyzer = FlopAnalyzer(model, torch.zeros(1, 3, *shape)).set_op_handle(**NA_FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        flops = analyzer.total()
    return sum(p.numel() for p in model.parameters()), flops


def model_from_config(path: str) -> tuple[torch.nn.Module, torch.nn.Module | None, tuple]:
    """Builds a config's model.

    Returns:
        The model, the module to trace for FLOPs (``None`` when this tool has no
        published counting convention for the architecture) and the input ``(H, W)``
        of the published count: the config's ``flops_input_shape`` if it sets one,
        else 800×1280 for detection and 512×2048 for segmentation.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from nattk.openmmlab.cli import framework_of

    cfg = Config.fromfile(path)
    framework = framework_of(cfg)
    init_default_scope(framework)
    if framework == "mmdet":
        from mmdet.registry import MODELS

        from nattk.detection.complexity import DummyForward

        model = MODELS.build(cfg.model)
        traced = DummyForward(model) if hasattr(model, "roi_head") else None
    else:
        from mmseg.registry import MODELS

        from nattk.segmentation.complexity import DecodeHeadLogits

        model = MODELS.build(cfg.model)
        traced = DecodeHeadLogits(model) if DecodeHeadLogits.supports(model) else None
    shape = tuple(cfg.get("flops_input_shape") or DEFAULT_SHAPES[framework])
    return model, traced, shape


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="variant name (e.g. dinat_tiny) or a config file")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="input size (default: 224 224; configs: 800 1280 detection, 512 2048 segmentation)",
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="0 for the dense backbone")
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument(
        "--dilations",
        default=None,
        help="DiNAT dilation preset (default: imagenet384 for 384² kernel-7 models, else imagenet224; "
        "dilation does not change the FLOPs)",
    )
    args = parser.parse_args(argv)
    if args.shape is not None and min(args.shape) < 1:
        parser.error(f"image sizes must be positive, got {args.shape[0]} {args.shape[1]}")
    if args.model.endswith(".py"):
        from nattk.openmmlab.cli import ignore_pkg_resources_warning

        ignore_pkg_resources_warning()
        model, traced, shape = model_from_config(args.model)
        shape = tuple(args.shape or shape)
        params = sum(p.numel() for p in model.parameters())
        if traced is None:
            print(f"{args.model}: params {params / 1e6:.2f}M (FLOPs: no published convention)")
            return
        _, flops = count(traced, shape)
        print(
            f"{args.model} @ {shape[1]}x{shape[0]}: "
            f"params {params / 1e6:.2f}M, FLOPs {flops / 1e9:.2f}G"
        )
        return
    args.shape = args.shape or (224, 224)
    dilations = args.dilations or (
        "imagenet384" if args.shape[0] >= 384 and args.kernel_size == 7 else "imagenet224"
    )
    model = create_model(
        args.model, num_classes=args.num_classes, kernel_size=args.kernel_size, dilations=dilations
    )
    params, flops = count(model, tuple(args.shape))
    print(
        f"{args.model} @ {args.shape[0]}x{args.shape[1]} (kernel {args.kernel_size}): "
        f"params {params / 1e6:.2f}M, FLOPs {flops / 1e9:.2f}G"
    )
