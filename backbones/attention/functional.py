"""Functional neighborhood attention: input checks and backend dispatch.

Backends: one module each, listed in :data:`.registry.REGISTERED` (which says what each
serves, and whose order is ``auto``'s).

``auto`` picks the first backend of the registry's ``AUTO`` ones that can serve the call: memory stays linear in the number of tokens on every
device. The others run only when forced. The choice can be forced per call
(``backend=``), per module (its ``backend`` attribute) or process-wide (environment
variable ``NATTK_NA_BACKEND``); a forced backend that cannot serve a call raises
instead of silently falling back.

``cpu``, ``torch`` and ``triton`` run through the custom operators of :mod:`.ops`
(``torch.ops.nattk.*``), which is what makes them work under autocast,
``torch.compile(fullgraph=True)``, ``torch.export`` and ONNX export.

Dtypes: q, k and v share one dtype (under autocast they are cast to the autocast
dtype, as ``scaled_dot_product_attention`` does). The bias table may be of any
floating dtype: it is added to the scores in fp32 and receives its gradient in its
own dtype, so an fp32 parameter gets fp32 gradients under mixed precision.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch

from . import ops, registry  # noqa: F401 (ops registers the operators)
from .backend_api import Call

IntPair = Union[int, Sequence[int]]

#: What ``backend=`` accepts (the registered backends and ``auto``).
BACKENDS = ("auto", *(module.NAME for module in registry.REGISTERED))
ENV_VAR = "NATTK_NA_BACKEND"


def to_pair(value: IntPair, name: str) -> tuple[int, int]:
    """Normalises an int or a per-axis pair to a tuple of two positive ints.

    Raises:
        ValueError: If ``value`` is not an int / pair of ints, or not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def _check_tensor(name: str, x, like: Optional[torch.Tensor] = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(
            f"{name} must be laid out [batch, height, width, heads, head_dim] (5-D), "
            f"got shape {tuple(x.shape)}"
        )
    if like is not None:
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but q is on {like.device}")
        if x.dtype != like.dtype and not _autocasts(x) and not _autocasts(like):
            raise ValueError(
                f"{name} is {x.dtype} but q is {like.dtype}; pass one dtype, or run under "
                "torch.autocast"
            )


def _autocasts(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device (the operators then cast q, k, v).

    Never on the ``meta`` device (shape-only passes), which autocast does not know.
    """
    if not x.is_floating_point() or x.device.type == "meta":
        return False
    return torch.is_autocast_enabled(x.device.type)


def _check_map(x: torch.Tensor, kernel, dilation) -> None:
    height, width = x.shape[1], x.shape[2]
    if height < kernel[0] * dilation[0] or width < kernel[1] * dilation[1]:
        raise ValueError(
            f"kernel_size {kernel} x dilation {dilation} = "
            f"{(kernel[0] * dilation[0], kernel[1] * dilation[1])} is larger than the "
            f"feature map {(height, width)}; pad the input first "
            "(NeighborhoodAttention2D pads small maps automatically)"
        )


def _check_rpb(rpb, q: torch.Tensor, kernel) -> None:
    if rpb is None:
        return
    if not isinstance(rpb, torch.Tensor):
        raise ValueError(f"rpb must be a torch.Tensor or None, got {type(rpb).__name__}")
    if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
        raise ValueError(f"rpb requires an odd kernel_size, got {kernel}")
    expected = (q.shape[3], 2 * kernel[0] - 1, 2 * kernel[1] - 1)
    if tuple(rpb.shape) != expected:
        raise ValueError(
            f"rpb must have shape [heads, 2*k-1, 2*k-1] = {expected}, got {tuple(rpb.shape)}"
        )
    if rpb.device != q.device:
        raise ValueError(f"rpb is on {rpb.device} but q is on {q.device}")
    if not rpb.is_floating_point():
        raise ValueError(f"rpb must be a floating-point tensor, got {rpb.dtype}")


def _check_qk(
    q, k, kernel_size, dilation, rpb, scale
) -> tuple[tuple[int, int], tuple[int, int], float]:
    """Validates the QK inputs; returns (kernel, dilation, scale) normalised."""
    kernel, dil = to_pair(kernel_size, "kernel_size"), to_pair(dilation, "dilation")
    _check_tensor("q", q)
    _check_tensor("k", k, like=q)
    if k.shape != q.shape:
        raise ValueError(
            f"q, k and v must have the same shape, got {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    _check_map(q, kernel, dil)
    _check_rpb(rpb, q, kernel)
    return kernel, dil, q.shape[-1] ** -0.5 if scale is None else float(scale)


def compute_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype the attention runs in: the autocast dtype under autocast, else q's."""
    if q.dtype != torch.float64 and _autocasts(q):
        return torch.get_autocast_dtype(q.device.type)
    return q.dtype


def unsupported_reason(
    backend: str, q: torch.Tensor, rpb: Optional[torch.Tensor], dtype: Optional[torch.dtype] = None
) -> Optional[str]:
    """Why ``backend`` cannot serve a call on ``q`` computed in ``dtype`` (``None`` when it can).

    Raises:
        ValueError: Unknown backend name.
    """
    call = Call(q, q.dtype if dtype is None else dtype, rpb is not None)
    return registry.active().get(backend).unsupported_reason(call)


def resolve_backend(
    backend: Optional[str],
    q: torch.Tensor,
    rpb: Optional[torch.Tensor],
    candidates: Optional[Sequence[str]] = None,
) -> str:
    """Chooses the backend for one call.

    Args:
        backend: ``"auto"``/``None`` or a backend name. ``"auto"`` defers to the
            ``NATTK_NA_BACKEND`` environment variable when it is set.
        q: The query tensor (its device and dtype decide; under autocast, the
            autocast dtype).
        rpb: The bias table or ``None``.
        candidates: Backends that can compute this kind of call (``None``: those with
            the fused op); ``auto`` tries those of them in :data:`.registry.REGISTERED`'s order.

    Raises:
        ValueError: Unknown backend name.
        RuntimeError: A forced backend that cannot serve the call.
    """
    name = backend or "auto"
    if name == "auto":
        name = os.environ.get(ENV_VAR, "auto") or "auto"
    backends = registry.active()
    if name != "auto":
        backends.get(name)  # raises ValueError for an unknown name
    if candidates is None:
        candidates = backends.fused
    call = Call(q, compute_dtype(q), rpb is not None)
    if name != "auto":
        if name not in candidates:
            raise RuntimeError(
                f"backend {name!r} cannot compute this op (choose from {tuple(candidates)})"
            )
        reason = backends.get(name).unsupported_reason(call)
        if reason is not None:
            raise RuntimeError(
                f"neighborhood-attention backend {name!r} cannot run this call: {reason}"
            )
        return name
    for candidate in backends.auto_order:
        if candidate in candidates and backends.get(candidate).unsupported_reason(call) is None:
            return candidate
    return "torch"


def na2d_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    kernel_size: IntPair,
    dilation: IntPair = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    backend: Optional[str] = "auto",
) -> torch.Tensor:
    """Neighborhood attention logits ``(scale * q) . k + rpb``.

    Args:
        q: ``[B, H, W, heads, D]`` queries.
        k: Keys, shaped like ``q``.
        kernel_size: Window size, int or ``(rows, cols)``.
        dilation: Dilation, int or ``(rows, cols)``.
        rpb: Optional ``[heads, 2*k_rows-1, 2*k_cols-1]`` relative position bias.
        scale: Multiplies q before the dot product; default ``D ** -0.5``.
        backend: ``"auto"`` or a backend with the unfused ops (``"cpu"``, ``"torch"``).

    Returns:
        ``[B, H, W, heads, k_rows * k_cols]`` logits, window slots in row-major order.
    """
    kernel, dil, scale = _check_qk(q, k, kernel_size, dilation, rpb, scale)
    name = resolve_backend(backend, q, rpb, candidates=registry.active().unfused)
    return torch.ops.nattk.na2d_qk(q, k, rpb, list(kernel), list(dil), scale, name)


def na2d_av(
    attn: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntPair,
    dilation: IntPair = 1,
    backend: Optional[str] = "auto",
) -> torch.Tensor:
    """Weighted sum of each query's neighborhood values.

    Args:
        attn: ``[B, H, W, heads, k_rows * k_cols]`` attention weights, any floating
            dtype (cast to v's dtype; under autocast both go to the autocast dtype).
        v: ``[B, H, W, heads, D]`` values.
        kernel_size: Window size, int or ``(rows, cols)``.
        dilation: Dilation, int or ``(rows, cols)``.
        backend: ``"auto"`` or a backend with the unfused ops (``"cpu"``, ``"torch"``).

    Returns:
        ``[B, H, W, heads, D]``.
    """
    kernel, dil = to_pair(kernel_size, "kernel_size"), to_pair(dilation, "dilation")
    _check_tensor("v", v)
    _check_tensor("attn", attn)
    if attn.device != v.device or not attn.is_floating_point():
        raise ValueError(
            f"attn must be a floating-point tensor on {v.device}, got {attn.dtype} on {attn.device}"
        )
    expected = (*v.shape[:4], kernel[0] * kernel[1])
    if tuple(attn.shape) != expected:
        raise ValueError(f"attn must have shape {expected}, got {tuple(attn.shape)}")
    _check_map(v, kernel, dil)
    name = resolve_backend(backend, v, None, candidates=registry.active().unfused)
    return torch.ops.nattk.na2d_av(attn, v, list(kernel), list(dil), name)


def neighborhood_attention_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntPair,
    dilation: IntPair = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    backend: Optional[str] = "auto",
) -> torch.Tensor:
    """2-D (dilated) neighborhood attention with optional relative position bias.

    Each query attends to the ``k_rows x k_cols`` keys of its dilation group nearest
    to it, the window shifted inwards at the borders (NATTEN semantics; see
    :mod:`.indices`): ``softmax((scale * q) . k + rpb) v``.

    Args:
        q: ``[B, H, W, heads, D]`` queries (NATTEN's fused layout).
        k: Keys, shaped like ``q``.
        v: Values, shaped like ``q``.
        kernel_size: Window size, int or ``(rows, cols)``; odd when ``rpb`` is given.
        dilation: Dilation, int or ``(rows, cols)``. ``kernel_size * dilation`` must
            not exceed the map (the module pads small maps; this op does not).
        rpb: Optional ``[heads, 2*k_rows-1, 2*k_cols-1]`` relative position bias.
        scale: Multiplies q before the dot product; default ``D ** -0.5``.
        backend: ``"auto"`` or a backend name (:data:`BACKENDS`).

    Returns:
        A tensor shaped like ``q``.

    Raises:
        ValueError: Malformed inputs (rank, shapes, dtypes, kernel/dilation, rpb).
        RuntimeError: A forced backend that cannot serve the call.
    """
    _check_tensor("q", q)
    _check_tensor("v", v, like=q)
    if v.shape != q.shape:
        raise ValueError(
            f"q, k and v must have the same shape, got {tuple(q.shape)} and v {tuple(v.shape)}"
        )
    kernel, dil, scale = _check_qk(q, k, kernel_size, dilation, rpb, scale)
    name = resolve_backend(backend, q, rpb)
    impl = registry.active().get(name)
    if not impl.IN_OPERATOR:
        # Not our operators: apply autocast's cast here.
        dtype = compute_dtype(q)
        q, k, v = (x.to(dtype) for x in (q, k, v))
        return impl.attention(q, k, v, kernel, dil, rpb, scale)
    if _plain_eager_inference(q, k, v, rpb):
        # What the operator would run, without its dispatch (about 40 us a call, which a
        # 14 x 14 map notices): nothing here needs autograd, autocast or tracing.
        return impl.attention_forward(q, k, v, rpb, kernel, dil, scale)[0]
    out, _, _ = torch.ops.nattk.na2d(q, k, v, rpb, list(kernel), list(dil), scale, name)
    return out


def _plain_eager_inference(*tensors: Optional[torch.Tensor]) -> bool:
    """No gradient, autocast, compile, export or tracing can see this call."""
    x = tensors[0]
    return (
        not torch.is_grad_enabled()
        and not _autocasts(x)
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and all(t is None or type(t) is torch.Tensor for t in tensors)
    )


def backend_report(device: Union[str, torch.device] = "cpu") -> dict:
    """``{backend: None or reason}`` for a float32 call, over every registered backend.

    ``None`` when the backend can run such a call with a bias table or without one
    (NATTEN has none); otherwise its reason for the call without.
    """
    probe = torch.empty(1, 1, 1, 1, 8, device=device)
    report = {}
    for module in registry.active().modules:
        with_rpb = module.unsupported_reason(Call(probe, probe.dtype, has_rpb=True))
        without = module.unsupported_reason(Call(probe, probe.dtype, has_rpb=False))
        report[module.NAME] = None if with_rpb is None else without
    return report
