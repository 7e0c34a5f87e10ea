"""Send everything a process prints to a log file, keeping a handle on the console.

Frameworks write to the console from many places: Python loggers, ``print``,
``warnings`` and C/C++ code that writes to file descriptors 1 and 2 directly.
:func:`output_to_log` redirects those descriptors, so the log file receives all of
it, and gives the caller a stream that still reaches the original console.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, Union


@contextlib.contextmanager
def output_to_log(path: Union[str, Path]) -> Iterator[TextIO]:
    """Redirects this process's stdout and stderr (descriptors 1 and 2) to ``path``.

    The file is created (with its folder) or truncated. On leaving, the descriptors
    are restored, also when an exception leaves the block.

    Args:
        path: The log file.

    Yields:
        A line-buffered text stream writing to the original stdout.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    console = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    with open(path, "wb", buffering=0) as log:
        try:
            for fd in (1, 2):
                os.dup2(log.fileno(), fd)
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            console.close()


def tail(path: Union[str, Path], lines: int = 30) -> str:
    """The last ``lines`` lines of a text file (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
