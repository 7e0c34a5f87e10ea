"""Parameters and FLOPs of a NAT / DiNAT / DiNAT_s model, counted as the papers do.

FLOPs are fvcore-style multiply-accumulates (MMEngine's ``FlopAnalyzer``) with
neighborhood attention counted as N·k²·C MACs for QK plus the same for AV.

Examples::

    python tools/get_flops.py nat_tiny                       # ImageNet classifier at 224²
    python tools/get_flops.py dinat_large --shape 384 384
    python tools/get_flops.py dinat_large --shape 384 384 --kernel-size 11
"""

from __future__ import annotations

import argparse

import torch
from mmengine.analysis import FlopAnalyzer

from nattk.backbones.flops import NA_FLOP_HANDLES
from nattk.backbones.variants import create_model


def count(model: torch.nn.Module, shape: tuple[int, int]) -> tuple[int, int]:
    """(parameters, FLOPs) of ``model`` on one ``3×H×W`` image."""
    model.eval()
    analyzer = FlopAnalyzer(model, torch.zeros(1, 3, *shape)).set_op_handle(**NA_FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        flops = analyzer.total()
    return sum(p.numel() for p in model.parameters()), flops


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="variant name, e.g. dinat_tiny")
    parser.add_argument("--shape", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=1000, help="0 for the dense backbone")
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument(
        "--dilations",
        default=None,
        help="DiNAT dilation preset (default: imagenet384 for 384² kernel-7 models, else imagenet224; "
        "dilation does not change the FLOPs)",
    )
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    main()
