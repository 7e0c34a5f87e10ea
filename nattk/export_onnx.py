"""Export a NAT / DiNAT backbone or a whole MMSegmentation segmentor to ONNX.

Neighborhood attention is written in standard ONNX operators (Gather, MatMul,
Softmax, ...), so the file runs on any ONNX runtime. After writing it, the tool
runs the file with ONNX Runtime (CPU) on the export size and on every
``--check-shape`` and prints the largest difference to PyTorch.

Examples::

    # the whole UperNet + DiNAT-T segmentor, logits out, at 512x512
    python tools/export_onnx.py configs/mmseg/dinat/dinat-t_upernet_8xb2-amp-160k_ade20k-512x512.py \\
        dinat_t_upernet.pth --shape 512 512 --out work_dirs/onnx/upernet_dinat_t.onnx

    # the backbone of a detection config, any size from the unpadded minimum up
    # (DiNAT-T with the COCO dilations: 781 px and more)
    python tools/export_onnx.py configs/mmdet/dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py \\
        --backbone --shape 800 1216 --dynamic --check-shape 832 1344 --out dinat_t_backbone.onnx
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from nattk.backbones.export import export_program, smallest_unpadded_input, to_onnx
from nattk.backbones.weights.files import atomic_output
from nattk.dev.onnx_runtime import max_abs_difference, onnxruntime_outputs, onnxruntime_session
from nattk.openmmlab.cli import ignore_pkg_resources_warning
from nattk.openmmlab.exportable import build_exportable
from nattk.timing import median_ms


def _pytorch(module, image):
    with torch.no_grad():
        return module(image)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="an MMDetection / MMSegmentation config of the toolkit")
    parser.add_argument("checkpoint", nargs="?", default=None, help="weights (default: random)")
    parser.add_argument("--shape", type=int, nargs=2, required=True, metavar=("H", "W"))
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--backbone", action="store_true", help="export only the backbone")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="symbolic height/width (from the smallest size at which no layer pads)",
    )
    parser.add_argument(
        "--check-shape",
        type=int,
        nargs=2,
        action="append",
        default=[],
        metavar=("H", "W"),
        help="also compare ONNX Runtime with PyTorch at this size (needs --dynamic)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument(
        "--allow-partial", action="store_true", help="load a checkpoint that does not fit"
    )
    parser.add_argument(
        "--benchmark", type=int, default=0, metavar="N", help="time N runs of each (median)"
    )
    args = parser.parse_args(argv)
    ignore_pkg_resources_warning()
    for shape in [args.shape, *(args.check_shape or [])]:
        if min(shape) < 1:
            parser.error(f"image sizes must be positive, got {shape[0]} {shape[1]}")
    if args.check_shape and not args.dynamic:
        parser.error("--check-shape needs --dynamic (a fixed-shape file takes one size only)")
    if args.dynamic and not args.backbone:
        # The decode heads' adaptive pooling (UperNet's PPM) exports for one size only.
        parser.error("--dynamic exports backbones only (--backbone); segmentors are fixed-shape")

    module, framework = build_exportable(
        args.config, args.checkpoint, args.backbone, allow_partial=args.allow_partial
    )
    what = "backbone" if args.backbone else "segmentor"
    image = torch.randn(1, 3, *args.shape)
    if args.dynamic:
        print(f"dynamic height/width from {smallest_unpadded_input(module)} px")
    start = time.perf_counter()
    program = export_program(module, image, dynamic=args.dynamic)
    # The file is written next to --out and checked there; only a file within
    # --tolerance replaces --out, so a failed run leaves an existing one as it was.
    try:
        with atomic_output(args.out) as staging:
            to_onnx(program, image, staging)
            print(f"exported {framework} {what} ({time.perf_counter() - start:.1f} s)")
            worst = _check(module, staging, [tuple(args.shape), *map(tuple, args.check_shape)],
                           args.benchmark)  # fmt: skip
            if worst > args.tolerance:
                raise _ToleranceExceeded(worst)
    except _ToleranceExceeded as failed:
        print(
            f"FAILED: difference {failed.worst:.2e} above --tolerance {args.tolerance:.0e}; "
            f"{args.out} not written"
        )
        return 1
    print(f"wrote {args.out}")
    return 0


class _ToleranceExceeded(Exception):
    def __init__(self, worst: float):
        super().__init__(worst)
        self.worst = worst


def _check(module, path, shapes, benchmark: int) -> float:
    """Largest |ONNX Runtime - PyTorch| over ``shapes``; prints each (and timings)."""
    session = onnxruntime_session(path)
    worst = 0.0
    for shape in shapes:
        check = torch.randn(1, 3, *shape)
        diff = max_abs_difference(_pytorch(module, check), onnxruntime_outputs(session, check))
        worst = max(worst, diff)
        print(f"{shape[0]}x{shape[1]}: max |onnxruntime - pytorch| = {diff:.2e}")
        if benchmark:
            t_torch = median_ms(partial(_pytorch, module, check), benchmark, warmup=1)
            t_ort = median_ms(partial(onnxruntime_outputs, session, check), benchmark, warmup=1)
            print(f"  latency: pytorch {t_torch:.1f} ms, onnxruntime {t_ort:.1f} ms")
    return worst
