"""Reading and writing checkpoint files, with no framework import and no arbitrary pickle.

* ``.safetensors`` files are read with ``safetensors.torch.load_file`` (no pickle).
* Detectron2 ``.pkl`` files (plain pickles of NumPy arrays) are read with an unpickler
  that builds NumPy arrays, dicts, lists and scalars only.
* Every other file goes through ``torch.load(weights_only=True)``.

``trust=True`` lifts the pickle restriction, for files from a trusted source whose
metadata weights-only loading refuses (mmcv 1.x detector checkpoints). Writing goes
through :func:`nattk.backbones.weights.files.atomic_output` and reads the file back before it
replaces an existing one.
"""

from __future__ import annotations

import io
import pickle
import re
from os import PathLike
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import torch

from .files import atomic_output

StateDict = dict[str, torch.Tensor]
PathType = Union[str, PathLike]

#: What a Detectron2 ``.pkl`` may hold: NumPy arrays, dtypes and scalars (as pickle
#: protocols 2 to 5 and NumPy 1 and 2 name them) in plain containers; all else is refused.
_PICKLE_ALLOWED = {
    *(
        (f"numpy.{core}.multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    ),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol 2 written by Python 3: bytes as latin-1 text
}
#: Pickle protocol of the ``.pkl`` files written here (readable from Python 3.4 on).
PICKLE_PROTOCOL = 4
#: The file formats :func:`write_checkpoint` writes.
FORMATS = ("torch", "pickle", "safetensors")


def check_checkpoint_file(path: PathType) -> None:
    """Refuses, without loading it, what cannot be a checkpoint file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: ``not a checkpoint: ...``: a directory, an empty or text file, or one
            that is neither ``torch.save``'s zip archive nor a pickle (a ``.safetensors``
            file is checked by its reader).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"not a checkpoint: {path} is a directory")
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"not a checkpoint: {path} is empty")
    if path.suffix == ".safetensors":
        return
    with open(path, "rb") as handle:
        head = handle.read(64)
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (0x80 ..).
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        kind = "text" if _looks_like_text(head) else "neither a zip archive nor a pickle"
        raise ValueError(f"not a checkpoint: {path} is {kind} (starts with {head[:24]!r})")


def _looks_like_text(head: bytes) -> bool:
    text = head.decode("utf-8", errors="ignore")  # a character cut at the end is dropped
    return len(text) >= len(head) // 2 and all(c.isprintable() or c in "\t\n\r" for c in text)


def load_checkpoint_file(path: PathType, trust: bool = False) -> object:
    """Reads a checkpoint file: ``.safetensors`` without pickle, others weights-only.

    Args:
        path: The file.
        trust: Unpickle arbitrary objects (``weights_only=False``): only for files from
            a trusted source whose metadata weights-only loading refuses (mmcv 1.x
            detector checkpoints).

    Raises:
        FileNotFoundError: No such file.
        ValueError: ``not a checkpoint: ...`` for a directory, an empty, text, damaged or
            truncated file, or an invalid ``.safetensors``; or a pickle that weights-only
            loading refuses (the message names ``trust=True`` / ``--trust``).
    """
    path = Path(path)
    check_checkpoint_file(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if _is_plain_pickle(path):  # Detectron2's format, whatever the name
        return _read_pickle(path, trust)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        # torch names a refused class as "GLOBAL module.name"; any other failure of the
        # weights-only unpickler is a damaged file, which trusting would not help.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if trust or found is None:
            reason = str(error).split(". ")[0].strip()
            raise ValueError(
                f"not a checkpoint: {path} could not be unpickled ({reason})"
            ) from error
        raise _refused(path, f"{found.group(1)} objects") from error
    except (RuntimeError, EOFError, OSError) as error:  # a damaged or cut-off archive
        reason = str(error).split(". ")[0].strip() or type(error).__name__
        raise ValueError(f"not a checkpoint: {path} is damaged or truncated ({reason})") from error


def _refused(path: Path, what: str) -> ValueError:
    return ValueError(
        f"{path} holds {what}, which weights-only loading refuses; "
        "if you trust the file (e.g. the official shi-labs.com download), load it with "
        "trust=True (load_pretrained, read_state_dict) or --trust "
        "(tools/convert_checkpoint.py, tools/convert_legacy_checkpoint.py)"
    )


class _NumpyUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and plain containers; refuses every other class."""

    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_ALLOWED or (module == "builtins" and name in ("dict", "list")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")


def _is_plain_pickle(path: Path) -> bool:
    """A pickle that ``torch.save`` did not write (it writes a zip archive, or in its legacy
    format a pickle that starts with a 10-byte magic number: ``0x80 0x02 0x8a 0x0a``)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head[:1] == b"\x80" and head[2:4] != b"\x8a\x0a"


def _read_pickle(path: Path, trust: bool = False) -> object:
    """A Detectron2 ``.pkl`` (``{"model": {name: ndarray}, ...}``); arbitrary objects only if ``trust``."""
    unpickler = pickle.Unpickler if trust else _NumpyUnpickler
    try:
        with open(path, "rb") as handle:
            return unpickler(io.BufferedReader(handle), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise ValueError(
                f"not a checkpoint: {path} could not be unpickled ({error})"
            ) from error
        raise _refused(path, f"{found.group(1)} objects") from error
    except (EOFError, ValueError, TypeError) as error:
        raise ValueError(f"not a checkpoint: {path} is damaged or truncated ({error})") from error


def read_safetensors(path: PathType, map_location: object = None) -> StateDict:
    """Reads a local ``.safetensors`` file with ``safetensors.torch.load_file`` (no pickle).

    Args:
        path: The file (``~`` is expanded).
        map_location: A device (``str`` or ``torch.device``) to put the tensors on;
            anything else (``None``, a callable) leaves them on the CPU.

    Raises:
        ImportError: The ``safetensors`` package is not installed.
        FileNotFoundError: No such file.
        ValueError: A URL (download it first), or not valid safetensors (e.g. a renamed
            ``torch.save`` file).
    """
    if "://" in str(path):
        raise ValueError(
            f"cannot load {path}: .safetensors files are read from local paths only; "
            "download it first (e.g. `huggingface-cli download REPO model.safetensors`) "
            "and pass the local path"
        )
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as safetensors_load_file
    except ImportError as error:
        raise ImportError(
            f"reading {path} needs the 'safetensors' package: pip install safetensors"
        ) from error
    try:
        state = safetensors_load_file(str(Path(path).expanduser()), device="cpu")
    except SafetensorError as error:
        raise ValueError(
            f"{path} is not a valid .safetensors file ({error}); a file written by "
            "torch.save must keep a .pth/.bin name"
        ) from error
    if isinstance(map_location, (str, torch.device)) and torch.device(map_location).type != "cpu":
        state = {key: value.to(map_location) for key, value in state.items()}
    return state


def write_checkpoint(
    obj: object,
    destination: PathType,
    file_format: str = "torch",
    verify: Optional[Callable[[object], None]] = None,
    weights_only: bool = True,
) -> Path:
    """Writes ``obj`` atomically, then reads it back as the toolkit's readers will.

    An existing destination is replaced only once the new file was written and read back
    (with :func:`load_checkpoint_file`'s readers: weights-only ``torch.load``, the
    NumPy-only unpickler, safetensors), and ``verify`` accepted what came back.

    Args:
        obj: What to write.
        destination: The file (its name does not choose the format).
        file_format: ``"torch"`` (``torch.save``), ``"pickle"`` (a plain pickle:
            Detectron2's model-zoo format) or ``"safetensors"`` (a flat ``{name: tensor}``).
        verify: Called with what the file reads back; raises to keep the destination as
            it was. Default: the same top-level keys as ``obj``.
        weights_only: Read a ``"torch"`` file back weights-only (``False`` for metadata
            that weights-only loading refuses, e.g. NumPy scalars of an mmcv 1.x ``meta``).

    Returns:
        The destination.

    Raises:
        ValueError: Unknown format, or ``"safetensors"`` for anything but flat tensors.
        RuntimeError: The written file does not read back the same keys.
    """
    if file_format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {file_format!r}; choose from {FORMATS}")
    flat = isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())
    if file_format == "safetensors" and not flat:
        raise ValueError("a .safetensors file holds flat tensors only; write this layout as .pth")
    destination = Path(destination)
    with atomic_output(destination) as staging:
        if file_format == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in obj.items()}, str(staging))
            written = read_safetensors(staging)
        elif file_format == "pickle":
            staging.write_bytes(pickle.dumps(obj, protocol=PICKLE_PROTOCOL))
            written = _read_pickle(staging)
        else:
            torch.save(obj, staging)
            written = torch.load(staging, map_location="cpu", weights_only=weights_only)
        if verify is not None:
            verify(written)
        elif isinstance(obj, Mapping) and set(written) != set(obj):
            raise RuntimeError(f"{destination} does not read back the {len(obj)} entries written")
    return destination
