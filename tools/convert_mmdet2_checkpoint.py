"""Convert a published MMDetection 2.x NAT / DiNAT detector checkpoint for this toolkit.

The official COCO checkpoints (``maskrcnn_dinat_tiny.pth``, ...) were written by
mmdet 2.19 / mmcv 1.x. Their parameter names already match this toolkit's models
(backbone keys are the official ones); what changes is the wrapping: the optimizer
state is dropped, half tensors are stored as float32, and mmcv's ``meta['CLASSES']``
becomes MMEngine's ``meta['dataset_meta']``. With ``--config`` the result is checked
against the model the config builds, and missing or misshapen tensors are an error.

Examples::

    python tools/convert_mmdet2_checkpoint.py maskrcnn_dinat_tiny.pth mask-rcnn_dinat-t.pth \\
        --config configs/mmdet/dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py
    python tools/test.py configs/mmdet/dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py \\
        mask-rcnn_dinat-t.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

_KEEP_META = ("mmdet_version", "mmcv_version", "epoch", "iter", "config")


def load_mmdet2(path: str, trust: bool = False) -> dict:
    """Reads the checkpoint (weights-only unless ``trust``) and checks its layout."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as error:  # torch raises UnpicklingError subclasses and RuntimeError
        if trust:
            raise
        raise ValueError(
            f"{path} holds objects weights-only loading refuses ({error}); if you trust the "
            "file (e.g. the official shi-labs.com download), rerun with --trust"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path} is not an mmdet 2.x checkpoint (no 'state_dict'; found {keys})")
    return checkpoint


def convert(checkpoint: dict) -> dict:
    """Returns the MMEngine-layout checkpoint ``{'state_dict', 'meta'}``."""
    state = {}
    for key, value in checkpoint["state_dict"].items():
        key = key[len("module.") :] if key.startswith("module.") else key
        state[key] = value.float() if value.is_floating_point() else value
    old_meta = checkpoint.get("meta") or {}
    meta = {k: old_meta[k] for k in _KEEP_META if k in old_meta}
    if "CLASSES" in old_meta:
        meta["dataset_meta"] = dict(classes=tuple(old_meta["CLASSES"]))
    meta["converted_by"] = "nat-toolkit tools/convert_mmdet2_checkpoint.py"
    return dict(state_dict=state, meta=meta)


def check_against_config(state: dict, config: str, allow_missing: bool = False) -> str:
    """Compares ``state`` with the model of ``config``; raises on any mismatch."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    from mmdet.registry import MODELS

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
    parser.add_argument("src", help="mmdet 2.x checkpoint (.pth)")
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
        print(check_against_config(converted["state_dict"], args.config, args.allow_missing))
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, dst)
    print(f"wrote {len(converted['state_dict'])} tensors to {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
