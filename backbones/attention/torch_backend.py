"""Pure-PyTorch neighborhood attention (the reference backend).

Runs on any device and dtype, forward and backward. QK and AV are custom autograd
functions that save only their inputs: the gathered keys/values (``K`` copies of
each token) exist one chunk of query rows at a time, in the forward and again in
the backward pass, so memory grows linearly with the number of tokens.
"""

from __future__ import annotations

import torch

from .indices import grid_indices

_CHUNK_BYTES = 64 * 2**20


def _row_chunks(x: torch.Tensor, n_keys: int):
    """Yields ``slice`` objects over the rows of ``x`` ([B, H, W, heads, D])."""
    batch, height, width, heads, dim = x.shape
    per_row = batch * width * n_keys * heads * dim * x.element_size()
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
    out_flat.index_add_(1, keys.reshape(-1), values.reshape(batch, -1, heads, dim))


def _bias(rpb: torch.Tensor, bias_idx: torch.Tensor) -> torch.Tensor:
    """rpb [heads, P0, P1] gathered at bias_idx [h, W, K] -> [h, W, heads, K]."""
    return rpb.flatten(1)[:, bias_idx].permute(1, 2, 0, 3)


class TorchQK(torch.autograd.Function):
    """logits[b, i, j, h, t] = (scale * q) . k[key_t] + rpb[h, bias_t]."""

    @staticmethod
    def forward(ctx, q, k, rpb, kernel, dilation, scale):
        batch, height, width, heads, dim = q.shape
        keys, bias_idx = grid_indices(height, width, kernel, dilation, q.device)
        n_keys = keys.shape[-1]
        k_flat = k.reshape(batch, height * width, heads, dim)
        logits = q.new_empty(batch, height, width, heads, n_keys)
        for rows in _row_chunks(q, n_keys):
            kg = _gather(k_flat, keys[rows])
            logits[:, rows] = torch.einsum("bhwnd,bhwknd->bhwnk", q[:, rows] * scale, kg)
            if rpb is not None:
                logits[:, rows] += _bias(rpb, bias_idx[rows])
        ctx.save_for_backward(q, k, rpb)
        ctx.geometry = (kernel, dilation, scale)
        return logits

    @staticmethod
    def backward(ctx, grad):
        q, k, rpb = ctx.saved_tensors
        kernel, dilation, scale = ctx.geometry
        batch, height, width, heads, dim = q.shape
        keys, bias_idx = grid_indices(height, width, kernel, dilation, q.device)
        n_keys = keys.shape[-1]
        k_flat = k.reshape(batch, height * width, heads, dim)
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k_flat)
        for rows in _row_chunks(q, n_keys):
            g = grad[:, rows]
            dq[:, rows] = (
                torch.einsum("bhwnk,bhwknd->bhwnd", g, _gather(k_flat, keys[rows])) * scale
            )
            contrib = torch.einsum("bhwnk,bhwnd->bhwknd", g, q[:, rows] * scale)
            _scatter_add(dk, keys[rows], contrib)
        drpb = None
        if rpb is not None:
            per_head = grad.sum(0).permute(2, 0, 1, 3).reshape(heads, -1)
            drpb = torch.zeros_like(rpb).flatten(1)
            drpb.index_add_(1, bias_idx.reshape(-1), per_head)
            drpb = drpb.view_as(rpb)
        return dq, dk.view_as(k), drpb, None, None, None


class TorchAV(torch.autograd.Function):
    """out[b, i, j, h] = sum_t attn[b, i, j, h, t] * v[key_t]."""

    @staticmethod
    def forward(ctx, attn, v, kernel, dilation):
        batch, height, width, heads, dim = v.shape
        keys, _ = grid_indices(height, width, kernel, dilation, v.device)
        v_flat = v.reshape(batch, height * width, heads, dim)
        out = torch.empty_like(v)
        for rows in _row_chunks(v, keys.shape[-1]):
            out[:, rows] = torch.einsum(
                "bhwnk,bhwknd->bhwnd", attn[:, rows], _gather(v_flat, keys[rows])
            )
        ctx.save_for_backward(attn, v)
        ctx.geometry = (kernel, dilation)
        return out

    @staticmethod
    def backward(ctx, grad):
        attn, v = ctx.saved_tensors
        kernel, dilation = ctx.geometry
        batch, height, width, heads, dim = v.shape
        keys, _ = grid_indices(height, width, kernel, dilation, v.device)
        v_flat = v.reshape(batch, height * width, heads, dim)
        dattn = torch.empty_like(attn)
        dv = torch.zeros_like(v_flat)
        for rows in _row_chunks(v, keys.shape[-1]):
            g = grad[:, rows]
            dattn[:, rows] = torch.einsum("bhwnd,bhwknd->bhwnk", g, _gather(v_flat, keys[rows]))
            _scatter_add(dv, keys[rows], torch.einsum("bhwnk,bhwnd->bhwknd", attn[:, rows], g))
        return dattn, dv.view_as(v), None, None


def qk(q, k, rpb, kernel, dilation, scale):
    """Neighborhood logits with the pure-PyTorch backend."""
    return TorchQK.apply(q, k, rpb, kernel, dilation, scale)


def av(attn, v, kernel, dilation):
    """Neighborhood weighted sum with the pure-PyTorch backend."""
    return TorchAV.apply(attn, v, kernel, dilation)
