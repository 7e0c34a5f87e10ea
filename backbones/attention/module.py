"""The neighborhood-attention layer used by the NAT / DiNAT / DiNAT_s blocks."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .functional import IntPair, na2d_av, na2d_qk, neighborhood_attention_2d, to_pair
from .torch_backend import acc_dtype


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the window computed in fp32 (fp64 stays fp64), returned in the logits' dtype."""
    return logits.softmax(dim=-1, dtype=acc_dtype(logits.dtype)).to(logits.dtype)


class NeighborhoodAttention2D(nn.Module):
    """Multi-head 2-D neighborhood attention with relative position bias.

    Reproduces the layer the published NAT/DiNAT checkpoints were trained with
    (NATTEN <= 0.15): parameters ``qkv``, ``rpb``, ``proj``; q scaled before the dot
    product; and maps smaller than ``kernel_size * dilation`` zero-padded on the
    right/bottom *before* ``qkv``, attended without masking, then cropped.

    Mixed precision: under ``torch.autocast`` q, k and v come out of ``qkv`` in the
    autocast dtype; ``rpb`` stays an fp32 parameter, is added to the scores in fp32
    and receives fp32 gradients; the softmax is computed in fp32.

    Args:
        dim: Channels of the input and output.
        num_heads: Attention heads; must divide ``dim``.
        kernel_size: Window size, int or ``(rows, cols)``.
        dilation: Dilation, int or ``(rows, cols)``.
        rel_pos_bias: Learn a ``[heads, 2k-1, 2k-1]`` relative position bias.
        qkv_bias: Bias of the qkv projection.
        qk_scale: Query scale; default ``head_dim ** -0.5``.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.

    Attributes:
        backend: Backend used by :meth:`forward` (``"auto"`` by default; see
            :func:`~.functional.neighborhood_attention_2d`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: IntPair,
        dilation: IntPair = 1,
        rel_pos_bias: bool = True,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or dim <= 0 or dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        self.kernel_size = to_pair(kernel_size, "kernel_size")
        self.dilation = to_pair(dilation, "dilation")
        if rel_pos_bias and (self.kernel_size[0] % 2 == 0 or self.kernel_size[1] % 2 == 0):
            raise ValueError(f"rel_pos_bias requires an odd kernel_size, got {kernel_size}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.backend = "auto"

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            k0, k1 = self.kernel_size
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * k0 - 1, 2 * k1 - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _padded_qkv(self, x: torch.Tensor):
        """Zero-pads ``x`` right/bottom to ``kernel * dilation`` (NATTEN <= 0.15), projects to q, k, v."""
        if x.dim() != 4:
            raise ValueError(f"expected a [B, H, W, C] input, got shape {tuple(x.shape)}")
        pad_b = max(0, self.kernel_size[0] * self.dilation[0] - x.shape[1])
        pad_r = max(0, self.kernel_size[1] * self.dilation[1] - x.shape[2])
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        qkv = self.qkv(x).reshape(*x.shape[:3], 3, self.num_heads, self.head_dim)
        return qkv.unbind(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attends over ``x`` of shape ``[B, H, W, C]``; returns the same shape."""
        q, k, v = self._padded_qkv(x)
        height, width = x.shape[1], x.shape[2]
        if self.training and self.attn_drop.p > 0:
            # Fused kernels cannot drop attention weights: run QK, softmax, AV apart.
            attn = na2d_qk(
                q, k, self.kernel_size, self.dilation, self.rpb, self.scale, self._unfused()
            )
            attn = self.attn_drop(_softmax(attn))
            out = na2d_av(attn, v, self.kernel_size, self.dilation, self._unfused())
        else:
            out = neighborhood_attention_2d(
                q, k, v, self.kernel_size, self.dilation, self.rpb, self.scale, self.backend
            )
        out = out.flatten(3)[:, :height, :width]  # crop the padding
        return self.proj_drop(self.proj(out))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``[B, H', W', heads, k_rows*k_cols]`` (H', W' after padding)."""
        q, k, _ = self._padded_qkv(x)
        logits = na2d_qk(
            q, k, self.kernel_size, self.dilation, self.rpb, self.scale, self._unfused()
        )
        return _softmax(logits)

    def _unfused(self) -> str:
        return self.backend if self.backend in registry.active().unfused else "auto"

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, num_heads={self.num_heads}, "
            f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
            f"rel_pos_bias={self.rpb is not None}"
        )
