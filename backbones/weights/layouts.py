"""Which layout a checkpoint is in, and its official state dict.

Each layout is one module of this package with ``NAME``, ``detect(obj)``,
``to_official(obj, prefix)`` and ``from_official(state, ...)``. :data:`LAYOUTS` lists
them in the order they are tried; the official layout comes last and takes anything
that holds tensors.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import Mapping, Optional, Union

import torch

from . import d2, huggingface, official, openmmlab_legacy, toolkit
from .io import load_checkpoint_file, write_checkpoint

StateDict = dict[str, torch.Tensor]
#: Layout name -> module, in detection order.
LAYOUTS: dict[str, ModuleType] = {
    module.NAME: module for module in (d2, toolkit, openmmlab_legacy, huggingface, official)
}


def detect_layout(obj: object, prefix: Optional[str] = None) -> str:
    """The name of the first layout of :data:`LAYOUTS` that recognises ``obj``.

    Args:
        obj: What a checkpoint file holds.
        prefix: Only the keys under this prefix count (see :func:`read_state_dict`).

    Raises:
        ValueError: None does (``obj`` holds no tensors, or none under ``prefix``).
    """
    for name, module in LAYOUTS.items():
        if module.detect(obj, prefix):
            return name
    official.unwrap(obj, prefix)  # raises the reason: not a mapping, or no tensors
    return official.NAME


def read_checkpoint(
    checkpoint: Union[str, PathLike, Mapping], prefix: Optional[str] = None, trust: bool = False
) -> tuple[str, StateDict]:
    """``(layout name, official state dict)`` of a checkpoint file or loaded object.

    See :func:`read_state_dict` for the arguments.
    """
    obj = (
        load_checkpoint_file(checkpoint, trust=trust)
        if isinstance(checkpoint, (str, PathLike))
        else checkpoint
    )
    layout = detect_layout(obj, prefix)
    state = LAYOUTS[layout].to_official(obj, prefix)
    # A Hugging Face dict inside another wrapping (e.g. a toolkit file of HF keys).
    if layout != huggingface.NAME and huggingface.detect(state):
        layout, state = huggingface.NAME, huggingface.to_official(state)
    return layout, state


def read_state_dict(
    checkpoint: Union[str, PathLike, Mapping], prefix: Optional[str] = None, trust: bool = False
) -> StateDict:
    """Reads a checkpoint in any layout of :data:`LAYOUTS`; returns its official state dict.

    Args:
        checkpoint: A path (``.safetensors``, a Detectron2 ``.pkl``, or anything
            ``torch.save`` wrote), or an already loaded object.
        prefix: Use only the keys under this prefix (e.g. ``"backbone"`` of a detector
            checkpoint, or an EMA copy), with the prefix removed.
        trust: Unpickle arbitrary objects (see :func:`~.io.load_checkpoint_file`).

    Raises:
        ValueError: Not a checkpoint (see :func:`~.io.load_checkpoint_file`), or the object
            holds no tensors (under ``prefix``), or Hugging Face keys with no counterpart.
    """
    return read_checkpoint(checkpoint, prefix=prefix, trust=trust)[1]


def write_layout(
    state: Mapping[str, torch.Tensor],
    layout: str,
    destination: Union[str, PathLike],
    file_format: Optional[str] = None,
    **options,
) -> Path:
    """Writes an official state dict in ``layout``, atomically, checked by reading it back.

    Args:
        state: Official-layout tensors.
        layout: A name of :data:`LAYOUTS`.
        destination: The file.
        file_format: See :func:`~.io.write_checkpoint`; default: the layout's
            ``FILE_FORMAT`` (a plain pickle for ``detectron2``, ``torch.save`` otherwise).
        **options: For the layout's ``from_official`` (e.g. ``source`` for ``toolkit``).

    Raises:
        KeyError: Unknown layout.
        RuntimeError: The file does not read back the tensors written (an existing
            destination is then left as it was).
    """
    module = LAYOUTS[layout]
    payload = module.from_official(state, **options)

    def same_tensors(written: object) -> None:
        if set(read_state_dict(written)) != set(state):
            raise RuntimeError(f"{destination} does not read back the {len(state)} tensors written")

    return write_checkpoint(payload, destination, file_format or module.FILE_FORMAT, same_tensors)
