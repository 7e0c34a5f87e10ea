"""Neighborhood attention as real PyTorch operators (``torch.ops.nattk.*``).

Three forward operators, each with a backward operator, fake (meta) kernels and
registered autograd, so that ``torch.compile(fullgraph=True)``, ``torch.export``
and AOTAutograd see them as single opaque nodes with known output shapes:

==========================  ===========================================================
``nattk::na2d``             fused ``softmax((scale*q) . k + rpb) v``; returns
                            ``(out, lse, probs)``: the fp32 log-sum-exp per query,
                            and the softmax weights for implementations that keep
                            them for backward (``cpu``; empty for those that
                            recompute them from ``lse``)
``nattk::na2d_qk``          logits ``(scale*q) . k + rpb``, ``[B, H, W, heads, K]``
``nattk::na2d_av``          ``sum_t attn[..., t] * v[key_t]``
==========================  ===========================================================

Every index table is built inside the kernels (outside any traced code), so a new
map size never adds data-dependent operations to a graph.

The last argument, ``backend``, names the implementation: a registered backend with
``IN_OPERATOR`` (:mod:`.registry`): ``"cpu"`` (C++ kernels) or ``"torch"`` (chunked
pure PyTorch, any device) or, for ``nattk::na2d`` only, ``"triton"`` (fused Triton
kernels, CUDA). Choosing it is the job of
:func:`~.functional.resolve_backend`; the operators only run what they are told.

Mixed precision: under ``torch.autocast`` the operators behave like
``scaled_dot_product_attention``: q, k, v (and the attention weights of
``na2d_av``) are cast to the autocast dtype. The bias table is never cast by
autocast: the kernels read it in its own dtype (normally the fp32 parameter), add
it to the scores in fp32 and return its gradient in fp32. Scores, softmax and the
log-sum-exp are always computed in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import registry, torch_backend


def _impl(backend: str):
    return registry.active().operator_backend(backend)


def _kernel(x: Tensor, backend: str):
    """The implementation module, entered with autocast off on ``x``'s device.

    Kernels decide their own precision; autocast must not re-cast their internals.
    """
    return _impl(backend), torch.autocast(x.device.type, enabled=False)


def _empty_if_none(rpb: Optional[Tensor], like: Tensor) -> Tensor:
    return like.new_empty(0) if rpb is None else rpb


# --------------------------------------------------------------------------- fused
@torch.library.custom_op("nattk::na2d", mutates_args=())
def na2d(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rpb: Optional[Tensor],
    kernel_size: list[int],
    dilation: list[int],
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused neighborhood attention; returns ``(out, lse, probs)``."""
    impl, no_autocast = _kernel(q, backend)
    with no_autocast:
        return impl.attention_forward(q, k, v, rpb, kernel_size, dilation, scale)


@na2d.register_fake
def _(q, k, v, rpb, kernel_size, dilation, scale, backend):
    acc = torch_backend.acc_dtype(q.dtype)
    n_keys = kernel_size[0] * kernel_size[1]
    probs_shape = (*q.shape[:4], n_keys) if _impl(backend).KEEPS_PROBS else (0,)
    return (
        torch.empty_like(q),
        q.new_empty(q.shape[:4], dtype=acc),
        q.new_empty(probs_shape, dtype=acc),
    )


@torch.library.custom_op("nattk::na2d_backward", mutates_args=())
def na2d_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rpb: Optional[Tensor],
    out: Tensor,
    lse: Tensor,
    probs: Tensor,
    kernel_size: list[int],
    dilation: list[int],
    scale: float,
    backend: str,
    rpb_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, drpb)`` of :func:`na2d`; ``drpb`` is empty without rpb or when
    ``rpb_grad`` is false (a frozen bias: the kernels then skip its gradient).

    ``rpb_grad`` has a default so that a graph compiled before it existed (torch.compile's
    on-disk caches keep the backward's calls) still runs, as it did then.
    """
    impl, no_autocast = _kernel(q, backend)
    rpb_grad = rpb is not None and rpb_grad
    with no_autocast:
        dq, dk, dv, drpb = impl.attention_backward(
            grad_out, q, k, v, rpb, out, lse, probs, kernel_size, dilation, scale, rpb_grad
        )
    return dq, dk, dv, _empty_if_none(drpb if rpb_grad else None, q)


@na2d_backward.register_fake
def _(
    grad_out, q, k, v, rpb, out, lse, probs, kernel_size, dilation, scale, backend, rpb_grad=True
):
    drpb = torch.empty_like(rpb) if rpb is not None and rpb_grad else q.new_empty(0)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), drpb


def _na2d_setup_context(ctx, inputs, output):
    q, k, v, rpb, kernel_size, dilation, scale, backend = inputs
    out, lse, probs = output
    ctx.mark_non_differentiable(lse, probs)
    ctx.save_for_backward(q, k, v, rpb, out, lse, probs)
    ctx.args = (kernel_size, dilation, scale, backend)


def _na2d_autograd(ctx, grad_out, _grad_lse, _grad_probs):
    q, k, v, rpb, out, lse, probs = ctx.saved_tensors
    rpb_grad = rpb is not None and ctx.needs_input_grad[3]
    dq, dk, dv, drpb = na2d_backward(
        grad_out.contiguous(), q, k, v, rpb, out, lse, probs, *ctx.args, rpb_grad
    )
    return dq, dk, dv, (drpb if rpb_grad else None), None, None, None, None


na2d.register_autograd(_na2d_autograd, setup_context=_na2d_setup_context)


# --------------------------------------------------------------------------- QK
@torch.library.custom_op("nattk::na2d_qk", mutates_args=())
def na2d_qk(
    q: Tensor,
    k: Tensor,
    rpb: Optional[Tensor],
    kernel_size: list[int],
    dilation: list[int],
    scale: float,
    backend: str,
) -> Tensor:
    """Neighborhood logits ``[B, H, W, heads, K]`` in q's dtype."""
    impl, no_autocast = _kernel(q, backend)
    with no_autocast:
        return impl.qk_forward(q, k, rpb, kernel_size, dilation, scale)


@na2d_qk.register_fake
def _(q, k, rpb, kernel_size, dilation, scale, backend):
    return q.new_empty(*q.shape[:4], kernel_size[0] * kernel_size[1])


@torch.library.custom_op("nattk::na2d_qk_backward", mutates_args=())
def na2d_qk_backward(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    rpb: Optional[Tensor],
    kernel_size: list[int],
    dilation: list[int],
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, drpb)`` of :func:`na2d_qk`; ``drpb`` is empty without rpb."""
    impl, no_autocast = _kernel(q, backend)
    with no_autocast:
        dq, dk, drpb = impl.qk_backward(grad, q, k, rpb, kernel_size, dilation, scale)
    return dq, dk, _empty_if_none(drpb, q)


@na2d_qk_backward.register_fake
def _(grad, q, k, rpb, kernel_size, dilation, scale, backend):
    drpb = q.new_empty(0) if rpb is None else torch.empty_like(rpb)
    return torch.empty_like(q), torch.empty_like(k), drpb


def _qk_setup_context(ctx, inputs, output):
    q, k, rpb, kernel_size, dilation, scale, backend = inputs
    ctx.save_for_backward(q, k, rpb)
    ctx.args = (kernel_size, dilation, scale, backend)


def _qk_autograd(ctx, grad):
    q, k, rpb = ctx.saved_tensors
    dq, dk, drpb = na2d_qk_backward(grad.contiguous(), q, k, rpb, *ctx.args)
    return dq, dk, (None if rpb is None else drpb), None, None, None, None


na2d_qk.register_autograd(_qk_autograd, setup_context=_qk_setup_context)


# --------------------------------------------------------------------------- AV
@torch.library.custom_op("nattk::na2d_av", mutates_args=())
def na2d_av(
    attn: Tensor, v: Tensor, kernel_size: list[int], dilation: list[int], backend: str
) -> Tensor:
    """Weighted sum of each query's neighborhood values, in v's dtype."""
    impl, no_autocast = _kernel(v, backend)
    with no_autocast:
        return impl.av_forward(attn, v, kernel_size, dilation)


@na2d_av.register_fake
def _(attn, v, kernel_size, dilation, backend):
    return torch.empty_like(v)


@torch.library.custom_op("nattk::na2d_av_backward", mutates_args=())
def na2d_av_backward(
    grad: Tensor,
    attn: Tensor,
    v: Tensor,
    kernel_size: list[int],
    dilation: list[int],
    backend: str,
) -> tuple[Tensor, Tensor]:
    """``(dattn, dv)`` of :func:`na2d_av`, each in its input's dtype."""
    impl, no_autocast = _kernel(v, backend)
    with no_autocast:
        return impl.av_backward(grad, attn, v, kernel_size, dilation)


@na2d_av_backward.register_fake
def _(grad, attn, v, kernel_size, dilation, backend):
    return torch.empty_like(attn), torch.empty_like(v)


def _av_setup_context(ctx, inputs, output):
    attn, v, kernel_size, dilation, backend = inputs
    ctx.save_for_backward(attn, v)
    ctx.args = (kernel_size, dilation, backend)


def _av_autograd(ctx, grad):
    attn, v = ctx.saved_tensors
    dattn, dv = na2d_av_backward(grad.contiguous(), attn, v, *ctx.args)
    return dattn, dv, None, None, None


na2d_av.register_autograd(_av_autograd, setup_context=_av_setup_context)


# --------------------------------------------------------------------------- autocast
# Positions of the arguments autocast casts (like SDPA's q, k, v); rpb is never one.
_AUTOCAST_ARGS = {"na2d": (0, 1, 2), "na2d_qk": (0, 1), "na2d_av": (0, 1)}
# Private dispatcher API (torch._C; CI runs torch 2.13): no public API registers an
# autocast kernel that reads the autocast dtype at call time.
_PRIVATE_DISPATCH_API = ("_dispatch_key_for_device", "_ExcludeDispatchKeyGuard", "DispatchKeySet")


def _check_private_dispatch_api(c_module=torch._C) -> None:
    """Raises ``RuntimeError`` naming the private torch API this torch lacks."""
    missing = [name for name in _PRIVATE_DISPATCH_API if not hasattr(c_module, name)]
    if missing:
        raise RuntimeError(
            f"torch {torch.__version__} lacks torch._C.{', torch._C.'.join(missing)}, which the "
            "nattk operators use to register their autocast rule; CI runs torch 2.13 (the "
            "version pinned in requirements/constraints.txt)"
        )


def _register_autocast(name: str, positions, device_type: str) -> None:
    """Casts ``positions`` to the *current* autocast dtype, then runs the op without autocast.

    ``torch.library.register_autocast`` takes one fixed dtype; autocast users pick
    fp16 or bf16 per run, so the dtype is read at call time instead.
    """
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    dispatch_key = getattr(torch._C.DispatchKey, key)
    overload = getattr(torch.ops.nattk, name).default

    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)
        args = list(args)
        for i in positions:
            x = args[i]
            if x.is_floating_point() and x.device.type == device_type and x.dtype != torch.float64:
                args[i] = x.to(dtype)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(dispatch_key)):
            return overload(*args)

    _LIB.impl(name, kernel, key, with_keyset=True)


_check_private_dispatch_api()
_LIB = torch.library.Library("nattk", "IMPL")
for _name, _positions in _AUTOCAST_ARGS.items():
    for _device_type in ("cpu", "cuda"):
        _register_autocast(_name, _positions, _device_type)
