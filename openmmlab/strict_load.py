"""Refusing a model checkpoint that does not fit the model, with a short summary.

MMEngine's ``load_checkpoint`` loads what fits and logs the rest in one very long line,
so a detector run on a backbone-only file, another variant's weights or another number
of classes goes on with random weights. The tools that take a model checkpoint
(``demo``, ``export_onnx``, ``test``) check it first with :func:`check_checkpoint_fits`:
missing, unexpected or reshaped tensors are refused in at most ten lines that say what
the file looks like; ``--allow-partial`` loads it anyway and says so.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

_MODULE_PREFIX = re.compile(r"^module\.")
_SHOWN = 3


class PartialCheckpointError(ValueError):
    """A model checkpoint leaves model tensors unfilled, or holds tensors the model lacks.

    ``keeps_lines``: the command-line tools show its (at most ten-line) summary as it is
    (see :class:`nattk.cli_errors.NattkError`).
    """

    keeps_lines = True


@dataclass
class CheckpointFit:
    """How a checkpoint's tensors meet a model's.

    Attributes:
        missing: Model tensors the checkpoint has no value for.
        unexpected: Checkpoint tensors the model has no place for.
        mismatched: ``(key, checkpoint shape, model shape)`` of tensors whose shapes differ.
        total: Number of model tensors.
    """

    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    total: int = 0

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def compare(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]):
    """The :class:`CheckpointFit` of ``state`` on a model with ``model_state``."""
    fit = CheckpointFit(total=len(model_state))
    # As MMEngine's load_state_dict: a missing BatchNorm counter is not a missing weight.
    fit.missing = [
        key for key in model_state if key not in state and not key.endswith("num_batches_tracked")
    ]
    fit.unexpected = [key for key in state if key not in model_state]
    fit.mismatched = [
        (key, tuple(value.shape), tuple(model_state[key].shape))
        for key, value in state.items()
        if key in model_state and tuple(value.shape) != tuple(model_state[key].shape)
    ]
    return fit


def _grouped(keys: list) -> str:
    """``backbone.levels (120), decode_head (14)``: counts by the first two key parts."""
    groups = Counter(".".join(key.split(".")[:2]) for key in keys)
    shown = [f"{name}.* ({count})" for name, count in groups.most_common(_SHOWN)]
    more = len(groups) - len(shown)
    return ", ".join(shown) + (f", and {more} more groups" if more > 0 else "")


def diagnosis(fit: CheckpointFit, model_keys, nested_keys=()) -> Optional[str]:
    """What the file most likely is, when that can be told.

    ``nested_keys``: the tensors of a ``model`` entry, which MMEngine does not read (the
    official ImageNet files keep their weights there).
    """
    model_keys = set(model_keys)
    candidates = list(fit.unexpected) + list(nested_keys)
    as_backbone = [key for key in candidates if f"backbone.{key}" in model_keys]
    if as_backbone and len(as_backbone) >= len(candidates) // 2:
        return (
            "this looks like ImageNet backbone weights: use it as the backbone's "
            "init_cfg=dict(type='Pretrained', checkpoint=...), not as a model checkpoint"
        )
    if fit.mismatched and not fit.missing and not fit.unexpected:
        heads = [m for m in fit.mismatched if not m[0].startswith("backbone.")]
        if len(heads) == len(fit.mismatched) and all(m[1][1:] == m[2][1:] for m in heads):
            key, file_shape, model_shape = heads[-1]
            return (
                f"another number of classes: the file has {file_shape[0]}, the config "
                f"{model_shape[0]} ({key})"
            )
        if any(m[0].startswith("backbone.") for m in fit.mismatched):
            return "another variant or width: backbone tensors differ in shape"
    return None


def summary(source: str, fit: CheckpointFit, model_keys, nested_keys=()) -> str:
    """At most ten lines: counts, the first names grouped by prefix, and a diagnosis."""
    counts = []
    if fit.missing:
        counts.append(f"{len(fit.missing)} of the model's {fit.total} tensors missing")
    if fit.unexpected:
        counts.append(f"{len(fit.unexpected)} unexpected")
    if fit.mismatched:
        counts.append(f"{len(fit.mismatched)} of another shape")
    lines = [f"{source} does not fit the model: {', '.join(counts)}"]
    if fit.missing:
        lines.append(f"  missing: {_grouped(fit.missing)}")
    if fit.unexpected:
        lines.append(f"  unexpected: {_grouped(fit.unexpected)}")
    for key, file_shape, model_shape in fit.mismatched[:_SHOWN]:
        lines.append(f"  shape: {key}: file {file_shape} vs model {model_shape}")
    if len(fit.mismatched) > _SHOWN:
        lines.append(f"  ... and {len(fit.mismatched) - _SHOWN} more of another shape")
    if nested_keys:
        lines.append(f"  its {len(nested_keys)} tensors are under 'model', which is not read")
    told = diagnosis(fit, model_keys, nested_keys)
    if told:
        lines.append(f"  {told}")
    return "\n".join(lines[:10])


def _tensors(state: Mapping) -> dict:
    return {
        _MODULE_PREFIX.sub("", key): value
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }


def checkpoint_state(checkpoint: str) -> tuple[dict, dict]:
    """The tensors of a model checkpoint as MMEngine's loader reads them (its
    ``state_dict`` entry, or the file's top level), and those of a ``model`` entry,
    which MMEngine does not read."""
    from mmengine.runner import CheckpointLoader

    from nattk.openmmlab.compat import checkpoint_allowlist

    with checkpoint_allowlist():
        loaded = CheckpointLoader.load_checkpoint(str(checkpoint), map_location="cpu")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else loaded
    if not isinstance(state, Mapping):
        raise ValueError(f"{checkpoint} holds a {type(state).__name__}, not a state dict")
    nested = loaded.get("model") if "state_dict" not in loaded else None
    return _tensors(state), _tensors(nested) if isinstance(nested, Mapping) else {}


def check_checkpoint_fits(model: torch.nn.Module, checkpoint: str, allow_partial: bool = False):
    """Refuses ``checkpoint`` unless every model tensor gets a value of its shape and
    every checkpoint tensor has a place.

    Args:
        model: The built model (a test-time-augmentation wrapper is looked through).
        checkpoint: The file.
        allow_partial: Load anyway: the summary goes to stderr, prefixed with what was
            allowed.

    Returns:
        The :class:`CheckpointFit`.

    Raises:
        PartialCheckpointError: The summary (at most ten lines), unless ``allow_partial``.
    """
    inner = model
    # DDP wrappers and BaseTTAModel hold the model as .module
    while isinstance(getattr(inner, "module", None), torch.nn.Module):
        inner = inner.module
    model_state = inner.state_dict()
    state, nested = checkpoint_state(checkpoint)
    fit = compare(model_state, state)
    if fit.fits:
        return fit
    text = summary(str(checkpoint), fit, model_state, nested)
    if not allow_partial:
        raise PartialCheckpointError(f"{text}\n  (--allow-partial loads it anyway)")
    print(f"--allow-partial: loading anyway. {text}", file=sys.stderr)
    return fit
