"""Writing output files so that a failed run never damages an existing one.

Every tool that writes a file or folder (checkpoint converters, ONNX export) writes it
through :func:`atomic_output`: the content goes to a temporary sibling, and only a run
that finished replaces the destination, in one rename. A run that raises leaves the
destination byte for byte as it was, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(destination: Union[str, os.PathLike], folder: bool = False) -> Iterator[Path]:
    """Yields a temporary path to write; moves it onto ``destination`` if the block succeeds.

    Args:
        destination: The file (or, with ``folder``, the directory) to produce.
        folder: The output is a directory (e.g. a ``save_pretrained`` folder). Into an
            existing directory, the finished files replace their namesakes one by one,
            only after all of them were written; its other files stay.

    Raises:
        IsADirectoryError: ``destination`` is an existing directory but a file is written.
        NotADirectoryError: ``destination`` is an existing file but a folder is written.
    """
    destination = Path(destination)
    if destination.is_dir() and not folder:
        raise IsADirectoryError(f"{destination} is a directory; give a file name to write")
    if destination.exists() and not destination.is_dir() and folder:
        raise NotADirectoryError(f"{destination} is a file; give a folder name to write")
    destination.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling that keeps the suffix: writers that pick the format from it
    # (cv2.imwrite, matplotlib, torch.onnx) write the same bytes as to the destination.
    prefix = f".{destination.stem}.partial-"
    if folder:
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=destination.parent))
    else:
        handle, name = tempfile.mkstemp(
            prefix=prefix, suffix=destination.suffix, dir=destination.parent
        )
        os.close(handle)
        staging = Path(name)
    try:
        yield staging
        if folder and destination.is_dir():
            # Into an existing folder: each finished file replaces its namesake; other
            # files there (a user's models folder) stay.
            for entry in sorted(staging.iterdir()):
                os.replace(entry, destination / entry.name)
            staging.rmdir()
            return
        # mkstemp/mkdtemp make owner-only entries: keep a replaced file's mode, else the
        # usual permissions.
        mode = destination.stat().st_mode & 0o777 if destination.is_file() else None
        os.chmod(staging, mode if mode is not None else (0o777 if folder else 0o666) & ~_umask())
        os.replace(staging, destination)
    except BaseException:
        _remove(staging)
        raise
