"""Evaluate a checkpoint on an MMDetection or MMSegmentation config.

Examples::

    python tools/test.py CONFIG CHECKPOINT                      # metrics of test_evaluator
    python tools/test.py CONFIG CHECKPOINT --out results.pkl    # mmdet: dump predictions
    python tools/test.py CONFIG CHECKPOINT --out pred_dir       # mmseg: write prediction pngs
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --tta
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""

from __future__ import annotations

import argparse
import copy
import warnings

from mmengine.config import Config, ConfigDict

from nattk.openmmlab.cli import (
    add_common_args,
    build_runner,
    end_distributed,
    framework_of,
    ignore_pkg_resources_warning,
    load_config,
    parse,
)
from nattk.openmmlab.compat import checkpoint_allowlist
from nattk.openmmlab.strict_load import check_checkpoint_fits


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test (and evaluate) a detector or segmentor")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument(
        "--allow-partial", action="store_true", help="load a checkpoint that does not fit"
    )
    parser.add_argument(
        "--out",
        help="mmdet: .pkl file for the raw predictions; mmseg: directory for prediction pngs",
    )
    parser.add_argument("--show", action="store_true", help="show predictions in a window")
    parser.add_argument("--show-dir", help="save drawn predictions under this directory")
    parser.add_argument("--wait-time", type=float, default=2, help="seconds between shown images")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation")
    add_common_args(parser)
    return parse(parser, argv)


def enable_visualization(cfg: Config, args: argparse.Namespace, framework: str) -> None:
    """Turns on the ``visualization`` hook (``--show`` / ``--show-dir``)."""
    hook = cfg.default_hooks.get("visualization")
    if hook is None:
        raise ValueError("--show/--show-dir need default_hooks.visualization in the config")
    hook["draw"] = True
    if args.show:
        hook["show"], hook["wait_time"] = True, args.wait_time
    if args.show_dir:
        if framework == "mmdet":
            hook["test_out_dir"] = args.show_dir
        else:
            cfg.visualizer["save_dir"] = args.show_dir


def enable_tta(cfg: Config, framework: str) -> None:
    """Wraps the model in ``tta_model`` and swaps the test pipeline for ``tta_pipeline``.

    MMDetection configs without TTA settings get MMDetection's default (horizontal
    flip, merged by NMS 0.5) when they predict boxes only; MMSegmentation configs
    must define both keys.

    Raises:
        ValueError: A TTA key is missing, or the default would have to merge masks.
    """
    if framework == "mmdet":
        if "tta_model" not in cfg and _predicts_masks(cfg.model):
            raise ValueError(
                "--tta: MMDetection's DetTTAModel merges boxes only and cannot merge the "
                "instance masks this config predicts; define tta_model and tta_pipeline in "
                "the config to use a TTA wrapper of your own"
            )
        if "tta_model" not in cfg:
            warnings.warn("no tta_model in the config: using flip TTA with NMS 0.5", stacklevel=2)
            cfg.tta_model = dict(
                type="DetTTAModel",
                tta_cfg=dict(nms=dict(type="nms", iou_threshold=0.5), max_per_img=100),
            )
        if "tta_pipeline" not in cfg:
            warnings.warn("no tta_pipeline in the config: flipping the test pipeline", stacklevel=2)
            dataset = cfg.test_dataloader.dataset
            while "dataset" in dataset:
                dataset = dataset["dataset"]
            pipeline = copy.deepcopy(dataset.pipeline)
            pipeline[-1] = dict(
                type="TestTimeAug",
                transforms=[
                    [dict(type="RandomFlip", prob=1.0), dict(type="RandomFlip", prob=0.0)],
                    [
                        dict(
                            type="PackDetInputs",
                            meta_keys=(
                                "img_id",
                                "img_path",
                                "ori_shape",
                                "img_shape",
                                "scale_factor",
                                "flip",
                                "flip_direction",
                            ),
                        )
                    ],
                ],
            )
            cfg.tta_pipeline = pipeline
    missing = [key for key in ("tta_model", "tta_pipeline") if key not in cfg]
    if missing:
        raise ValueError(f"--tta needs {missing} in the config")
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def _predicts_masks(model: dict) -> bool:
    roi_head = model.get("roi_head") or {}
    return "mask_head" in roi_head or "panoptic_head" in model


def main(argv=None) -> None:
    """Tests ``argv``'s checkpoint on its config (default: the command line)."""
    ignore_pkg_resources_warning()
    args = parse_args(argv)
    cfg = load_config(args)
    framework = framework_of(cfg)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args, framework)
    if args.tta:
        enable_tta(cfg, framework)
    if args.out is not None and framework == "mmseg":
        cfg.test_evaluator["output_dir"] = args.out
        cfg.test_evaluator["keep_results"] = True

    runner = build_runner(cfg)
    # MMEngine would load what fits and log the rest: refuse a checkpoint that does not fit.
    check_checkpoint_fits(runner.model, args.checkpoint, args.allow_partial)
    if args.out is not None and framework == "mmdet":
        from mmdet.evaluation import DumpDetResults

        if not args.out.endswith((".pkl", ".pickle")):
            raise ValueError(f"--out must be a .pkl file for detection configs, got {args.out}")
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    with checkpoint_allowlist():
        runner.test()
    end_distributed()
