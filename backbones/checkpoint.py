"""Loading NAT / DiNAT / DiNAT_s weights into the toolkit's models.

Accepted inputs:

* the official ``.pth`` files (flat dicts or wrapped in ``model`` / ``state_dict``,
  keys optionally prefixed ``module.`` or ``backbone.``), also full detector/segmentor
  checkpoints, of which the ``backbone.*`` part is used;
* Hugging Face weights (``pytorch_model.bin`` or ``model.safetensors``) of
  ``NatModel`` / ``DinatModel``, ``NatForImageClassification`` /
  ``DinatForImageClassification`` (``nat.``/``dinat.`` keys plus ``classifier.*``,
  which becomes ``head.*``) and ``NatBackbone`` / ``DinatBackbone``
  (``hidden_states_norms.stage{i}`` becomes the dense output norm ``norm{i-1}``).

Files ending in ``.safetensors`` are read with ``safetensors.torch.load_file`` (no
pickle); every other file with ``torch.load(weights_only=True)``.

:func:`load_pretrained` never loads quietly: it logs ``loaded n/n tensors, missing
[...], unexpected [...]``, names the classifier extras of an ImageNet checkpoint as
expected, and raises when backbone tensors (e.g. every ``rpb``) are missing unless
the caller opts out with ``allow_missing=True``.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_WRAPPERS = ("state_dict", "model", "module")
_HF_MODEL_PREFIXES = ("nat.", "dinat.")
_HF_PREFIXES = (*_HF_MODEL_PREFIXES, "embeddings.", "encoder.")
#: Keys of the ImageNet classifier (final ``norm`` and ``head``), absent from dense models.
CLASSIFIER_KEY = re.compile(r"^(norm|head)\.")
#: Keys of the dense backbones' per-output norms (``norm0``..``norm3``), absent from
#: ImageNet checkpoints: they start fresh when a dense model loads classifier weights.
DENSE_NORM_KEY = re.compile(r"^norm\d+\.")


def read_state_dict(
    checkpoint: Union[str, PathLike, Mapping], prefix: Optional[str] = None, trust: bool = False
) -> StateDict:
    """Reads a checkpoint and returns a flat state dict in the official key layout.

    Args:
        checkpoint: A path (``.safetensors``, or anything ``torch.save`` wrote), or an
            already loaded object.
        prefix: Use only the keys under this prefix (e.g. ``"backbone"`` of a detector
            checkpoint, or an EMA copy), with the prefix removed.
        trust: Unpickle arbitrary objects (see :func:`load_checkpoint_file`).

    Raises:
        ValueError: Not a checkpoint (see :func:`load_checkpoint_file`), or the object
            holds no tensors (under ``prefix``).
    """
    obj = (
        load_checkpoint_file(checkpoint, trust=trust)
        if isinstance(checkpoint, (str, PathLike))
        else checkpoint
    )
    while isinstance(obj, Mapping):
        wrapper = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint is a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError("checkpoint contains no tensors")
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"no key of the checkpoint starts with {prefix!r}")
    state = _strip_prefix(state, "module.")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if any(k.startswith(_HF_PREFIXES) for k in state):
        state = convert_hf_state_dict(state)
    return state


def load_checkpoint_file(path: Union[str, PathLike], trust: bool = False) -> object:
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
        refused = f"{found.group(1)} objects"
        raise ValueError(
            f"{path} holds {refused}, which weights-only loading refuses; "
            "if you trust the file (e.g. the official shi-labs.com download), load it with "
            "trust=True (load_pretrained, read_state_dict) or --trust "
            "(tools/convert_checkpoint.py, tools/convert_legacy_checkpoint.py)"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:  # a damaged or cut-off archive
        reason = str(error).split(". ")[0].strip() or type(error).__name__
        raise ValueError(f"not a checkpoint: {path} is damaged or truncated ({reason})") from error


def check_checkpoint_file(path: Union[str, PathLike]) -> None:
    """Refuses, without loading it, what cannot be a checkpoint file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: ``not a checkpoint: ...``: a directory, an empty or text file, or one
            that is neither ``torch.save``'s zip archive nor its legacy pickle (a
            ``.safetensors`` file is checked by its reader).
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


def read_safetensors(path: Union[str, PathLike]) -> StateDict:
    """Reads a ``.safetensors`` file into CPU tensors with ``safetensors.torch.load_file``.

    Raises:
        ImportError: The ``safetensors`` package is not installed.
        FileNotFoundError: No such file.
        ValueError: The file is not valid safetensors (e.g. a renamed ``torch.save`` file).
    """
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as safetensors_load_file
    except ImportError as error:
        raise ImportError(
            f"reading {path} needs the 'safetensors' package: pip install safetensors"
        ) from error
    try:
        return safetensors_load_file(str(path), device="cpu")
    except SafetensorError as error:
        raise ValueError(
            f"{path} is not a valid .safetensors file ({error}); a file written by "
            "torch.save must keep a .pth/.bin name"
        ) from error


def _strip_prefix(state: StateDict, prefix: str) -> StateDict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


_HF_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.layernorm_before\.", r"levels.\1.blocks.\2.norm1."),
    (r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.layernorm_after\.", r"levels.\1.blocks.\2.norm2."),
    (
        r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.attention\.self\.rpb$",
        r"levels.\1.blocks.\2.attn.rpb",
    ),
    (
        r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.attention\.output\.dense\.",
        r"levels.\1.blocks.\2.attn.proj.",
    ),
    (
        r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.intermediate\.dense\.",
        r"levels.\1.blocks.\2.mlp.fc1.",
    ),
    (r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.output\.dense\.", r"levels.\1.blocks.\2.mlp.fc2."),
    (r"^encoder\.levels\.(\d+)\.downsample\.", r"levels.\1.downsample."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]
_HF_QKV = re.compile(
    r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$"
)
_HF_LAYER_SCALE = re.compile(r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.layer_scale_parameters$")
_HF_BACKBONE_NORM = re.compile(r"^hidden_states_norms\.stage([1-9]\d*)\.(weight|bias)$")


def _hf_model_prefix(keys) -> str:
    """The ``nat.``/``dinat.`` prefix of a ``*ForImageClassification`` dict, or ``""``."""
    found = sorted({p for key in keys for p in _HF_MODEL_PREFIXES if key.startswith(p)})
    if len(found) > 1:
        raise ValueError(f"checkpoint mixes the Hugging Face prefixes {found}: not one model")
    return found[0] if found else ""


def _rename_hf_key(name: str) -> Optional[str]:
    match = _HF_BACKBONE_NORM.match(name)
    if match:
        return f"norm{int(match[1]) - 1}.{match[2]}"
    for pattern, replacement in _HF_RENAMES:
        new_key, hits = re.subn(pattern, replacement, name)
        if hits:
            return new_key
    return None


def convert_hf_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Maps Hugging Face NAT/DiNAT keys to the official layout.

    Accepts the state dicts of ``NatModel``/``DinatModel``, of
    ``NatForImageClassification``/``DinatForImageClassification`` (backbone keys under
    ``nat.``/``dinat.``; ``layernorm`` -> ``norm``, ``classifier`` -> ``head``) and of
    ``NatBackbone``/``DinatBackbone`` (``hidden_states_norms.stage{i}`` -> ``norm{i-1}``).
    ``query``/``key``/``value`` are concatenated (in that order) into ``qkv``;
    ``layer_scale_parameters`` (2, C) becomes ``gamma1``/``gamma2``.

    Raises:
        ValueError: A key that has no official counterpart (named in the message), two
            keys that map to the same official key, or an incomplete query/key/value.
    """
    prefix = _hf_model_prefix(state)
    out: StateDict = {}
    sources: dict[str, str] = {}

    def put(new_key: str, value: torch.Tensor, key: str) -> None:
        if new_key in out:
            raise ValueError(
                f"Hugging Face keys {sources[new_key]!r} and {key!r} both map to {new_key!r}"
            )
        out[new_key], sources[new_key] = value, key

    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        match = _HF_QKV.match(name)
        if match:
            level, layer, part, kind = match.groups()
            qkv.setdefault((level, layer, kind), {})[part] = value
            continue
        match = _HF_LAYER_SCALE.match(name)
        if match:
            base = f"levels.{match[1]}.blocks.{match[2]}"
            put(f"{base}.gamma1", value[0].clone(), key)
            put(f"{base}.gamma2", value[1].clone(), key)
            continue
        new_key = _rename_hf_key(name)
        if new_key is None:
            raise ValueError(f"Hugging Face key {key!r} has no counterpart in the NAT/DiNAT layout")
        put(new_key, value, key)
    for (level, layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(
                f"level {level} layer {layer}: incomplete query/key/value {kind} ({sorted(parts)})"
            )
        put(
            f"levels.{level}.blocks.{layer}.attn.qkv.{kind}",
            torch.cat([parts["query"], parts["key"], parts["value"]]),
            f"encoder.levels.{level}.layers.{layer}.attention.self.query.{kind}",
        )
    return out


def resize_rpb(rpb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubically resizes a ``[heads, 2k-1, 2k-1]`` bias table (e.g. 13×13 -> 21×21).

    This is how the kernel-11 DiNAT-L weights were derived from the kernel-7 ones
    (``*_11x11interp.pth``); ``align_corners=False`` is this toolkit's choice, as the
    official conversion script was not released.
    """
    resized = F.interpolate(rpb[None].float(), size=size, mode="bicubic", align_corners=False)
    return resized[0].to(rpb.dtype)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did."""

    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    expected_missing: list[str] = field(default_factory=list)
    expected_unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    resized_sizes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The one-line log message."""
        parts = [f"loaded {self.loaded}/{self.total} tensors"]
        parts.append(f"missing {self.missing}")
        if self.expected_missing:
            parts.append(f"(new dense-output norms, initialised fresh: {self.expected_missing})")
        parts.append(f"unexpected {self.unexpected}")
        if self.expected_unexpected:
            parts.append(f"(classifier tensors, expected: {_compact(self.expected_unexpected)})")
        if self.resized:
            parts.append(f"rpb resized bicubically: {len(self.resized)} ({self.resize_note()})")
        return ", ".join(parts)

    def resize_note(self) -> str:
        """``"13x13 -> 21x21: levels.0.blocks.0.attn.rpb, ..."``, one group per size change."""
        groups: dict[str, list[str]] = {}
        for key, change in zip(self.resized, self.resized_sizes):
            groups.setdefault(change, []).append(key)
        return "; ".join(
            f"{change}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
            for change, keys in groups.items()
        )


def _compact(keys: list[str]) -> list[str]:
    return sorted({k.split(".")[0] + ".*" for k in keys})


def load_pretrained(
    model: nn.Module,
    checkpoint: Union[str, PathLike, Mapping],
    allow_missing: bool = False,
    log: Optional[logging.Logger] = None,
    prefix: Optional[str] = None,
    trust: bool = False,
) -> LoadReport:
    """Loads a checkpoint into a NAT/DiNAT/DiNAT_s model and reports what happened.

    Args:
        model: The model (classifier or dense backbone).
        checkpoint: Path or loaded object (see :func:`read_state_dict`).
        allow_missing: Do not raise when model tensors are absent from the checkpoint.
        log: Logger for the summary line (default: this module's).
        prefix: Use only the checkpoint keys under this prefix (see :func:`read_state_dict`).
        trust: Unpickle arbitrary objects (see :func:`load_checkpoint_file`); only for
            files from a trusted source.

    An rpb table made for another kernel size (``[heads, 2k-1, 2k-1]`` with the model's
    heads) is resized bicubically, as the published kernel-11 DiNAT-L weights were made
    from the kernel-7 ones; that is logged at WARNING level with the tensors and sizes,
    and listed in the report (``resized``, ``resized_sizes``).

    Returns:
        A :class:`LoadReport`.

    Raises:
        ValueError: Missing backbone tensors (unless ``allow_missing``), or tensors
            whose shapes differ (other than a resizable rpb).
    """
    state = read_state_dict(checkpoint, prefix=prefix, trust=trust)
    target = model.state_dict()
    resized, sizes, mismatched = [], [], []
    for key, value in list(state.items()):
        if key not in target or target[key].shape == value.shape:
            continue
        if key.endswith(".rpb") and value.dim() == 3 and value.shape[0] == target[key].shape[0]:
            state[key] = resize_rpb(value, tuple(target[key].shape[1:]))
            resized.append(key)
            sizes.append("{}x{} -> {}x{}".format(*value.shape[1:], *target[key].shape[1:]))
        else:
            mismatched.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}"
            )
    if mismatched:
        raise ValueError("checkpoint tensors do not fit the model:\n  " + "\n  ".join(mismatched))

    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    is_classifier_ckpt = any(CLASSIFIER_KEY.match(k) for k in state)
    dense_model = not any(CLASSIFIER_KEY.match(k) for k in target)
    report = LoadReport(
        loaded=len(target) - len(missing), total=len(target), resized=resized, resized_sizes=sizes
    )
    for key in missing:
        expected = dense_model and is_classifier_ckpt and DENSE_NORM_KEY.match(key)
        (report.expected_missing if expected else report.missing).append(key)
    for key in unexpected:
        expected = dense_model and CLASSIFIER_KEY.match(key)
        (report.expected_unexpected if expected else report.unexpected).append(key)

    if report.missing and not allow_missing:
        raise ValueError(
            f"checkpoint lacks {len(report.missing)} of the model's tensors "
            f"(e.g. {report.missing[:5]}); pass allow_missing=True to load anyway"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    (log or logger).info(report.summary())
    if report.resized:
        # Legitimate (the kernel-11 DiNAT-L weights were made this way) but a change of the
        # weights: shown by default, never only at INFO.
        (log or logger).warning(
            f"the checkpoint's rpb tables were made for another kernel size: "
            f"{len(report.resized)} resized bicubically ({report.resize_note()})"
        )
    return report


def drop_classifier(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The state dict without the ImageNet classifier's ``norm.*`` / ``head.*``."""
    return {k: v for k, v in state.items() if not CLASSIFIER_KEY.match(k)}


def missing_weights_error(
    owner: str, missing: list[str], total: int, rpb_hint: str = ""
) -> Optional[str]:
    """The refusal rule for a backbone loaded inside a framework's own checkpointer.

    Fresh dense-output norms (``norm0``..``norm3``: ImageNet checkpoints have none) are
    fine; any other absent tensor, e.g. an ``rpb`` the framework skipped as a shape
    mismatch, is not.

    Args:
        owner: Name of the model, for the message.
        missing: Missing keys, relative to the backbone.
        total: Number of backbone tensors.
        rpb_hint: Appended (after ``"; "``) when an ``rpb`` is among the missing keys:
            the framework's way of resizing one.

    Returns:
        ``None`` when loading may go on, else the message naming what is missing.
    """
    missing = [key for key in missing if not DENSE_NORM_KEY.match(key)]
    if not missing:
        return None
    shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
    hint = f"; {rpb_hint}" if rpb_hint and any(key.endswith(".rpb") for key in missing) else ""
    return (
        f"{owner}: the checkpoint has no value for {len(missing)} of {total} backbone "
        f"tensors ({shown}){hint}"
    )
