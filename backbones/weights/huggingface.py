"""Hugging Face transformers' NAT/DiNAT layout (transformers 4.x ``Nat*`` and 4.x/5.x ``Dinat*``).

``NatModel``/``DinatModel`` keys (``embeddings.*``, ``encoder.levels.{i}.layers.{j}.*``,
``layernorm``), ``*ForImageClassification`` (the same under ``nat.``/``dinat.``, plus
``classifier``) and ``NatBackbone``/``DinatBackbone`` (``hidden_states_norms.stage{i}``,
the dense output norms). Attention is split into ``query``/``key``/``value`` where the
official layout has one ``qkv``; layer scale is one ``layer_scale_parameters`` ``(2, C)``
for the official ``gamma1``/``gamma2``. transformers has no DiNAT_s.

Model folders hold ``model.safetensors`` (transformers 5) or ``pytorch_model.bin``
(transformers 4): :func:`weights_file` finds it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from .official import unwrap

StateDict = dict[str, torch.Tensor]
NAME = "huggingface"
FILE_FORMAT = "torch"  # pytorch_model.bin; flat, so .safetensors works too
#: The weight files of a model folder, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODEL_PREFIXES = ("nat.", "dinat.")
_PREFIXES = (*MODEL_PREFIXES, "embeddings.", "encoder.")
_LAYER = "encoder.levels.{l}.layers.{b}."
_BLOCK = "levels.{l}.blocks.{b}."
#: (Hugging Face, official) key templates; ``{l}``/``{b}`` stand for level and block
#: numbers. A template ending in ``.`` is a prefix, any other a whole key.
_RENAMES = [
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("embeddings.norm.", "patch_embed.norm."),
    (_LAYER + "layernorm_before.", _BLOCK + "norm1."),
    (_LAYER + "layernorm_after.", _BLOCK + "norm2."),
    (_LAYER + "attention.self.rpb", _BLOCK + "attn.rpb"),
    (_LAYER + "attention.output.dense.", _BLOCK + "attn.proj."),
    (_LAYER + "intermediate.dense.", _BLOCK + "mlp.fc1."),
    (_LAYER + "output.dense.", _BLOCK + "mlp.fc2."),
    ("encoder.levels.{l}.downsample.", "levels.{l}.downsample."),
    ("layernorm.", "norm."),
    ("classifier.", "head."),
]


def _template_pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{[lb]\})", template)
    body = "".join(
        f"(?P<{part[1]}>\\d+)" if part in ("{l}", "{b}") else re.escape(part) for part in parts
    )
    return re.compile("^" + body + ("" if template.endswith(".") else "$"))


_PATTERNS = [(_template_pattern(hf), _template_pattern(official)) for hf, official in _RENAMES]


def _translate(key: str, to_official: bool) -> Optional[str]:
    """``key`` renamed by the first template that matches it, or ``None``."""
    for (hf, official), patterns in zip(_RENAMES, _PATTERNS):
        source, target = (patterns[0], official) if to_official else (patterns[1], hf)
        match = source.match(key)
        if match:
            return target.format(**match.groupdict()) + key[match.end() :]
    return None


_QKV = re.compile(
    r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$"
)
_LAYER_SCALE = re.compile(r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.layer_scale_parameters$")
_BACKBONE_NORM = re.compile(r"^hidden_states_norms\.stage([1-9]\d*)\.(weight|bias)$")
_OFFICIAL_QKV = re.compile(r"^levels\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_OFFICIAL_GAMMA = re.compile(r"^levels\.(\d+)\.blocks\.(\d+)\.gamma([12])$")
_OFFICIAL_DENSE_NORM = re.compile(r"^norm(\d+)\.(weight|bias)$")


def detect(obj: object, prefix: Optional[str] = None) -> bool:
    """Whether ``obj`` holds Hugging Face NAT/DiNAT keys (flat or wrapped, under ``prefix``)."""
    try:
        return any(key.startswith(_PREFIXES) for key in unwrap(obj, prefix))
    except ValueError:
        return False


def _model_prefix(keys) -> str:
    """The ``nat.``/``dinat.`` prefix of a ``*ForImageClassification`` dict, or ``""``."""
    found = sorted({p for key in keys for p in MODEL_PREFIXES if key.startswith(p)})
    if len(found) > 1:
        raise ValueError(f"checkpoint mixes the Hugging Face prefixes {found}: not one model")
    return found[0] if found else ""


def _rename(name: str) -> Optional[str]:
    match = _BACKBONE_NORM.match(name)
    if match:
        return f"norm{int(match[1]) - 1}.{match[2]}"
    return _translate(name, to_official=True)


def to_official(obj: object, prefix: Optional[str] = None) -> StateDict:
    """Maps Hugging Face NAT/DiNAT keys to the official layout.

    ``query``/``key``/``value`` are concatenated (in that order) into ``qkv``;
    ``layer_scale_parameters`` ``(2, C)`` becomes ``gamma1``/``gamma2``; ``layernorm``
    becomes ``norm``, ``classifier`` ``head`` and ``hidden_states_norms.stage{i}``
    ``norm{i-1}``.

    Raises:
        ValueError: A key that has no official counterpart (named in the message), two
            keys that map to the same official key, or an incomplete query/key/value.
    """
    state = unwrap(obj, prefix)
    model_prefix = _model_prefix(state)
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
        name = key[len(model_prefix) :] if model_prefix and key.startswith(model_prefix) else key
        match = _QKV.match(name)
        if match:
            level, layer, part, kind = match.groups()
            qkv.setdefault((level, layer, kind), {})[part] = value
            continue
        match = _LAYER_SCALE.match(name)
        if match:
            base = f"levels.{match[1]}.blocks.{match[2]}"
            put(f"{base}.gamma1", value[0].clone(), key)
            put(f"{base}.gamma2", value[1].clone(), key)
            continue
        new_key = _rename(name)
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


def _unrename(key: str) -> str:
    match = _OFFICIAL_DENSE_NORM.match(key)
    if match:
        return f"hidden_states_norms.stage{int(match[1]) + 1}.{match[2]}"
    new_key = _translate(key, to_official=False)
    if new_key is None:
        raise ValueError(f"official key {key!r} has no counterpart in the Hugging Face layout")
    return new_key


def from_official(state: Mapping[str, torch.Tensor], model_prefix: str = "") -> StateDict:
    """The Hugging Face keys of an official NAT/DiNAT state dict (inverse of :func:`to_official`).

    Args:
        state: Official layout (``levels.*``; DiNAT_s's ``layers.*`` has no counterpart).
        model_prefix: ``""`` for ``NatModel``/``DinatModel``/``*Backbone``, ``"nat."`` or
            ``"dinat."`` for ``*ForImageClassification`` (its ``classifier`` stays bare).

    Raises:
        ValueError: A key with no Hugging Face counterpart (e.g. DiNAT_s's ``layers.*``).
    """
    out: StateDict = {}
    gammas: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _OFFICIAL_QKV.match(key)
        if match:
            base = f"encoder.levels.{match[1]}.layers.{match[2]}.attention.self"
            for part, chunk in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{model_prefix}{base}.{part}.{match[3]}"] = chunk.clone()
            continue
        match = _OFFICIAL_GAMMA.match(key)
        if match:
            base = f"encoder.levels.{match[1]}.layers.{match[2]}.layer_scale_parameters"
            gammas.setdefault(base, {})[match[3]] = value
            continue
        new_key = _unrename(key)
        out[new_key if new_key.startswith("classifier.") else model_prefix + new_key] = value
    for base, pair in gammas.items():
        out[model_prefix + base] = torch.stack([pair["1"], pair["2"]])
    return out


def weights_file(folder: Union[str, os.PathLike]) -> Path:
    """The weight file of a model folder (see :data:`WEIGHT_FILES`).

    Raises:
        FileNotFoundError: Not a folder (e.g. a hub name: download it first), or no
            weight file, or several candidate ``.pth``/``.pt`` files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder; download the model first (e.g. "
            "huggingface_hub.snapshot_download) and pass its local path"
        )
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix in (".pth", ".pt"))
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"{folder} holds no weight file: expected {' or '.join(WEIGHT_FILES)}, or exactly one "
        f".pth/.pt file (found {[p.name for p in candidates] or 'none'})"
    )
