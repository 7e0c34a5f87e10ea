"""What a person sees: progress bars, the captured log, quieted framework noise."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings

import pytest
import torch
from mm_helpers import REPO

from nattk.quickstart.capture import tail
from nattk.quickstart.cli import summary
from nattk.quickstart.config import evaluation_points, schedule_evaluations, set_iterations
from nattk.quickstart.display import TrainingDisplay
from nattk.quickstart.progress import ProgressBar, format_duration


class FakeClock:
    """A clock that advances only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(61.4) == "1:01"
    assert format_duration(3725) == "1:02:05"


def test_plain_progress_bar_writes_a_few_lines_with_eta():
    stream, clock = io.StringIO(), FakeClock()
    bar = ProgressBar("train", 10, "iters", stream, plain_lines=1, clock=clock)
    for done in range(1, 10):
        clock.now = 2.0 * done
        bar.update(done, note="loss 0.5")
    bar.finish("done")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # one at half way, and the last one
    assert "5/10 iters" in lines[0] and "0:10, ETA 0:10" in lines[0] and "loss 0.5" in lines[0]
    assert "10/10 iters" in lines[1] and "ETA" not in lines[1] and lines[1].endswith("done")
    assert "\r" not in stream.getvalue()


CAPTURE_SCRIPT = """
import os, sys, warnings
from nattk.quickstart.capture import output_to_log
with output_to_log(sys.argv[1]) as console:
    print("from print")
    os.write(1, b"from fd 1\\n")
    os.write(2, b"from fd 2\\n")
    warnings.warn("from warnings")
    console.write("for the person\\n")
print("restored")
"""


def test_output_to_log_captures_descriptors_and_keeps_the_console(tmp_path):
    log = tmp_path / "sub" / "run.log"
    proc = subprocess.run(
        [sys.executable, "-c", CAPTURE_SCRIPT, str(log)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    for line in ("from print", "from fd 1", "from fd 2", "from warnings"):
        assert line in text and line not in proc.stdout + proc.stderr
    assert proc.stdout == "for the person\nrestored\n" and proc.stderr == ""
    assert tail(log, 1) == text.splitlines()[-1]


def test_paramwise_options_are_logged_once_at_debug_level(tmp_path):
    from mmengine.logging import MMLogger
    from mmengine.optim import DefaultOptimWrapperConstructor

    from nattk.openmmlab.quiet import demote_noisy_records

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05))
    paramwise = dict(custom_keys={"1": dict(decay_mult=0.0)})
    for level in ("INFO", "DEBUG"):
        log = tmp_path / f"{level}.log"
        logger = MMLogger.get_instance(f"quiet-{level}", log_file=str(log), log_level=level)
        demote_noisy_records(logger)
        demote_noisy_records(logger)  # idempotent
        DefaultOptimWrapperConstructor(cfg, paramwise)(model)
        for handler in logger.handlers:
            handler.flush()
        lines = [line for line in log.read_text().splitlines() if "paramwise_options" in line]
        if level == "INFO":
            assert lines == []
        else:  # 2 parameters x 3 options, each once and at DEBUG level
            assert len(lines) == 6 and all(" DEBUG - " in line for line in lines), lines
            assert len(set(lines)) == len(lines)
        logger.handlers.clear()


def test_only_the_known_harmless_warnings_are_ignored():
    from nattk.openmmlab.quiet import ignore_harmless_warnings

    message = "``build_loss`` would be deprecated soon, please use ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_harmless_warnings()
        warnings.warn_explicit(message, UserWarning, "builder.py", 36, "mmseg.models.builder")
        warnings.warn_explicit(message, UserWarning, "mine.py", 1, "somebody.else")
        warnings.warn_explicit("something new", UserWarning, "builder.py", 9, "mmseg.models")
    assert [(str(w.message)[:10], w.filename) for w in caught] == [
        (message[:10], "mine.py"),
        ("something ", "builder.py"),
    ]


@pytest.mark.slow
def test_importing_the_cli_module_leaves_the_warning_filters_alone():
    """The pkg_resources filter is installed when a CLI runs, not as an import side effect."""
    code = (
        "import warnings\n"
        "import mmengine.config, nattk.openmmlab\n"  # what cli imports installs its own
        "before = list(warnings.filters)\n"
        "from nattk.openmmlab import cli\n"
        "assert warnings.filters == before, warnings.filters[:3]\n"
        "cli.ignore_pkg_resources_warning()\n"
        "assert warnings.filters[0][1].pattern == 'pkg_resources is deprecated'\n"
    )
    subprocess.run([sys.executable, "-W", "default", "-c", code], check=True, timeout=120)


def test_build_runner_demotes_noisy_records(tmp_path):
    from mmengine.config import Config

    from nattk.openmmlab.cli import build_runner
    from nattk.openmmlab.quiet import DemoteToDebug

    cfg = Config.fromfile(str(REPO / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py"))
    cfg.work_dir = str(tmp_path)
    runner = build_runner(cfg)
    assert any(isinstance(f, DemoteToDebug) for f in runner.logger.filters)
    record = logging.LogRecord(
        "mmengine", logging.INFO, "", 0, "paramwise_options -- a:lr=1", (), None
    )
    runner.logger.filters[-1].filter(record)
    assert record.levelno == logging.DEBUG
    error = logging.LogRecord("mmengine", logging.ERROR, "", 0, "paramwise_options -- x", (), None)
    runner.logger.filters[-1].filter(error)
    assert error.levelno == logging.ERROR  # errors are never lowered


@pytest.mark.parametrize("iters, points", [(80, [20, 40, 60, 80]), (90, [23, 46, 69, 90])])
def test_quickstart_evaluates_four_times_during_training(iters, points):
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / "configs/quickstart/mask-rcnn_dinat-toy_fpn_toy-coco.py"))
    set_iterations(cfg, iters)
    schedule_evaluations(cfg)
    assert evaluation_points(cfg) == points
    assert cfg.randomness.seed == 0 and cfg.randomness.deterministic


def test_training_display_records_evaluations_and_counts_them_in_the_eta(monkeypatch):
    stream = io.StringIO()
    display = TrainingDisplay(stream, "mIoU", "mIoU", 0.01, [5, 10])
    display.val_begin(2, 0)
    display.val_iter(1, 2)
    display.val_end({"mIoU": 20.0}, 0)
    display._eval_seconds = 30.0  # as if each evaluation took 30 s
    display.train_iter(1, 10, 1.5)
    eta = display._train_eta(1, 10)
    assert eta >= 2 * 30.0  # both evaluations are still to come
    for done in range(2, 11):
        display.train_iter(done, 10, 1.0)
        if done in (5, 10):
            display.val_begin(2, done)
            display.val_end({"mIoU": 10.0 * done}, done)
    assert [(e["iter"], round(e["score"], 2)) for e in display.evaluations] == [
        (0, 0.2),
        (5, 0.5),
        (10, 1.0),
    ]
    text = stream.getvalue()
    assert "untrained" in text and "eval 5" in text and "eval 10" in text and "mIoU 1.000" in text


def test_summary_ends_with_the_table_and_the_picture_paths(tmp_path):
    out = tmp_path / "seg"
    result = dict(
        task="seg",
        label="mIoU",
        untrained=dict(score=0.2),
        trained=dict(score=0.7),
        target=0.6,
        iterations=80,
        seconds=90.0,
        evaluations=[dict(iter=0, score=0.2), dict(iter=80, score=0.7)],
        log=str(out / "quickstart.log"),
        pictures=[str(out / "curves.png"), str(out / "predictions" / "a.png")],
    )
    lines = summary([result]).splitlines()
    header = next(i for i, line in enumerate(lines) if "untrained" in line)
    assert "0.200" in lines[header + 1] and "0.700" in lines[header + 1]
    assert lines[-1].strip() == f"{out / 'predictions'}/ (1 overlays)"
    assert any(str(out / "curves.png") in line for line in lines[header:])


FAILING_TASK_SCRIPT = """
import sys
import nattk.quickstart.task as task

def run_task(*args):
    print("framework chatter")
    raise RuntimeError("boom")

task.run_task = run_task
from nattk.quickstart import main
sys.exit(main(["--task", "seg", "--work-dir", sys.argv[1]]))
"""


def test_a_failing_task_shows_the_end_of_its_log(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_TASK_SCRIPT, str(tmp_path)], capture_output=True, text=True
    )
    log = tmp_path / "seg" / "quickstart.log"
    assert proc.returncode == 1, proc.stderr
    assert f"seg failed; the end of {log}" in proc.stdout
    assert "RuntimeError: boom" in proc.stdout and "framework chatter" in proc.stdout
    assert "quickstart results" not in proc.stdout
    assert "RuntimeError: boom" in log.read_text()
