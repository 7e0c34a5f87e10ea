"""Running the Detectron2 launchers in ``tools/`` as a user does, and reading what they log."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_tool(name: str, argv: list, monkeypatch) -> None:
    """Runs ``python tools/<name> ARGV`` in this process and checks it exits with 0.

    The script file itself runs, as ``__main__``, with ``sys.argv`` as the shell would
    set it; in-process, so that the toy datasets a test registered are in Detectron2's
    catalog (one process, ``--num-gpus 1``: Detectron2's ``launch`` calls ``main`` here).
    """
    script = REPO / "tools" / name
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as end:  # the tool's sys.exit(status)
        assert end.code in (None, 0), f"{name} exited with {end.code}"


def logged_results(output_dir: Path) -> dict:
    """The ``copypaste:`` tables Detectron2 writes to ``<OUTPUT_DIR>/log.txt`` after an
    evaluation: ``{task: {metric: value}}``, the last table of each task."""
    lines = [
        line.split("copypaste: ", 1)[1].strip()
        for line in (output_dir / "log.txt").read_text().splitlines()
        if "copypaste: " in line
    ]
    results = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: ") and i + 2 < len(lines):
            names, values = lines[i + 1].split(","), lines[i + 2].split(",")
            results[line[len("Task: ") :]] = dict(zip(names, map(float, values)))
    return results
