"""NATTEN >= 0.20 fused kernels, for layers without relative position bias, on CUDA."""

from __future__ import annotations

import importlib

import torch

from .backend_api import Call

NAME = "natten"
AUTO = True
FUSED = True
UNFUSED = False
KEEPS_PROBS = False
#: NATTEN's own operators, called directly.
IN_OPERATOR = False
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_natten = None
_import_error: str | None = None


def _load():
    global _natten, _import_error
    if _natten is None and _import_error is None:
        try:
            _natten = importlib.import_module("natten")
        except Exception as exc:  # ImportError or a broken install
            _import_error = f"{type(exc).__name__}: {exc}"
    return _natten


def unsupported_reason(call: Call) -> str | None:
    """Why NATTEN cannot serve ``call`` (``None`` when it can)."""
    if call.has_rpb:
        return "NATTEN >= 0.20 has no relative position bias"
    if call.device.type != "cuda":
        return "NATTEN's kernels have no CPU backward; the natten backend needs CUDA"
    if _load() is None:
        return f"natten is not importable ({_import_error})"
    if call.head_dim % 8 or call.dtype not in SUPPORTED_DTYPES:
        return (
            f"NATTEN needs head_dim % 8 == 0 and fp16/bf16/fp32, got {call.head_dim}, {call.dtype}"
        )
    return None


def version() -> str | None:
    """Installed NATTEN version, or ``None``."""
    module = _load()
    return getattr(module, "__version__", "unknown") if module is not None else None


def attention(q, k, v, kernel, dilation, rpb, scale):
    """``natten.na2d`` on ``[B, H, W, heads, D]`` tensors (``rpb`` must be ``None``)."""
    if rpb is not None:
        raise ValueError("the natten backend has no relative position bias")
    return _load().na2d(q, k, v, kernel_size=tuple(kernel), dilation=tuple(dilation), scale=scale)
