"""NATTEN >= 0.20 fused kernels, for layers without relative position bias, on CUDA."""

from __future__ import annotations

import importlib

import torch

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


def unsupported_reason(q: torch.Tensor, rpb: torch.Tensor | None) -> str | None:
    """Why NATTEN cannot serve this call (``None`` when it can)."""
    if rpb is not None:
        return "NATTEN >= 0.20 has no relative position bias"
    if q.device.type != "cuda":
        return "NATTEN's kernels have no CPU backward; the natten backend needs CUDA"
    if _load() is None:
        return f"natten is not importable ({_import_error})"
    return None


def version() -> str | None:
    """Installed NATTEN version, or ``None``."""
    module = _load()
    return getattr(module, "__version__", "unknown") if module is not None else None


def attention(q, k, v, kernel, dilation, scale):
    """``natten.na2d`` on ``[B, H, W, heads, D]`` tensors."""
    return _load().na2d(q, k, v, kernel_size=tuple(kernel), dilation=tuple(dilation), scale=scale)
