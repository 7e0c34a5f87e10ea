"""Neighborhood attention on CPU through the C++ kernels of ``csrc/na2d_cpu.cpp``.

Plain forward/backward functions with the same signatures as
:mod:`.torch_backend`; :mod:`.ops` registers them as the ``cpu`` implementation of
the custom operators. The kernels take float32/float64 with a bias table of the
same dtype, so the bias is cast at the call and its gradient cast back.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from . import cpu_extension
from .indices import axis_tables, grouped_axis
from .torch_backend import softmax_with_lse

SUPPORTED_DTYPES = (torch.float32, torch.float64)
#: The fused op keeps the softmax weights for backward: on CPU, recomputing the
#: scores costs more time than the N x K weights cost memory.
KEEPS_PROBS = True


def unsupported_reason(x: torch.Tensor, dtype: torch.dtype | None = None) -> str | None:
    """Why the CPU kernels cannot serve ``x`` computed in ``dtype`` (``None`` when they can)."""
    dtype = x.dtype if dtype is None else dtype
    if x.device.type != "cpu":
        return f"tensor is on {x.device}, not CPU"
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} is not float32/float64"
    if cpu_extension.load() is None:
        return f"CPU extension {cpu_extension.status()}"
    return None


def _geometry(shape, kernel, dilation):
    """Kernel arguments for a map in its natural (row-major) layout."""
    rows = axis_tables(shape[1], kernel[0], dilation[0]).as_tuple()
    cols = axis_tables(shape[2], kernel[1], dilation[1]).as_tuple()
    return rows, cols, kernel[0], kernel[1], dilation[0], dilation[1]


def _ext():
    return cpu_extension.load()


def _rpb_like(rpb, q):
    return None if rpb is None else rpb.to(q.dtype).contiguous()


# --------------------------------------------------------------------------- QK / AV
def qk_forward(q, k, rpb, kernel, dilation, scale, geometry=None):
    """Logits ``(scale * q) . k + rpb`` (C++)."""
    geometry = geometry or _geometry(q.shape, kernel, dilation)
    return _ext().qk_forward(q.contiguous(), k.contiguous(), _rpb_like(rpb, q), *geometry, scale)


def qk_backward(grad, q, k, rpb, kernel, dilation, scale, geometry=None):
    """``(dq, dk, drpb)`` of :func:`qk_forward`; ``drpb`` is ``None`` without rpb."""
    geometry = geometry or _geometry(q.shape, kernel, dilation)
    dq, dk, drpb = _ext().qk_backward(
        grad.contiguous(), q.contiguous(), k.contiguous(), rpb is not None, *geometry, scale
    )
    return dq, dk, (None if rpb is None else drpb.to(rpb.dtype))


def av_forward(attn, v, kernel, dilation, geometry=None):
    """Weighted sum of each query's neighborhood values (C++)."""
    geometry = geometry or _geometry(v.shape, kernel, dilation)
    return _ext().av_forward(attn.to(v.dtype).contiguous(), v.contiguous(), *geometry)


def av_backward(grad, attn, v, kernel, dilation, geometry=None):
    """``(dattn, dv)`` of :func:`av_forward`, each in its input's dtype."""
    geometry = geometry or _geometry(v.shape, kernel, dilation)
    dattn, dv = _ext().av_backward(
        grad.contiguous(), attn.to(v.dtype).contiguous(), v.contiguous(), *geometry
    )
    return dattn.to(attn.dtype), dv


# --------------------------------------------------------------------------- fused
@lru_cache(maxsize=32)
def _flat_permutation(
    height: int, width: int, kernel, dilation
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (row-major) token orders: natural -> grouped and grouped -> natural."""
    rows, cols = (
        grouped_axis(length, k, d) if d > 1 else None
        for length, k, d in ((height, kernel[0], dilation[0]), (width, kernel[1], dilation[1]))
    )
    row_order = rows.order if rows else torch.arange(height)
    col_order = cols.order if cols else torch.arange(width)
    to_grouped = (row_order[:, None] * width + col_order[None, :]).reshape(-1)
    return to_grouped, torch.argsort(to_grouped)


class _Grouped:
    """Re-orders dilated axes so that every dilation group is contiguous.

    The kernels then see windows of adjacent tokens (dilation 1 in grouped
    coordinates, :func:`~.indices.grouped_axis`), which keeps large dilations
    cache-friendly. Logit slot order is unchanged by the re-ordering. Both axes are
    re-ordered in one gather over the flattened map.
    """

    def __init__(self, shape, kernel, dilation) -> None:
        self.height, self.width = shape[1], shape[2]
        self.dilated = tuple(dilation) != (1, 1)
        tables = []
        for length, k, d in (
            (shape[1], kernel[0], dilation[0]),
            (shape[2], kernel[1], dilation[1]),
        ):
            axis = grouped_axis(length, k, d).tables if d > 1 else axis_tables(length, k, 1)
            tables.append(axis.as_tuple())
        self.geometry = (*tables, kernel[0], kernel[1], 1, 1)
        if self.dilated:
            self.order, self.perm = _flat_permutation(
                shape[1], shape[2], tuple(kernel), tuple(dilation)
            )

    def _gather(self, x, index):
        flat = x.reshape(x.shape[0], self.height * self.width, *x.shape[3:])
        return flat.index_select(1, index).view(x.shape)

    def to_grouped(self, x):
        return self._gather(x, self.order) if self.dilated else x

    def to_natural(self, x):
        return self._gather(x, self.perm) if self.dilated else x


def attention_forward(q, k, v, rpb, kernel, dilation, scale):
    """Fused forward ``(out, lse, probs)``: C++ QK, softmax, C++ AV, in grouped layout.

    ``probs`` (the softmax weights) stay in the grouped layout, for the backward only.
    """
    grouped = _Grouped(q.shape, kernel, dilation)
    qg, kg, vg = (grouped.to_grouped(x) for x in (q, k, v))
    logits = qk_forward(qg, kg, rpb, kernel, dilation, scale, grouped.geometry)
    probs, lse = softmax_with_lse(logits)
    out = av_forward(probs, vg, kernel, dilation, grouped.geometry)
    return grouped.to_natural(out), grouped.to_natural(lse), probs


def attention_backward(grad_out, q, k, v, rpb, out, lse, probs, kernel, dilation, scale):
    """``(dq, dk, dv, drpb)`` of :func:`attention_forward` from the kept softmax weights."""
    grouped = _Grouped(q.shape, kernel, dilation)
    qg, kg, vg, gg = (grouped.to_grouped(x) for x in (q, k, v, grad_out))
    delta = grouped.to_grouped((grad_out * out).sum(-1, keepdim=True))
    dprobs, dv = av_backward(gg, probs, vg, kernel, dilation, grouped.geometry)
    dlogits = probs * (dprobs - delta)
    dq, dk, drpb = qk_backward(dlogits, qg, kg, rpb, kernel, dilation, scale, grouped.geometry)
    return (*(grouped.to_natural(x) for x in (dq, dk, dv)), drpb)
