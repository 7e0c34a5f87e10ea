"""Runs transformers' own Nat/Dinat attention on this toolkit's operator.

transformers' ``modeling_dinat`` (and 4.x's ``modeling_nat``) compute neighborhood
attention with NATTEN 0.14–0.17's ``natten2dqkrpb`` / ``natten2dav``, which NATTEN
removed in 0.20; transformers 5.x also lays q/k/v out wrongly before calling them
(``.view(B, H, W, heads, D).transpose(1, 2)`` gives ``[B, W, H, heads, D]``, which NATTEN
reads as W heads of an H x heads map, where 4.x's ``permute(0, 3, 1, 2, 4)`` gave
``[B, heads, H, W, D]``), so published weights cannot compute what they were trained for.

:func:`use_toolkit_attention` fixes both in memory, without touching a file:

* it imports the modeling modules with NATTEN hidden from their import-time check
  (NATTEN >= 0.20 lacks the names they import), and lets their ``requires_backends``
  checks pass for ``natten``;
* it replaces ``NeighborhoodAttention.forward`` with one that projects q, k, v (in one
  GEMM when nothing wraps or hooks the projections), lays them out as
  ``[B, H, W, heads, D]`` and runs
  :func:`~nattk.backbones.attention.neighborhood_attention_2d` (the unfused pair when
  attention weights are returned or dropped out), i.e. 4.x's semantics on every version;
* it checks every attention layer's kernel size and dilation, raising our error.

Every model class that builds these layers is covered: ``DinatModel``,
``DinatForImageClassification``, ``DinatBackbone`` and everything that loads the latter
through ``AutoBackbone`` (OneFormer, Mask2Former, UperNet), plus 4.x's ``Nat*``. On
transformers 5.x the call also registers :mod:`nattk.hf.backbone` with the Auto classes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import math
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from nattk.backbones.attention import na2d_av, na2d_qk, neighborhood_attention_2d
from nattk.backbones.attention.torch_backend import acc_dtype

logger = logging.getLogger(__name__)

#: transformers versions whose Nat/Dinat code this module was tested against.
TESTED_TRANSFORMERS = ("4.46.3", "5.23.0")
#: The modeling modules patched, when the installed transformers has them.
MODELING_MODULES = (
    "transformers.models.dinat.modeling_dinat",
    "transformers.models.deprecated.nat.modeling_nat",  # transformers 4.x only
)
_NATTEN_LEGACY_NAMES = ("natten2dqkrpb", "natten2dav")


@dataclass
class AttentionStatus:
    """What :func:`use_toolkit_attention` did.

    Attributes:
        attention: ``"nattk"`` (this toolkit's operator) or ``"natten <version>"``.
        transformers_version: The installed transformers.
        modules: The modeling modules now patched.
        natten_version: The installed NATTEN's version, or ``None``.
    """

    attention: str
    transformers_version: str
    modules: list[str] = field(default_factory=list)
    natten_version: Optional[str] = None

    def __str__(self) -> str:
        natten = f"NATTEN {self.natten_version}" if self.natten_version else "no NATTEN"
        return (
            f"transformers {self.transformers_version} Nat/Dinat attention runs on "
            f"{self.attention} ({natten} installed; patched {', '.join(self.modules)})"
        )


@dataclass
class _State:
    status: Optional[AttentionStatus] = None
    # (module, attribute) -> original value, for restore_transformers_attention().
    originals: dict[tuple[object, str], object] = field(default_factory=dict)
    # NATTEN <= 0.17's (natten2dqkrpb, natten2dav) when they stay in charge, else None.
    natten_kernels: Optional[tuple[Callable, Callable]] = None


_STATE = _State()


# ------------------------------------------------------------------ NATTEN discovery
def natten_version() -> Optional[str]:
    """The installed NATTEN's version (``None`` when NATTEN is not importable)."""
    if importlib.util.find_spec("natten") is None:
        return None
    try:
        return importlib.metadata.version("natten")
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules.get("natten"), "__version__", "unknown")


def _legacy_natten_kernels() -> Optional[tuple[Callable, Callable]]:
    """NATTEN's ``natten2dqkrpb``/``natten2dav`` when it has them (NATTEN <= 0.17.4)."""
    if importlib.util.find_spec("natten") is None:
        return None
    try:
        functional = importlib.import_module("natten.functional")
    except Exception as error:  # 0.17.x raises at import on machines without a GPU
        logger.info("NATTEN is installed but natten.functional does not import: %s", error)
        return None
    kernels = tuple(getattr(functional, name, None) for name in _NATTEN_LEGACY_NAMES)
    return None if None in kernels else kernels


# ------------------------------------------------------------------ checks
def check_attention_layer(layer: torch.nn.Module) -> None:
    """Raises our error for a transformers NA layer this toolkit's operator cannot run.

    Args:
        layer: A transformers ``NeighborhoodAttention`` module (Nat or Dinat).

    Raises:
        ValueError: ``kernel_size`` not an odd positive int (the bias table needs a
            centre), or ``dilation`` not a positive int.
    """
    kernel = layer.kernel_size
    dilation = getattr(layer, "dilation", 1)
    where = f"{type(layer).__module__}.{type(layer).__name__}"
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(
            f"{where}: kernel_size must be an odd positive int (its rpb table is "
            f"[heads, 2k-1, 2k-1] around a centre), got {kernel!r}; check config.kernel_size"
        )
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(
            f"{where}: dilation must be a positive int, got {dilation!r}; check config.dilations"
        )


def _checked_init(original_init):
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        check_attention_layer(self)

    __init__.__wrapped__ = original_init
    return __init__


# ------------------------------------------------------------------ the forward
def _plain_linear(module: torch.nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Linear`` that nothing wraps or hooks (LoRA, offloading)."""
    return (
        type(module) is torch.nn.Linear
        and not module._forward_hooks
        and not module._forward_pre_hooks
    )


def _project_qkv(layer, hidden_states: torch.Tensor):
    """q, k, v as ``[B, H, W, heads, D]``.

    One GEMM over the concatenated weights when the three projections are plain
    ``nn.Linear`` layers; otherwise each module is called, so that adapters (PEFT's
    LoRA), hooks and quantised layers keep working.
    """
    heads, dim = layer.num_attention_heads, layer.attention_head_size
    projections = (layer.query, layer.key, layer.value)
    if all(_plain_linear(m) for m in projections) and not _global_module_hooks():
        weight = torch.cat([m.weight for m in projections])
        bias = None if layer.query.bias is None else torch.cat([m.bias for m in projections])
        qkv = F.linear(hidden_states, weight, bias)
        return qkv.view(*hidden_states.shape[:3], 3, heads, dim).unbind(3)
    return tuple(m(hidden_states).view(*hidden_states.shape[:3], heads, dim) for m in projections)


def _global_module_hooks() -> bool:
    """Whether process-wide module hooks are registered (they must see every Linear call)."""
    module = torch.nn.modules.module
    return bool(
        getattr(module, "_global_forward_hooks", None)
        or getattr(module, "_global_forward_pre_hooks", None)
    )


def toolkit_attention_forward(
    self, hidden_states: torch.Tensor, output_attentions: Optional[bool] = False
) -> tuple[torch.Tensor, ...]:
    """``NeighborhoodAttention.forward`` with transformers 4.x's semantics.

    Args:
        hidden_states: ``[B, H, W, C]`` (already padded by the Nat/Dinat layer).
        output_attentions: Also return the attention weights ``[B, heads, H, W, k*k]``.

    Returns:
        ``(context,)`` or ``(context, attention_probs)``, ``context`` ``[B, H, W, C]``.
    """
    check_attention_layer(self)
    kernel, dilation = self.kernel_size, getattr(self, "dilation", 1)
    q, k, v = _project_qkv(self, hidden_states)
    scale = 1.0 / math.sqrt(self.attention_head_size)
    if _STATE.natten_kernels is not None:
        return _natten_forward(self, q, k, v, scale, output_attentions)
    probs = None
    if output_attentions or (self.training and self.dropout.p > 0):
        logits = na2d_qk(q, k, kernel, dilation, self.rpb, scale)
        probs = self.dropout(logits.softmax(-1, dtype=acc_dtype(logits.dtype)).to(logits.dtype))
        context = na2d_av(probs, v, kernel, dilation)
    else:
        context = neighborhood_attention_2d(q, k, v, kernel, dilation, self.rpb, scale)
    context = context.flatten(3)
    if output_attentions:
        return context, probs.permute(0, 3, 1, 2, 4)
    return (context,)


def _natten_forward(self, q, k, v, scale, output_attentions):
    """The same computation on NATTEN <= 0.17's kernels (their ``[B, heads, H, W, D]``)."""
    qk_rpb, av = _STATE.natten_kernels
    q, k, v = (x.permute(0, 3, 1, 2, 4) for x in (q, k, v))
    logits = qk_rpb(q * scale, k, self.rpb, self.kernel_size, getattr(self, "dilation", 1))
    probs = self.dropout(logits.softmax(-1))
    context = av(probs, v, self.kernel_size, getattr(self, "dilation", 1))
    context = context.permute(0, 2, 3, 1, 4).flatten(3)
    return (context, probs) if output_attentions else (context,)


# ------------------------------------------------------------------ patching
def _without_natten_check(original):
    def requires_backends(obj, backends):
        backends = [backends] if isinstance(backends, str) else list(backends)
        rest = [b for b in backends if b != "natten"]
        if rest:
            original(obj, rest)

    return requires_backends


def _set(target, name: str, value) -> None:
    key = (target, name)
    if key not in _STATE.originals:
        _STATE.originals[key] = getattr(target, name)
    setattr(target, name, value)


def _import_modeling_module(name: str, hide_natten: bool):
    """Imports ``name``; with ``hide_natten`` its import-time NATTEN check answers no."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:  # a parent package is gone (Nat in transformers 5)
        return None
    utils = importlib.import_module("transformers.utils")
    check = utils.is_natten_available
    if hide_natten:
        utils.is_natten_available = lambda: False
    try:
        module = importlib.import_module(name)
    finally:
        utils.is_natten_available = check
    if hide_natten:
        module.is_natten_available = check  # the name it bound during the import
    return module


def _patch_module(module) -> None:
    layer = module.NeighborhoodAttention
    if layer.forward is not toolkit_attention_forward:
        _set(layer, "forward", toolkit_attention_forward)
        _set(layer, "__init__", _checked_init(layer.__init__))
    if not getattr(module.requires_backends, "_nattk", False):
        checker = _without_natten_check(module.requires_backends)
        checker._nattk = True
        _set(module, "requires_backends", checker)


def _warn_if_untested(version: str) -> None:
    if version not in TESTED_TRANSFORMERS:
        warnings.warn(
            f"nattk.hf was tested with transformers {', '.join(TESTED_TRANSFORMERS)}; "
            f"transformers {version} is installed. Its Nat/Dinat code may differ: compare "
            "a model's outputs with a tested version before trusting them.",
            UserWarning,
            stacklevel=3,
        )


def use_toolkit_attention(force: bool = False) -> AttentionStatus:
    """Makes transformers' Nat/Dinat classes run on this toolkit's attention.

    Call it once, before or after ``import transformers``, and before
    ``from transformers import Dinat...`` where NATTEN >= 0.20 is installed (that import
    fails there without it; the call, made even after such a failure, makes it work).
    Calling it again is harmless. On transformers 5.x it also registers this toolkit's
    backbones with ``AutoConfig`` / ``AutoBackbone`` (:mod:`nattk.hf.backbone`).

    Args:
        force: When NATTEN <= 0.17 (which still has the kernels transformers calls) is
            installed, it keeps computing the attention unless ``force`` is set. The
            layout of transformers 5.x is corrected either way.

    Returns:
        An :class:`AttentionStatus` naming what computes the attention (also logged).

    Raises:
        ImportError: transformers is not installed.
    """
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "nattk.hf.use_toolkit_attention() needs transformers: pip install "
            "'nat-toolkit[hf]' (tested: transformers " + ", ".join(TESTED_TRANSFORMERS) + ")"
        ) from error
    _warn_if_untested(transformers.__version__)
    natten = natten_version()
    legacy = None if force else _legacy_natten_kernels()
    _STATE.natten_kernels = legacy
    modules = []
    for name in MODELING_MODULES:
        module = _import_modeling_module(name, hide_natten=legacy is None)
        if module is not None:
            _patch_module(module)
            modules.append(name.rsplit(".", 1)[-1])
    if not modules:
        raise ImportError(
            f"transformers {transformers.__version__} has no Nat/Dinat modeling module "
            f"({', '.join(MODELING_MODULES)})"
        )
    status = AttentionStatus(
        attention="nattk" if legacy is None else f"natten {natten}",
        transformers_version=transformers.__version__,
        modules=modules,
        natten_version=natten,
    )
    _STATE.status = status
    if int(transformers.__version__.split(".")[0]) >= 5:  # BackboneMixin's 5.x conventions
        from .backbone import register_backbones

        register_backbones()
    if legacy is not None:
        logger.warning(
            "%s; NATTEN %s still has natten2dqkrpb/natten2dav, so it keeps computing the "
            "attention: pass force=True to run this toolkit's operator instead",
            status,
            natten,
        )
    else:
        logger.info("%s", status)
    return status


def restore_transformers_attention() -> None:
    """Undoes :func:`use_toolkit_attention` in this process (for comparisons and tests).

    Without a NATTEN that has ``natten2dqkrpb`` / ``natten2dav`` (0.17 and older),
    transformers' own Dinat/Nat forward cannot run; its stand-ins raise
    ``OptionalDependencyNotAvailable``, a ``BaseException`` with no message. They are
    replaced by functions that raise an ``ImportError`` saying what to do.
    """
    modules = {target for target, _ in _STATE.originals if isinstance(target, types.ModuleType)}
    for (target, name), value in _STATE.originals.items():
        setattr(target, name, value)
    _STATE.originals.clear()
    _STATE.status = None
    _STATE.natten_kernels = None
    if _legacy_natten_kernels() is None:
        for module in modules:
            for name in _NATTEN_LEGACY_NAMES:
                if hasattr(module, name):
                    setattr(module, name, _natten_missing(name))


def _natten_missing(name: str) -> Callable:
    def missing(*args, **kwargs):
        version = natten_version()
        have = f"the installed NATTEN {version} has none" if version else "NATTEN is not installed"
        raise ImportError(
            f"transformers' Dinat/Nat attention calls NATTEN's {name}, which only NATTEN 0.17 "
            f"and older have ({have}); call nattk.hf.use_toolkit_attention() to run these "
            "models on this toolkit's attention"
        )

    return missing


def attention_status() -> Optional[AttentionStatus]:
    """The status of the last :func:`use_toolkit_attention` call (``None``: not active)."""
    return _STATE.status
