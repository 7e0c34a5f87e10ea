"""Train an MMDetection or MMSegmentation config (the framework is the config's scope).

Examples::

    python tools/train.py configs/mmdet/dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume            # latest in work dir
    python tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth --cfg-options train_cfg.max_epochs=12
    bash tools/dist_train.sh CONFIG 8 --auto-scale-lr                        # multi-GPU
"""

from __future__ import annotations

import argparse

from nattk.backbones.weights import check_checkpoint_file
from nattk.openmmlab.cli import (
    add_common_args,
    build_runner,
    end_distributed,
    ignore_pkg_resources_warning,
    load_config,
    parse,
)
from nattk.openmmlab.compat import checkpoint_allowlist


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a detector or segmentor")
    parser.add_argument("config", help="train config file path")
    parser.add_argument(
        "--amp", action="store_true", help="mixed precision (AmpOptimWrapper, dynamic loss scale)"
    )
    parser.add_argument(
        "--auto-scale-lr",
        action="store_true",
        help="scale the lr by (total batch size / auto_scale_lr.base_batch_size)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        type=str,
        const="auto",
        help="resume from this checkpoint, or (no value) from the latest one in the work dir",
    )
    add_common_args(parser)
    return parse(parser, argv)


def main(argv=None) -> None:
    """Trains ``argv``'s config (default: the command line)."""
    ignore_pkg_resources_warning()
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        if cfg.optim_wrapper.get("type") == "AmpOptimWrapper":
            print("--amp: the config already trains with AmpOptimWrapper; using dynamic loss scale")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.auto_scale_lr:
        scale = cfg.get("auto_scale_lr")
        if not scale or "enable" not in scale or "base_batch_size" not in scale:
            raise ValueError(
                "--auto-scale-lr needs auto_scale_lr=dict(enable=..., base_batch_size=...) "
                "in the config"
            )
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        check_checkpoint_file(args.resume)  # one line for a wrong file, not torch's pickle error
        cfg.resume, cfg.load_from = True, args.resume

    runner = build_runner(cfg)
    # MMEngine's resume reads numpy/HistoryBuffer objects that torch>=2.6's
    # weights-only loading rejects; allow exactly those for the run.
    with checkpoint_allowlist():
        runner.train()
    end_distributed()
