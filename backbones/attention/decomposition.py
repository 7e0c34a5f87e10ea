"""The ``nattk`` operators written in standard tensor operations, for export.

``torch.export`` keeps ``torch.ops.nattk.*`` as opaque nodes. Runtimes that do not
know them (ONNX Runtime, TensorRT, ...) need the computation spelled out in
standard operators; :data:`DECOMPOSITIONS` maps each operator to such a version,
for ``ExportedProgram.run_decompositions``:

* the neighborhood index tables come from :func:`~.indices.window_starts`, integer
  arithmetic on ``arange``, so they follow the map size instead of being frozen
  constants;
* the window is walked one kernel row at a time: the ``k_c`` keys (values) of that
  row are gathered for every query (``index_select``), scored (reduced) with a
  batched matmul; the bias is gathered from the table, and softmax is taken over the
  whole window in fp32.

Memory is ``O(N * k_c * D)`` for the gathered rows (not ``O(N * k_r * k_c * D)``):
meant for inference graphs, not for training.
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


def _window_rows(height: int, width: int, kernel, dilation, device):
    """Per kernel row ``r``: flat key indices ``[H * W * k_c]``; and flat bias indices
    ``[H * W * K]`` of the whole window (slots row-major)."""
    key_r, bias_r = _axis(height, kernel[0], dilation[0], device)
    key_c, bias_c = _axis(width, kernel[1], dilation[1], device)
    rows = [
        (key_r[:, None, r, None] * width + key_c[None, :, :]).reshape(-1) for r in range(kernel[0])
    ]
    bias = bias_r[:, None, :, None] * (2 * kernel[1] - 1) + bias_c[None, :, None, :]
    return rows, bias.reshape(-1)


def _gathered(x: torch.Tensor, keys: torch.Tensor, n_keys: int) -> torch.Tensor:
    """``x`` [B, H, W, heads, D] -> [B, heads, H*W, n_keys, D] gathered at ``keys``."""
    batch, height, width, heads, dim = x.shape
    flat = x.reshape(batch, height * width, heads, dim).index_select(1, keys)
    return flat.reshape(batch, height * width, n_keys, heads, dim).permute(0, 3, 1, 2, 4)


def _logits(q, k, rpb, kernel_size, scale, rows, bias):
    """fp32 logits ``[B, heads, H*W, K]``, one kernel row of keys gathered at a time."""
    batch, height, width, heads, dim = q.shape
    q_rows = (q * scale).reshape(batch, height * width, heads, 1, dim).permute(0, 2, 1, 3, 4)
    parts = [
        torch.matmul(q_rows, _gathered(k, keys, kernel_size[1]).transpose(-1, -2)).squeeze(-2)
        for keys in rows
    ]
    logits = torch.cat(parts, dim=-1).to(torch.promote_types(q.dtype, torch.float32))
    if rpb is not None:
        n_keys = kernel_size[0] * kernel_size[1]
        table = rpb.reshape(heads, -1).to(logits.dtype)
        logits = logits + table.index_select(1, bias).reshape(1, heads, height * width, n_keys)
    return logits


def _apply(probs, v, kernel_size, rows):
    """``probs`` [B, heads, H*W, K] applied to ``v`` one kernel row at a time ->
    [B, H, W, heads, D]."""
    batch, height, width, heads, dim = v.shape
    kc = kernel_size[1]
    probs = probs.to(v.dtype)
    out = None
    for r, keys in enumerate(rows):
        part = torch.matmul(probs[..., r * kc : (r + 1) * kc].unsqueeze(-2), _gathered(v, keys, kc))
        out = part if out is None else out + part
    out = out.squeeze(-2)
    return out.permute(0, 2, 1, 3).reshape(batch, height, width, heads, dim)


def na2d(q, k, v, rpb, kernel_size, dilation, scale, backend=None):
    """``nattk::na2d`` in standard operators; returns ``(out, lse, probs)`` (``probs`` empty)."""
    batch, height, width, heads, _ = q.shape
    rows, bias = _window_rows(height, width, kernel_size, dilation, q.device)
    logits = _logits(q, k, rpb, kernel_size, scale, rows, bias)
    lse = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    out = _apply(probs, v, kernel_size, rows)
    lse = lse.permute(0, 2, 1).reshape(batch, height, width, heads)
    return out, lse, q.new_empty(0, dtype=lse.dtype)


def na2d_qk(q, k, rpb, kernel_size, dilation, scale, backend=None):
    """``nattk::na2d_qk`` in standard operators."""
    batch, height, width, heads, _ = q.shape
    rows, bias = _window_rows(height, width, kernel_size, dilation, q.device)
    logits = _logits(q, k, rpb, kernel_size, scale, rows, bias)
    return logits.permute(0, 2, 1, 3).reshape(batch, height, width, heads, -1).to(q.dtype)


def na2d_av(attn, v, kernel_size, dilation, backend=None):
    """``nattk::na2d_av`` in standard operators."""
    batch, height, width, heads, _ = v.shape
    rows, _ = _window_rows(height, width, kernel_size, dilation, v.device)
    probs = attn.reshape(batch, height * width, heads, -1).permute(0, 2, 1, 3)
    return _apply(probs, v, kernel_size, rows)


DECOMPOSITIONS = {
    torch.ops.nattk.na2d.default: na2d,
    torch.ops.nattk.na2d_qk.default: na2d_qk,
    torch.ops.nattk.na2d_av.default: na2d_av,
}
