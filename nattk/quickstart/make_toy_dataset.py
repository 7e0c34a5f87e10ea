"""Write a seeded synthetic dataset in a real on-disk format (COCO, ADE20K, Cityscapes).

Images show squares and disks of random colour, size and texture, partly occluding
each other, on a noisy gradient with clutter (lines, dots); the class is the shape.
The same arguments always write the same files.

Examples::

    python tools/make_toy_dataset.py coco data/toy_coco                 # instances + panoptic
    python tools/make_toy_dataset.py ade20k data/toy_ade20k --size 128 128
    python tools/make_toy_dataset.py cityscapes data/toy_cityscapes --simple
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from nattk.quickstart.toy_data import make_toy_ade20k, make_toy_cityscapes, make_toy_coco

DEFAULTS = dict(num_train=400, num_val=50, size=(128, 128), max_shapes=4)


def make(
    kind: str,
    out: Path,
    num_train: int,
    num_val: int,
    size,
    max_shapes: int,
    seed: int,
    cluttered: bool = True,
    progress: Optional[Callable[[], None]] = None,
) -> Path:
    """Writes one dataset; see :mod:`nattk.quickstart.toy_data` for the layouts.

    ``progress`` (COCO and ADE20K layouts) is called after each image is written.
    """
    size = tuple(size)
    if kind == "coco":
        return make_toy_coco(out, num_train, num_val, size, max_shapes, seed, cluttered, progress)
    if kind == "ade20k":
        return make_toy_ade20k(out, num_train, num_val, size, seed, cluttered, max_shapes, progress)
    if kind == "cityscapes":
        return make_toy_cityscapes(out, num_train, num_val, size, seed)
    raise ValueError(f"unknown dataset kind {kind!r}; choose coco, ade20k or cityscapes")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["coco", "ade20k", "cityscapes"])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"])
    parser.add_argument("--num-val", type=int, default=DEFAULTS["num_val"])
    parser.add_argument("--size", type=int, nargs=2, default=DEFAULTS["size"], metavar=("H", "W"))
    parser.add_argument("--max-shapes", type=int, default=DEFAULTS["max_shapes"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--simple", action="store_true", help="flat colours, no clutter")
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1 or min(args.size) < 32 or args.max_shapes < 1:
        parser.error("need --num-train/--num-val/--max-shapes >= 1 and --size >= 32")
    root = make(
        args.kind,
        args.out,
        args.num_train,
        args.num_val,
        args.size,
        args.max_shapes,
        args.seed,
        not args.simple,
    )
    print(f"wrote a toy {args.kind} dataset to {root}", file=sys.stderr)
