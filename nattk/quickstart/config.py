"""The quickstart's two tasks and how their configs are prepared for a run.

Each task names a config of ``configs/quickstart/``, the toy dataset it trains on and
the metric the quickstart reports. :func:`prepare_config` loads the config and points
it at the data and the work directory, optionally changes the schedule length, and
spreads :data:`EVALUATIONS` evaluations over training so that the metric curve has
real points between "untrained" and "trained".
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]

#: Evaluations during training (evenly spaced, the last one after the last iteration);
#: the quickstart adds one of the untrained model.
EVALUATIONS = 4
#: Intra-op CPU threads of a run. CPU results depend on the thread count, so the
#: quickstart does not take torch's default (one per core) but this many threads, or
#: fewer on a machine with fewer cores.
THREADS = 2

TASKS = {
    "det": dict(
        name="Mask R-CNN + DiNAT-toy",
        config="configs/quickstart/mask-rcnn_dinat-toy_fpn_toy-coco.py",
        kind="coco",
        data="toy_coco",
        val_images="val2017",
        metric="coco/bbox_mAP_50",
        label="bbox AP50",
        scale=1.0,
        target=0.5,
    ),
    "seg": dict(
        name="UperNet + DiNAT-toy",
        config="configs/quickstart/upernet_dinat-toy_toy-ade20k.py",
        kind="ade20k",
        data="toy_ade20k",
        val_images="images/validation",
        metric="mIoU",
        label="mIoU",
        scale=0.01,  # mmseg reports percent
        target=0.6,
    ),
}


def set_iterations(cfg: Config, iters: int) -> None:
    """Shortens or lengthens the schedule (and its LR schedulers) of a quickstart config.

    Evaluations and checkpoints are placed by :func:`prepare_config` afterwards.
    """
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = iters
    warmup = min(cfg.param_scheduler[0].end, max(1, iters // 5))
    cfg.param_scheduler[0].end = warmup
    for scheduler in cfg.param_scheduler[1:]:
        scheduler.begin = warmup
        scheduler.end = iters if scheduler.end == old else min(scheduler.end, iters)


def schedule_evaluations(cfg: Config, count: int = EVALUATIONS) -> None:
    """Makes the train loop evaluate ``count`` times, evenly spaced, the last at the end."""
    total = cfg.train_cfg.max_iters
    cfg.train_cfg.val_interval = max(1, math.ceil(total / max(1, count)))
    cfg.train_cfg.val_begin = 1


def evaluation_points(cfg: Config) -> list[int]:
    """The iterations after which the train loop of ``cfg`` evaluates.

    MMEngine's ``IterBasedTrainLoop`` evaluates every ``val_interval`` iterations from
    ``val_begin`` on, and after the last iteration.
    """
    total, interval = cfg.train_cfg.max_iters, cfg.train_cfg.val_interval
    begin = cfg.train_cfg.get("val_begin", 1)
    points = [i for i in range(interval, total, interval) if i >= begin]
    return points + [total]


def prepare_config(task: str, data: Path, work_dir: Path, iters: Optional[int] = None) -> Config:
    """The config of ``task``, ready to train on ``data`` and write to ``work_dir``.

    Args:
        task: A key of :data:`TASKS`.
        data: The toy dataset's folder.
        work_dir: Where checkpoints, logs and pictures go.
        iters: Schedule length; the config's own when ``None``.

    Returns:
        The config. The checkpoint is written once, after the last iteration.
    """
    spec = TASKS[task]
    cfg = Config.fromfile(str(REPO / spec["config"]))
    cfg.work_dir = str(work_dir)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(data) + "/"
    if task == "det":
        cfg.val_evaluator.ann_file = str(data / "annotations/instances_val2017.json")
        cfg.test_evaluator = cfg.val_evaluator
    if iters:
        set_iterations(cfg, iters)
    schedule_evaluations(cfg)
    cfg.default_hooks.checkpoint.interval = cfg.train_cfg.max_iters
    return cfg


def torch_threads() -> int:
    """The thread count of a run: ``$OMP_NUM_THREADS`` when set, else :data:`THREADS`.

    The default is never more than the cores this process may use: more threads than
    cores make OpenMP's barriers wait for descheduled threads, which slows training
    many times. An explicit ``$OMP_NUM_THREADS`` is taken as it is.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(THREADS, cores or 1))
