"""One quickstart task in this process: data, evaluations, training, pictures.

:func:`run_logged` sends everything the frameworks print to ``<work dir>/<task>/
quickstart.log`` and shows the phases on the console as progress bars;
:func:`run_task` does the work and returns what ``metrics.json`` holds.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, TextIO

import torch

from nattk.backbones.weights.files import atomic_output
from nattk.quickstart import make_toy_dataset
from nattk.quickstart.capture import output_to_log, tail
from nattk.quickstart.config import TASKS, evaluation_points, prepare_config, torch_threads
from nattk.quickstart.display import TrainingDisplay, phase_line, seconds_text
from nattk.quickstart.progress import LABEL, ProgressBar

LOG_NAME = "quickstart.log"
PREDICTIONS = 6  # validation images drawn


def run_logged(task: str, work_dir: Path, *options, console: TextIO) -> dict:
    """:func:`run_task` with the process's output in the task's log file.

    ``options`` are :func:`run_task`'s ``iters, data_root, num_train, num_val``.

    On failure the traceback goes to the log and the log's last lines to ``console``;
    then the exception is raised again.
    """
    spec = TASKS[task]
    log = work_dir / task / LOG_NAME
    console.write(f"{task}: {spec['name']} ({spec['config']})\n")
    phase_line(console, "log", str(log))
    with output_to_log(log) as shown:
        try:
            return run_task(task, work_dir, *options, shown)
        except Exception:
            traceback.print_exc()
            sys.stderr.flush()
            shown.write(f"\n{task} failed; the end of {log}:\n{tail(log)}\n")
            raise


def ensure_data(spec: dict, data: Path, num_train, num_val, console: TextIO) -> None:
    """Generates the task's toy dataset unless a complete one is at ``data``."""
    if (data / ".complete").exists():
        phase_line(console, "data", f"{data} (generated earlier)")
        return
    defaults = make_toy_dataset.DEFAULTS
    num_train = num_train or defaults["num_train"]
    num_val = num_val or defaults["num_val"]
    bar = ProgressBar("data", num_train + num_val, "images", console)
    written = 0

    def progress() -> None:
        nonlocal written
        written += 1
        bar.update(written)

    make_toy_dataset.make(
        spec["kind"],
        data,
        num_train,
        num_val,
        defaults["size"],
        defaults["max_shapes"],
        seed=0,
        progress=progress,
    )
    (data / ".complete").write_text("")
    bar.finish(f"{num_train} train + {num_val} val -> {data}")


def run_task(
    task: str,
    work_dir: Path,
    iters: Optional[int],
    data_root: Path,
    num_train: Optional[int],
    num_val: Optional[int],
    console: TextIO,
) -> dict:
    """Data, untrained evaluation, training with evaluations, and pictures of one task.

    Returns:
        The contents of ``<work_dir>/<task>/metrics.json``.
    """
    from nattk.backbones.attention import cpu_extension
    from nattk.openmmlab.cli import build_runner
    from nattk.openmmlab.compat import checkpoint_allowlist
    from nattk.openmmlab.progress_hook import ProgressHook

    start = time.perf_counter()
    torch.set_num_threads(torch_threads())
    spec = TASKS[task]
    out = work_dir / task
    data = data_root / spec["data"]
    ensure_data(spec, data, num_train, num_val, console)
    cfg = prepare_config(task, data, out, iters)
    display = TrainingDisplay(
        console, spec["metric"], spec["label"], spec["scale"], evaluation_points(cfg)
    )

    setup = time.perf_counter()
    console.write(
        f"  {'setup':<{LABEL}} runner, model, CPU attention kernels (built on first use), "
        f"{torch.get_num_threads()} threads: "
    )
    console.flush()
    with checkpoint_allowlist():
        runner = build_runner(cfg)
        runner.register_hook(ProgressHook(display))
        cpu_extension.load()
        console.write(f"ready in {seconds_text(time.perf_counter() - setup)}\n")
        runner.val()
        runner.train()

    pictures = draw_pictures(cfg, spec, data, out, display.evaluations, runner.log_dir, console)
    first, last = display.evaluations[0], display.evaluations[-1]
    result = dict(
        task=task,
        config=spec["config"],
        iterations=cfg.train_cfg.max_iters,
        seconds=round(time.perf_counter() - start, 1),  # data, training, evaluations, pictures
        metric=spec["metric"],
        label=spec["label"],
        untrained=first["metrics"] | {"score": first["score"]},
        trained=last["metrics"] | {"score": last["score"]},
        evaluations=[dict(iter=e["iter"], score=e["score"]) for e in display.evaluations],
        target=spec["target"],
        checkpoint=str(out / f"iter_{cfg.train_cfg.max_iters}.pth"),
        torch_threads=torch.get_num_threads(),
        log=str(out / LOG_NAME),
        pictures=[str(p) for p in pictures],
    )
    with atomic_output(out / "metrics.json") as staging:
        staging.write_text(json.dumps(result, indent=2))
    return result


def draw_pictures(cfg, spec, data, out, evaluations, log_dir, console) -> list[Path]:
    """Writes ``curves.png``, ``predictions/*.png`` and ``neighborhoods.png``.

    Returns:
        The paths written.
    """
    from nattk.inference import load_model, predict_overlay, read_rgb
    from nattk.visualize import plot_curves, plot_neighborhoods, read_scalars, save_png

    images = sorted((data / spec["val_images"]).glob("*.jpg"))[:PREDICTIONS]
    bar = ProgressBar("pictures", len(images) + 2, "files", console)
    metric = spec["metric"]
    records = [r for r in read_scalars(Path(log_dir) / "vis_data" / "scalars.json") if "loss" in r]
    records += [{metric: e["score"], "step": e["iter"]} for e in evaluations]
    title = f"{out.name}: {Path(spec['config']).stem}"
    written = [plot_curves(records, metric, out / "curves.png", title=title)]
    bar.update(1)
    model = load_model(cfg, out / f"iter_{cfg.train_cfg.max_iters}.pth")
    for image in images:
        written.append(
            save_png(out / "predictions" / f"{image.stem}.png", predict_overlay(model, image))
        )
        bar.update(len(written))
    preprocessor = cfg.model.data_preprocessor
    written.append(
        plot_neighborhoods(
            model.backbone,
            read_rgb(images[0]),
            preprocessor.mean,
            preprocessor.std,
            out / "neighborhoods.png",
        )
    )
    bar.finish(str(out))
    return written
