"""Neighborhood attention on CPU through the C++ kernels of ``csrc/na2d_cpu.cpp``.

Plain forward/backward functions with the same signatures as
:mod:`.torch_backend`; :mod:`.ops` registers them as the ``cpu`` implementation of
the custom operators. The kernels take float32/float64 with a bias table of the
same dtype, so the bias is cast at the call and its gradient cast back.
"""

from __future__ import annotations

import torch

from . import cpu_extension
from .backend_api import Call, as_call
from .indices import axis_tables

NAME = "cpu"
AUTO = True
FUSED = True
UNFUSED = True
IN_OPERATOR = True
#: The fused op keeps the softmax weights for backward: on CPU, recomputing the
#: scores costs more time than the N x K weights cost memory.
KEEPS_PROBS = True
SUPPORTED_DTYPES = (torch.float32, torch.float64)


def unsupported_reason(call: Call | torch.Tensor) -> str | None:
    """Why the CPU kernels cannot serve ``call`` (``None`` when they can)."""
    call = as_call(call)
    if call.device.type != "cpu":
        return f"tensor is on {call.device}, not CPU"
    if call.dtype not in SUPPORTED_DTYPES:
        return f"dtype {call.dtype} is not float32/float64"
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
def attention_forward(q, k, v, rpb, kernel, dilation, scale):
    """Fused forward ``(out, lse, probs)`` in one C++ pass per query: QK(+rpb), softmax,
    log-sum-exp and AV, reading q/k/v in their own strides and dilated windows in place.

    ``probs`` (the softmax weights) are kept for the backward.
    """
    out, lse, probs = _ext().fused_forward(
        q, k, v, _rpb_like(rpb, q), *_geometry(q.shape, kernel, dilation), scale
    )
    return out, lse, probs


def attention_backward(
    grad_out, q, k, v, rpb, out, lse, probs, kernel, dilation, scale, rpb_grad: bool = True
):
    """``(dq, dk, dv, drpb)`` of :func:`attention_forward` from the kept softmax weights;
    ``drpb`` is ``None`` without a bias or when ``rpb_grad`` is false."""
    rpb_grad = rpb is not None and rpb_grad
    dq, dk, dv, drpb = _ext().fused_backward(
        grad_out, q, k, v, out, probs, rpb_grad, *_geometry(q.shape, kernel, dilation), scale
    )
    return dq, dk, dv, (drpb.to(rpb.dtype) if rpb_grad else None)
