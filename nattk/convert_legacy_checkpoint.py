"""Convert a published mmdet 2.x / mmseg 0.x NAT / DiNAT checkpoint for this toolkit.

The official COCO and ADE20K checkpoints (``maskrcnn_dinat_tiny.pth``,
``upernet_dinat_large.pth``, ...) were written by mmdet 2.19 / mmseg 0.20 on mmcv 1.x.
Their parameter names already match this toolkit's models (backbone keys are the
official ones, and the MMDetection 3 / MMSegmentation 1 heads kept their names); what
changes is the wrapping: the optimizer state is dropped, half tensors are stored as
float32, and mmcv's ``meta['CLASSES']`` / ``meta['PALETTE']`` become MMEngine's
``meta['dataset_meta']``. With ``--config`` the result is checked against the model
the config builds (MMDetection or MMSegmentation, from its scope), and missing or
misshapen tensors are an error.

Examples::

    python tools/convert_legacy_checkpoint.py maskrcnn_dinat_tiny.pth mask-rcnn_dinat-t.pth \\
        --config configs/mmdet/dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py
    python tools/convert_legacy_checkpoint.py upernet_dinat_large.pth upernet_dinat_large_mm1.pth \\
        --config configs/upernet_dinat_large.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from nattk.backbones.weights import load_checkpoint_file, write_checkpoint
from nattk.backbones.weights import openmmlab_legacy as legacy

CONVERTED_BY = "nat-toolkit tools/convert_legacy_checkpoint.py"


def load_mmdet2(path: str, trust: bool = False) -> dict:
    """Reads the checkpoint (weights-only unless ``trust``) and checks its layout."""
    return legacy.check(load_checkpoint_file(path, trust=trust), path)


def convert(checkpoint: dict) -> dict:
    """Returns the MMEngine-layout checkpoint ``{'state_dict', 'meta'}``."""
    return legacy.to_mmengine(checkpoint, CONVERTED_BY)


def check_against_config(state: dict, config: str, allow_missing: bool = False) -> str:
    """Compares ``state`` with the model of ``config``; raises on any mismatch."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from nattk.openmmlab.cli import framework_of

    cfg = Config.fromfile(config)
    init_default_scope(framework_of(cfg))  # MODELS.build then resolves in that scope
    target = MODELS.build(cfg.model).state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing and not allow_missing:
        problems.append(f"{len(missing)} model tensors missing, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors the model does not have, e.g. {unexpected[:5]}")
    if shapes:
        problems.append("shape mismatches:\n  " + "\n  ".join(shapes[:10]))
    if problems:
        raise ValueError(f"checkpoint does not fit {config}: " + "; ".join(problems))
    return f"all {len(target) - len(missing)}/{len(target)} model tensors present, shapes match"


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="mmdet 2.x / mmseg 0.x checkpoint (.pth)")
    parser.add_argument("dst", help="output checkpoint")
    parser.add_argument("--config", help="check the result against this config's model")
    parser.add_argument(
        "--allow-missing", action="store_true", help="with --config: tolerate absent tensors"
    )
    parser.add_argument(
        "--trust", action="store_true", help="load with weights_only=False (trusted files only)"
    )
    args = parser.parse_args(argv)

    converted = convert(load_mmdet2(args.src, trust=args.trust))
    if args.config:
        from nattk.openmmlab.cli import ignore_pkg_resources_warning

        ignore_pkg_resources_warning()
        print(check_against_config(converted["state_dict"], args.config, args.allow_missing))
    dst = Path(args.dst)
    # An existing dst stays as it was if this fails; meta may hold NumPy scalars.
    write_checkpoint(converted, dst, "torch", weights_only=False)
    print(f"wrote {len(converted['state_dict'])} tensors to {dst}", file=sys.stderr)
