"""The main job on its embedded default: train, evaluate and look at NAT/DiNAT models.

No dataset, no GPU and no download needed. For each task (``det``: Mask R-CNN,
``seg``: UperNet, both with the reduced ``DiNAT-toy`` backbone of ``configs/quickstart/``):

1. generate the seeded toy dataset under ``data/`` (skipped when present);
2. evaluate the untrained model, train it from scratch with the real MMDetection /
   MMSegmentation runner, evaluating it four times on the way (after 25, 50, 75 and
   100 % of the iterations);
3. write ``work_dirs/quickstart/<task>/``: ``metrics.json``, ``curves.png`` (loss and
   metric), ``predictions/*.png`` (overlays on validation images),
   ``neighborhoods.png`` (the neighborhoods one query attends to with and without
   dilation, computed by the trained model) and ``quickstart.log`` (everything the
   frameworks printed).

The console shows each phase with a progress bar and ETA, then the results.

Examples::

    python tools/quickstart.py                      # both tasks
    python tools/quickstart.py --task det --iters 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from nattk.quickstart.config import REPO, TASKS


def parse_args(argv=None) -> argparse.Namespace:
    """The command line of ``tools/quickstart.py``."""
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
    # Internal: a task run by the multi-task parent, which prints the results itself.
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Runs the tasks and prints their results; the exit status is 0 on success."""
    args = parse_args(argv)
    if len(args.task) > 1:  # one process per task: each framework owns its registries
        for i, task in enumerate(args.task):
            if i:
                print(flush=True)
            command = [sys.executable, "-m", "nattk.quickstart", "--task", task]
            code = subprocess.run(command + _passthrough(args) + ["--no-summary"]).returncode
            if code != 0:
                print(f"quickstart: task {task} failed (exit status {code})", file=sys.stderr)
                return code
        results = [json.loads((args.work_dir / t / "metrics.json").read_text()) for t in args.task]
    else:
        from nattk.quickstart.task import run_logged

        try:
            result = run_logged(
                args.task[0],
                args.work_dir,
                args.iters,
                args.data_root,
                args.num_train,
                args.num_val,
                console=sys.stdout,
            )
        except Exception:  # run_logged has shown the end of the log, traceback included
            return 1
        results = [result]
    if not args.no_summary:
        print(summary(results))
    return 0


def summary(results: list[dict]) -> str:
    """The results table, the metric during training and where the pictures are."""
    rows = [("task", "model", "metric", "untrained", "trained", "target", "iterations", "time")]
    for r in results:
        rows.append(
            (
                r["task"],
                TASKS[r["task"]]["name"],
                r["label"],
                f"{r['untrained']['score']:.3f}",
                f"{r['trained']['score']:.3f}",
                f">= {r['target']}",
                str(r["iterations"]),
                f"{r['seconds'] / 60:.1f} min",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["", "quickstart results (toy validation split, 2 classes + background):"]
    for row in rows:
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells))
    lines.append("metric after iteration (the curve in curves.png):")
    for r in results:
        points = ", ".join(f"{e['iter']}: {e['score']:.3f}" for e in r["evaluations"])
        lines.append(f"  {r['task']}  {r['label']}  {points}")
    lines.append("pictures and logs:")
    for r in results:
        folder = Path(r["pictures"][0]).parent
        overlays = sum(1 for p in r["pictures"] if Path(p).parent.name == "predictions")
        lines.append(f"  {r['task']}  {r['log']} (full log)")
        lines.append(f"       {folder / 'curves.png'}")
        lines.append(f"       {folder / 'neighborhoods.png'}")
        lines.append(f"       {folder / 'predictions'}/ ({overlays} overlays)")
    return "\n".join(lines)


def _passthrough(args: argparse.Namespace) -> list[str]:
    options = ["--work-dir", str(args.work_dir), "--data-root", str(args.data_root)]
    for flag in ("iters", "num_train", "num_val"):
        if getattr(args, flag) is not None:
            options += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return options


if __name__ == "__main__":
    sys.exit(main())
