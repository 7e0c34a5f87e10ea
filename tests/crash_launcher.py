"""Runs ``tools/train.py`` and kills the process half-way through saving one checkpoint.

Usage::

    python tests/crash_launcher.py CHECKPOINT_NAME [tools/train.py arguments...]

``CrashSafeRunner.save_checkpoint`` writes ``<name>.part`` through MMEngine's
``Runner.save_checkpoint``, then flushes and renames it. The wrapper below lets that
write finish for ``CHECKPOINT_NAME``, cuts the ``.part`` file to half its size and
sends SIGKILL to this process, before the flush and the rename, as a power cut would.
"""

from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
from pathlib import Path

from mmengine.runner import Runner

TRAIN = Path(__file__).resolve().parents[1] / "tools" / "train.py"


def crash_while_saving(checkpoint_name: str) -> None:
    """Makes the save of ``checkpoint_name`` leave half a ``.part`` file and SIGKILL."""
    write = Runner.save_checkpoint

    @functools.wraps(write)
    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        write(self, out_dir, filename, *args, **kwargs)
        if filename == checkpoint_name + ".part":
            part = Path(out_dir) / filename
            with open(part, "r+b") as f:
                f.truncate(part.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    Runner.save_checkpoint = save_checkpoint


def main() -> None:
    crash_while_saving(sys.argv[1])
    sys.argv = [str(TRAIN), *sys.argv[2:]]
    runpy.run_path(str(TRAIN), run_name="__main__")


if __name__ == "__main__":
    main()
