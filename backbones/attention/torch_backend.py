"""Pure-PyTorch neighborhood attention (the reference backend).

Runs on any device and dtype. These are plain functions (forward and backward of
each op); :mod:`.ops` registers them as the ``torch`` implementation of the custom
operators, which own autograd.

Memory stays linear in the number of tokens: the gathered keys/values (``K`` copies
of each token) exist one chunk of query rows at a time, and the fused op keeps
only its inputs, its output and a per-query log-sum-exp for the backward pass,
recomputing the scores there as flash-attention does.

Precision: scores, softmax, log-sum-exp and the bias gradient are fp32 whatever the
input dtype (fp64 inputs stay fp64); key/value gradients accumulate in fp32 and are
returned in their input's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch

from .backend_api import Call
from .indices import grid_indices

NAME = "torch"
AUTO = True
FUSED = True
UNFUSED = True
IN_OPERATOR = True
#: The fused op recomputes the softmax in backward (memory linear in tokens).
KEEPS_PROBS = False
_CHUNK_BYTES = 64 * 2**20


def unsupported_reason(call: Call) -> Optional[str]:
    """Never a reason: the reference backend serves every device and dtype."""
    return None


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype for inputs of ``dtype``: fp32, or fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def softmax_with_lse(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(logits), logsumexp(logits))`` over the last dim, reusing ``logits``' memory.

    As cheap as one softmax (``logsumexp`` followed by ``exp`` costs about twice as much).
    """
    peak = logits.amax(dim=-1, keepdim=True)
    probs = logits.sub_(peak).exp_()
    total = probs.sum(dim=-1, keepdim=True)
    return probs.div_(total), (peak + total.log()).squeeze(-1)


def probs_from_lse(logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """``exp(logits - lse)`` (the softmax recomputed in backward), in ``logits``' memory."""
    return logits.sub_(lse.unsqueeze(-1)).exp_()


def _row_chunks(x: torch.Tensor, n_keys: int):
    """Yields ``slice`` objects over the rows of ``x`` ([B, H, W, heads, D])."""
    batch, height, width, heads, dim = x.shape
    per_row = batch * width * n_keys * heads * dim * 4  # the fp32 temporaries dominate
    step = max(1, _CHUNK_BYTES // max(per_row, 1))
    for top in range(0, height, step):
        yield slice(top, min(top + step, height))


def _gather(x_flat: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``x_flat`` [B, N, heads, D], ``keys`` [h, W, K] -> [B, h, W, K, heads, D]."""
    batch, _, heads, dim = x_flat.shape
    return x_flat[:, keys.reshape(-1)].view(batch, *keys.shape, heads, dim)


def _scatter_add(out_flat: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Adds ``values`` [B, h, W, K, heads, D] into ``out_flat`` [B, N, heads, D] at ``keys``."""
    batch, _, heads, dim = out_flat.shape
    values = values.reshape(batch, -1, heads, dim).to(out_flat.dtype)
    out_flat.index_add_(1, keys.reshape(-1), values)


def _bias(rpb: torch.Tensor, bias_idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """rpb [heads, P0, P1] gathered at bias_idx [h, W, K] -> [h, W, heads, K] in ``dtype``."""
    return rpb.flatten(1).to(dtype)[:, bias_idx].permute(1, 2, 0, 3)


def _add_bias_grad(drpb: torch.Tensor, dlogits: torch.Tensor, bias_idx: torch.Tensor) -> None:
    """drpb [heads, P] += dlogits [B, h, W, heads, K] summed at bias_idx [h, W, K]."""
    heads = dlogits.shape[3]
    per_head = dlogits.sum(0).permute(2, 0, 1, 3).reshape(heads, -1).to(drpb.dtype)
    drpb.index_add_(1, bias_idx.reshape(-1), per_head)


class _Geometry:
    """Shapes and index tables of one call."""

    def __init__(self, x: torch.Tensor, kernel, dilation) -> None:
        self.batch, self.height, self.width, self.heads, self.dim = x.shape
        self.kernel, self.dilation = tuple(kernel), tuple(dilation)
        self.n_keys = self.kernel[0] * self.kernel[1]
        self.device = x.device

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.batch, self.height * self.width, self.heads, self.dim)

    def chunks(self, x: torch.Tensor):
        """Yields ``(rows, keys, bias_idx)`` per chunk of query rows."""
        for rows in _row_chunks(x, self.n_keys):
            keys, bias = grid_indices(
                self.height, self.width, self.kernel, self.dilation, self.device, rows
            )
            yield rows, keys, bias


def _scores(q_rows, k_flat, keys, rpb, bias_idx, scale, dtype):
    """Logits of a chunk of query rows, ``[B, h, W, heads, K]`` in ``dtype``."""
    logits = torch.einsum("bhwnd,bhwknd->bhwnk", q_rows * scale, _gather(k_flat, keys))
    logits = logits.to(dtype)
    if rpb is not None:
        logits = logits + _bias(rpb, bias_idx, dtype)
    return logits


# --------------------------------------------------------------------------- QK
def qk_forward(q, k, rpb, kernel, dilation, scale) -> torch.Tensor:
    """Logits ``(scale * q) . k + rpb`` in q's dtype (the bias is added in fp32)."""
    geo = _Geometry(q, kernel, dilation)
    k_flat = geo.flat(k)
    logits = q.new_empty(*q.shape[:4], geo.n_keys)
    for rows, keys, bias in geo.chunks(q):
        logits[:, rows] = _scores(q[:, rows], k_flat, keys, rpb, bias, scale, acc_dtype(q.dtype))
    return logits


def qk_backward(grad, q, k, rpb, kernel, dilation, scale):
    """``(dq, dk, drpb)`` of :func:`qk_forward`; ``drpb`` is ``None`` without rpb."""
    geo = _Geometry(q, kernel, dilation)
    k_flat = geo.flat(k)
    acc = acc_dtype(q.dtype)
    dq = torch.empty_like(q)
    dk = torch.zeros(k_flat.shape, dtype=acc, device=k.device)
    drpb = None if rpb is None else torch.zeros_like(rpb, dtype=acc).flatten(1)
    for rows, keys, bias in geo.chunks(q):
        g = grad[:, rows]
        dq[:, rows] = torch.einsum("bhwnk,bhwknd->bhwnd", g, _gather(k_flat, keys)) * scale
        _scatter_add(dk, keys, torch.einsum("bhwnk,bhwnd->bhwknd", g, q[:, rows] * scale))
        if drpb is not None:
            _add_bias_grad(drpb, g, bias)
    drpb = None if drpb is None else drpb.view_as(rpb).to(rpb.dtype)
    return dq, dk.view_as(k).to(k.dtype), drpb


# --------------------------------------------------------------------------- AV
def av_forward(attn, v, kernel, dilation) -> torch.Tensor:
    """``out[b, i, j, h] = sum_t attn[..., t] * v[key_t]`` in v's dtype."""
    geo = _Geometry(v, kernel, dilation)
    v_flat = geo.flat(v)
    attn = attn.to(v.dtype)
    out = torch.empty_like(v)
    for rows, keys, _ in geo.chunks(v):
        out[:, rows] = torch.einsum("bhwnk,bhwknd->bhwnd", attn[:, rows], _gather(v_flat, keys))
    return out


def av_backward(grad, attn, v, kernel, dilation):
    """``(dattn, dv)`` of :func:`av_forward`, each in its input's dtype."""
    geo = _Geometry(v, kernel, dilation)
    v_flat = geo.flat(v)
    attn_v = attn.to(v.dtype)
    dattn = torch.empty_like(attn)
    dv = torch.zeros(v_flat.shape, dtype=acc_dtype(v.dtype), device=v.device)
    for rows, keys, _ in geo.chunks(v):
        g = grad[:, rows]
        dattn[:, rows] = torch.einsum("bhwnd,bhwknd->bhwnk", g, _gather(v_flat, keys))
        _scatter_add(dv, keys, torch.einsum("bhwnk,bhwnd->bhwknd", attn_v[:, rows], g))
    return dattn, dv.view_as(v).to(v.dtype)


# --------------------------------------------------------------------------- fused
def attention_forward(q, k, v, rpb, kernel, dilation, scale):
    """Fused forward ``(out, lse, probs)``: ``lse`` is the fp32 log-sum-exp of each query's
    logits; ``probs`` is empty (the backward recomputes them)."""
    geo = _Geometry(q, kernel, dilation)
    k_flat, v_flat = geo.flat(k), geo.flat(v)
    acc = acc_dtype(q.dtype)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:4], dtype=acc, device=q.device)
    for rows, keys, bias in geo.chunks(q):
        logits = _scores(q[:, rows], k_flat, keys, rpb, bias, scale, acc)
        probs, lse[:, rows] = softmax_with_lse(logits)
        probs = probs.to(v.dtype)
        out[:, rows] = torch.einsum("bhwnk,bhwknd->bhwnd", probs, _gather(v_flat, keys))
    return out, lse, lse.new_empty(0)


def attention_backward(
    grad_out, q, k, v, rpb: Optional[torch.Tensor], out, lse, _probs, kernel, dilation, scale,
    rpb_grad: bool = True,
):  # fmt: skip
    """``(dq, dk, dv, drpb)`` of :func:`attention_forward`, recomputing the scores;
    ``drpb`` is ``None`` without a bias or when ``rpb_grad`` is false."""
    geo = _Geometry(q, kernel, dilation)
    k_flat, v_flat = geo.flat(k), geo.flat(v)
    acc = acc_dtype(q.dtype)
    dq = torch.empty_like(q)
    dk = torch.zeros(k_flat.shape, dtype=acc, device=q.device)
    dv = torch.zeros(v_flat.shape, dtype=acc, device=q.device)
    drpb = None
    if rpb is not None and rpb_grad:
        drpb = torch.zeros_like(rpb, dtype=acc).flatten(1)
    for rows, keys, bias in geo.chunks(q):
        g = grad_out[:, rows]
        k_rows, v_rows = _gather(k_flat, keys), _gather(v_flat, keys)
        probs = probs_from_lse(
            _scores(q[:, rows], k_flat, keys, rpb, bias, scale, acc), lse[:, rows]
        )
        dprobs = torch.einsum("bhwnd,bhwknd->bhwnk", g, v_rows).to(acc)
        delta = (g.to(acc) * out[:, rows].to(acc)).sum(-1, keepdim=True)
        dlogits = probs * (dprobs - delta)
        if drpb is not None:
            _add_bias_grad(drpb, dlogits, bias)
        dlogits = dlogits.to(q.dtype)
        dq[:, rows] = torch.einsum("bhwnk,bhwknd->bhwnd", dlogits, k_rows) * scale
        _scatter_add(dk, keys, torch.einsum("bhwnk,bhwnd->bhwknd", dlogits, q[:, rows] * scale))
        _scatter_add(dv, keys, torch.einsum("bhwnk,bhwnd->bhwknd", probs.to(v.dtype), g))
    drpb = None if drpb is None else drpb.view_as(rpb).to(rpb.dtype)
    return dq, dk.view_as(k).to(k.dtype), dv.view_as(v).to(v.dtype), drpb
