"""The main job on its embedded default: train, evaluate and look at NAT/DiNAT models.

No dataset, no GPU and no download needed. For each task (``det``: Mask R-CNN,
``seg``: UperNet, both with the reduced ``DiNAT-toy`` backbone of ``configs/quickstart/``):

1. generate the seeded toy dataset under ``data/`` (skipped when present);
2. evaluate the untrained model, train it from scratch with the real MMDetection /
   MMSegmentation runner (progress in the log), evaluate it again;
3. write ``work_dirs/quickstart/<task>/``: ``metrics.json``, ``curves.png`` (loss and
   metric), ``predictions/*.png`` (overlays on validation images) and
   ``neighborhoods.png`` (the neighborhoods one query attends to with and without
   dilation, computed by the trained model).

Examples::

    python tools/quickstart.py                      # both tasks (~13 min on 2 CPU cores)
    python tools/quickstart.py --task det --iters 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from nattk import make_toy_dataset  # noqa: E402

TASKS = {
    "det": dict(
        config="configs/quickstart/mask-rcnn_dinat-toy_fpn_toy-coco.py",
        kind="coco",
        data="data/toy_coco",
        val_images="val2017",
        metric="coco/bbox_mAP_50",
        scale=1.0,
        target=0.5,
    ),
    "seg": dict(
        config="configs/quickstart/upernet_dinat-toy_toy-ade20k.py",
        kind="ade20k",
        data="data/toy_ade20k",
        val_images="images/validation",
        metric="mIoU",
        scale=0.01,  # mmseg reports percent
        target=0.6,
    ),
}


def set_iterations(cfg, iters: int) -> None:
    """Shortens or lengthens the schedule of a quickstart config to ``iters``."""
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    warmup = min(cfg.param_scheduler[0].end, max(1, iters // 5))
    cfg.param_scheduler[0].end = warmup
    for scheduler in cfg.param_scheduler[1:]:
        scheduler.begin = warmup
        scheduler.end = iters if scheduler.end == old else min(scheduler.end, iters)


def _evaluate(runner, spec) -> dict:
    metrics = runner.val()
    return {key: float(value) for key, value in metrics.items()} | {
        "score": float(metrics[spec["metric"]]) * spec["scale"]
    }


def run_task(task: str, work_dir: Path, iters, data_root: Path, num_train, num_val) -> dict:
    """Data, untrained evaluation, training, evaluation and pictures of one task."""
    from mmengine.config import Config

    from nattk.inference import load_model, predict_overlay, read_rgb
    from nattk.openmmlab.cli import build_runner
    from nattk.openmmlab.compat import checkpoint_allowlist
    from nattk.visualize import plot_curves, plot_neighborhoods, read_scalars, save_png

    start = time.perf_counter()
    spec = TASKS[task]
    data = data_root / Path(spec["data"]).name
    if not (data / ".complete").exists():
        make_toy_dataset.make(
            spec["kind"],
            data,
            num_train or make_toy_dataset.DEFAULTS["num_train"],
            num_val or make_toy_dataset.DEFAULTS["num_val"],
            make_toy_dataset.DEFAULTS["size"],
            make_toy_dataset.DEFAULTS["max_shapes"],
            seed=0,
        )
        (data / ".complete").write_text("")
    cfg = Config.fromfile(str(REPO / spec["config"]))
    out = work_dir / task
    cfg.work_dir = str(out)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(data) + "/"
    if task == "det":
        cfg.val_evaluator.ann_file = str(data / "annotations/instances_val2017.json")
        cfg.test_evaluator = cfg.val_evaluator
    if iters:
        set_iterations(cfg, iters)
    # Validate once after training, explicitly, so the numbers are returned to us.
    cfg.train_cfg.val_begin = cfg.train_cfg.max_iters + 1

    with checkpoint_allowlist():
        runner = build_runner(cfg)
        untrained = _evaluate(runner, spec)
        runner.train()
        trained = _evaluate(runner, spec)

    metric = spec["metric"]
    scalars = read_scalars(Path(runner.log_dir) / "vis_data" / "scalars.json")
    records = [r for r in scalars if "loss" in r]  # the metric points are added below
    records += [{metric: untrained[metric] * spec["scale"], "step": 0}]
    records += [{metric: trained[metric] * spec["scale"], "step": cfg.train_cfg.max_iters}]
    plot_curves(records, metric, out / "curves.png", title=f"{task}: {Path(spec['config']).stem}")

    checkpoint = out / f"iter_{cfg.train_cfg.max_iters}.pth"
    model = load_model(cfg, checkpoint)
    images = sorted((data / spec["val_images"]).glob("*.jpg"))[:6]
    for image in images:
        save_png(out / "predictions" / f"{image.stem}.png", predict_overlay(model, image))
    preprocessor = cfg.model.data_preprocessor
    plot_neighborhoods(
        model.backbone,
        read_rgb(images[0]),
        preprocessor.mean,
        preprocessor.std,
        out / "neighborhoods.png",
    )
    result = dict(
        task=task,
        config=spec["config"],
        iterations=cfg.train_cfg.max_iters,
        seconds=round(time.perf_counter() - start, 1),  # data, training, evaluation, pictures
        metric=metric,
        untrained=untrained,
        trained=trained,
        target=spec["target"],
        checkpoint=str(checkpoint),
    )
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), nargs="+", default=["det", "seg"])
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "quickstart")
    parser.add_argument("--data-root", type=Path, default=REPO / "data")
    parser.add_argument("--iters", type=int, default=None, help="override the schedule length")
    parser.add_argument(
        "--num-train", type=int, default=None, help="toy training images (when generating)"
    )
    parser.add_argument(
        "--num-val", type=int, default=None, help="toy validation images (when generating)"
    )
    args = parser.parse_args(argv)

    if len(args.task) > 1:  # one process per task: each framework owns its registries
        results = []
        for task in args.task:
            command = [sys.executable, __file__, "--task", task] + _passthrough(args)
            subprocess.run(command, check=True)
            results.append(json.loads((args.work_dir / task / "metrics.json").read_text()))
    else:
        results = [
            run_task(
                args.task[0],
                args.work_dir,
                args.iters,
                args.data_root,
                args.num_train,
                args.num_val,
            )
        ]
    print("\nquickstart results (toy validation split, 2 classes + background):")
    for r in results:
        print(
            f"  {r['task']}: {r['metric']} {r['trained']['score']:.3f} after {r['iterations']} "
            f"iterations (untrained {r['untrained']['score']:.3f}, target {r['target']}), "
            f"{r['seconds'] / 60:.1f} min -> {args.work_dir / r['task']}"
        )
    return 0


def _passthrough(args) -> list[str]:
    options = ["--work-dir", str(args.work_dir), "--data-root", str(args.data_root)]
    for flag in ("iters", "num_train", "num_val"):
        if getattr(args, flag) is not None:
            options += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return options


if __name__ == "__main__":
    sys.exit(main())
