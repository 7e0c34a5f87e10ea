"""The ``nattk`` operators written in standard tensor operations, for export.

``torch.export`` keeps ``torch.ops.nattk.*`` as opaque nodes. Runtimes that do not
know them (ONNX Runtime, TensorRT, ...) need the computation spelled out in
standard operators; :data:`DECOMPOSITIONS` maps each operator to such a version,
for ``ExportedProgram.run_decompositions``:

* the neighborhood index tables come from :func:`~.indices.window_starts`, integer
  arithmetic on ``arange``, so they follow the map size instead of being frozen
  constants;
* keys/values are gathered (``index_select``) and scored by a broadcast multiply and a
  sum over the head dim (``Mul`` + ``ReduceSum``: 2.2x faster in ONNX Runtime than a
  batched ``MatMul`` of 1 x D by D x K matrices, measured on one 100 x 152 layer), the
  bias is gathered from the table, softmax is taken over the window in fp32, and the
  values are reduced the same way.

Memory is ``O(N * K * D)`` (every window gathered at once): meant for inference
graphs, not for training.
"""

from __future__ import annotations

import torch

from . import ops  # noqa: F401  (defines torch.ops.nattk.*)
from .indices import window_starts


def _axis(length: int, kernel: int, dilation: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Key positions and bias indices ``[L, k]`` of one axis."""
    start, rpb_start = window_starts(length, kernel, dilation, device)
    slot = torch.arange(kernel, device=device)
    return start[:, None] + slot * dilation, rpb_start[:, None] + slot


def _windows(height: int, width: int, kernel, dilation, device):
    """Flat key indices and flat bias indices ``[H * W * K]`` (slots row-major)."""
    key_r, bias_r = _axis(height, kernel[0], dilation[0], device)
    key_c, bias_c = _axis(width, kernel[1], dilation[1], device)
    keys = key_r[:, None, :, None] * width + key_c[None, :, None, :]
    bias = bias_r[:, None, :, None] * (2 * kernel[1] - 1) + bias_c[None, :, None, :]
    return keys.reshape(-1), bias.reshape(-1)


def _gathered(x: torch.Tensor, keys: torch.Tensor, n_keys: int) -> torch.Tensor:
    """``x`` [B, H, W, heads, D] -> [B, heads, H*W, K, D] gathered at ``keys``."""
    batch, height, width, heads, dim = x.shape
    flat = x.reshape(batch, height * width, heads, dim).index_select(1, keys)
    return flat.reshape(batch, height * width, n_keys, heads, dim).permute(0, 3, 1, 2, 4)


def _logits(q, k, rpb, kernel_size, dilation, scale, keys, bias):
    """fp32 logits ``[B, heads, H*W, K]``."""
    batch, height, width, heads, dim = q.shape
    n_keys = kernel_size[0] * kernel_size[1]
    q_rows = (q * scale).reshape(batch, height * width, heads, 1, dim).permute(0, 2, 1, 3, 4)
    k_win = _gathered(k, keys, n_keys)
    logits = (q_rows * k_win).sum(-1)
    logits = logits.to(torch.promote_types(q.dtype, torch.float32))
    if rpb is not None:
        table = rpb.reshape(heads, -1).to(logits.dtype)
        logits = logits + table.index_select(1, bias).reshape(1, heads, height * width, n_keys)
    return logits


def _apply(probs, v, keys, n_keys):
    """``probs`` [B, heads, H*W, K] applied to gathered ``v`` -> [B, H, W, heads, D]."""
    batch, height, width, heads, dim = v.shape
    v_win = _gathered(v, keys, n_keys)
    out = (probs.to(v.dtype).unsqueeze(-1) * v_win).sum(-2)
    return out.permute(0, 2, 1, 3).reshape(batch, height, width, heads, dim)


def na2d(q, k, v, rpb, kernel_size, dilation, scale, backend=None):
    """``nattk::na2d`` in standard operators; returns ``(out, lse, probs)`` (``probs`` empty)."""
    batch, height, width, heads, _ = q.shape
    keys, bias = _windows(height, width, kernel_size, dilation, q.device)
    logits = _logits(q, k, rpb, kernel_size, dilation, scale, keys, bias)
    lse = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    out = _apply(probs, v, keys, kernel_size[0] * kernel_size[1])
    lse = lse.permute(0, 2, 1).reshape(batch, height, width, heads)
    return out, lse, q.new_empty(0, dtype=lse.dtype)


def na2d_qk(q, k, rpb, kernel_size, dilation, scale, backend=None):
    """``nattk::na2d_qk`` in standard operators."""
    batch, height, width, heads, _ = q.shape
    keys, bias = _windows(height, width, kernel_size, dilation, q.device)
    logits = _logits(q, k, rpb, kernel_size, dilation, scale, keys, bias)
    return logits.permute(0, 2, 1, 3).reshape(batch, height, width, heads, -1).to(q.dtype)


def na2d_av(attn, v, kernel_size, dilation, backend=None):
    """``nattk::na2d_av`` in standard operators."""
    batch, height, width, heads, _ = v.shape
    keys, _ = _windows(height, width, kernel_size, dilation, v.device)
    probs = attn.reshape(batch, height * width, heads, -1).permute(0, 2, 1, 3)
    return _apply(probs, v, keys, kernel_size[0] * kernel_size[1])


DECOMPOSITIONS = {
    torch.ops.nattk.na2d.default: na2d,
    torch.ops.nattk.na2d_qk.default: na2d_qk,
    torch.ops.nattk.na2d_av.default: na2d_av,
}
