"""Neighborhood attention on CPU through the C++ kernels of ``csrc/na2d_cpu.cpp``."""

from __future__ import annotations

import torch

from . import cpu_extension
from .indices import axis_tables, grouped_axis

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def unsupported_reason(x: torch.Tensor) -> str | None:
    """Why the CPU kernels cannot serve ``x`` (``None`` when it can)."""
    if x.device.type != "cpu":
        return f"tensor is on {x.device}, not CPU"
    if x.dtype not in SUPPORTED_DTYPES:
        return f"dtype {x.dtype} is not float32/float64"
    if cpu_extension.load() is None:
        return f"CPU extension {cpu_extension.status()}"
    return None


def _geometry(shape, kernel, dilation):
    """Kernel arguments for a map in its natural (row-major) layout."""
    rows = axis_tables(shape[1], kernel[0], dilation[0]).as_tuple()
    cols = axis_tables(shape[2], kernel[1], dilation[1]).as_tuple()
    return rows, cols, kernel[0], kernel[1], dilation[0], dilation[1]


class CpuQK(torch.autograd.Function):
    """C++ version of :class:`~.torch_backend.TorchQK` (takes precomputed geometry)."""

    @staticmethod
    def forward(ctx, q, k, rpb, geometry, scale):
        ctx.save_for_backward(q, k)
        ctx.geometry = geometry
        ctx.scale = scale
        ctx.with_rpb = rpb is not None
        return cpu_extension.load().qk_forward(q, k, rpb, *geometry, scale)

    @staticmethod
    def backward(ctx, grad):
        q, k = ctx.saved_tensors
        dq, dk, drpb = cpu_extension.load().qk_backward(
            grad, q, k, ctx.with_rpb, *ctx.geometry, ctx.scale
        )
        return dq, dk, (drpb if ctx.with_rpb else None), None, None


class CpuAV(torch.autograd.Function):
    """C++ version of :class:`~.torch_backend.TorchAV` (takes precomputed geometry)."""

    @staticmethod
    def forward(ctx, attn, v, geometry):
        ctx.save_for_backward(attn, v)
        ctx.geometry = geometry
        return cpu_extension.load().av_forward(attn, v, *geometry)

    @staticmethod
    def backward(ctx, grad):
        attn, v = ctx.saved_tensors
        dattn, dv = cpu_extension.load().av_backward(grad, attn, v, *ctx.geometry)
        return dattn, dv, None


def qk(q, k, rpb, kernel, dilation, scale):
    """Neighborhood logits with the C++ CPU kernels."""
    return CpuQK.apply(q, k, rpb, _geometry(q.shape, kernel, dilation), scale)


def av(attn, v, kernel, dilation):
    """Neighborhood weighted sum with the C++ CPU kernels."""
    return CpuAV.apply(attn, v, _geometry(v.shape, kernel, dilation))


class _Permute(torch.autograd.Function):
    """``x.index_select(dim, index)`` for a permutation: the gradient is a gather too."""

    @staticmethod
    def forward(ctx, x, dim, index, inverse):
        ctx.dim, ctx.inverse = dim, inverse
        return x.index_select(dim, index)

    @staticmethod
    def backward(ctx, grad):
        return grad.index_select(ctx.dim, ctx.inverse), None, None, None


def attention(q, k, v, kernel, dilation, rpb, scale):
    """Full neighborhood attention: C++ QK, ATen softmax, C++ AV.

    Dilated axes are first re-ordered so that every dilation group is contiguous
    (:func:`~.indices.grouped_axis`); the kernels then see windows of adjacent
    tokens, which keeps large dilations cache-friendly. The result is re-ordered back.
    """
    if dilation == (1, 1):
        attn = qk(q, k, rpb, kernel, dilation, scale).softmax(dim=-1)
        return av(attn, v, kernel, dilation)
    rows = grouped_axis(q.shape[1], kernel[0], dilation[0])
    cols = grouped_axis(q.shape[2], kernel[1], dilation[1])

    def regroup(x, inverse=False):
        for dim, axis, dil in ((1, rows, dilation[0]), (2, cols, dilation[1])):
            if dil > 1:
                index, back = (axis.perm, axis.order) if inverse else (axis.order, axis.perm)
                x = _Permute.apply(x, dim, index, back)
        return x

    geometry = (rows.tables.as_tuple(), cols.tables.as_tuple(), kernel[0], kernel[1], 1, 1)
    qg, kg, vg = (regroup(x) for x in (q, k, v))
    attn = CpuQK.apply(qg, kg, rpb, geometry, scale).softmax(dim=-1)
    return regroup(CpuAV.apply(attn, vg, geometry), inverse=True)
