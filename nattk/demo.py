"""Draw a model's predictions on one image.

Works with any MMDetection or MMSegmentation config of this toolkit: the quickstart
checkpoints, and the published ones (after ``tools/convert_legacy_checkpoint.py`` for
mmdet 2.x / mmseg 0.x files).

Examples::

    python tools/demo.py data/toy_coco/val2017/000000000001.jpg \\
        configs/quickstart/mask-rcnn_dinat-toy_fpn_toy-coco.py \\
        work_dirs/quickstart/det/iter_1200.pth --out overlay.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nattk.inference import load_model, predict_overlay, read_rgb
from nattk.openmmlab.cli import ignore_pkg_resources_warning
from nattk.visualize import save_png


def main(argv=None) -> Path:
    """Runs the demo on ``argv`` (default: the command line); returns the written file."""
    ignore_pkg_resources_warning()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: <image stem>_pred.png")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score-thr", type=float, default=0.5, help="detections below are hidden")
    parser.add_argument(
        "--allow-partial", action="store_true", help="load a checkpoint that does not fit"
    )
    args = parser.parse_args(argv)
    for path in (args.image, args.config, args.checkpoint):
        if not path.is_file():
            parser.error(f"no such file: {path}")
    read_rgb(args.image)  # a damaged image is refused before the model is built
    model = load_model(
        args.config, args.checkpoint, device=args.device, allow_partial=args.allow_partial
    )
    out = args.out or Path(f"{args.image.stem}_pred.png")
    save_png(out, predict_overlay(model, args.image, args.score_thr))
    print(f"wrote {out}", file=sys.stderr)
    return out
