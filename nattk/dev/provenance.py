"""Where a measurement came from: what the benchmark tools write beside their results."""

from __future__ import annotations

import subprocess


def git_commit() -> str:
    """The short commit hash of the checkout, or ``unknown``."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
