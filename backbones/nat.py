"""NAT, DiNAT and DiNAT_s: one implementation for classification and dense tasks.

Parameter names follow the official checkpoints exactly, so their state dicts load
with ``strict=True``:

* NAT / DiNAT: ``patch_embed.proj.{0,1}``, ``patch_embed.norm``,
  ``levels.{i}.blocks.{j}.{norm1,attn.{rpb,qkv,proj},norm2,mlp.fc1,mlp.fc2[,gamma1,gamma2]}``,
  ``levels.{i}.downsample.{reduction,norm}``;
* DiNAT_s: ``patch_embed.{proj,norm}``, ``layers.{i}.blocks.{j}.*``,
  ``layers.{i}.downsample.{norm,reduction}``;
* classification models add ``norm`` and ``head``; dense backbones
  (``num_classes=0``) add ``norm{i}`` for each output level instead.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from .layers import ConvDownsampler, ConvTokenizer, NABlock, PatchEmbed4, PatchMerging

Dilations = Sequence[Sequence[int]]


class NAStage(nn.Module):
    """One stage: a list of :class:`NABlock` blocks and an optional downsampler."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class NeighborhoodTransformer(nn.Module):
    """Hierarchical neighborhood-attention transformer (shared by NAT, DiNAT, DiNAT_s).

    Args:
        embed_dim: Channels of the first level; level ``i`` has ``embed_dim * 2**i``.
        depths: Blocks per level.
        num_heads: Attention heads per level.
        kernel_size: Neighborhood size of every block.
        dilations: Per-level, per-block dilations (``None``: all 1).
        mlp_ratio: MLP hidden width relative to the level width.
        layer_scale: Initial value of the per-channel residual scales (``None``: off).
        in_chans: Input image channels.
        num_classes: ``> 0`` builds the classifier (``norm`` + ``head``); ``0`` builds
            the dense backbone with one ``norm{i}`` per output level.
        out_indices: Levels whose (pre-downsampler) features a dense backbone returns.
        frozen_stages: ``-1`` trains everything; ``0`` freezes the patch embedding;
            ``k >= 1`` also freezes levels ``0 .. k-1`` (with their downsamplers and
            output norms) — MMDetection Swin's convention.
        drop_rate: Dropout after the MLP and the attention projection.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth, rising linearly over all blocks.
        qkv_bias: Bias in the qkv projections.
        qk_scale: Override of the ``head_dim ** -0.5`` query scale.
        with_cp: Gradient checkpointing of every block while training.
    """

    #: Name of the stage container in the state dict ("levels" or "layers").
    stage_attr = "levels"
    #: Variant family of the concrete class ("nat", "dinat", "dinat_s"); names the
    #: presets of :mod:`.variants` and the adapters' config keys.
    family = ""

    def __init__(
        self,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        kernel_size: int = 7,
        dilations: Optional[Dilations] = None,
        mlp_ratio: float = 3.0,
        layer_scale: Optional[float] = None,
        in_chans: int = 3,
        num_classes: int = 0,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        depths, num_heads = list(depths), list(num_heads)
        levels = len(depths)
        if len(num_heads) != levels:
            raise ValueError(
                f"num_heads {num_heads} must have one entry per level of depths {depths}"
            )
        dilations = self._check_dilations(dilations, depths)
        out_indices = tuple(out_indices)
        # Checked for classifiers too (which return logits and ignore them): a wrong index
        # is a mistake wherever it is given; the default fits any depth a classifier has.
        given = num_classes == 0 or out_indices != (0, 1, 2, 3)
        out_of_range = given and any(not 0 <= i < levels for i in out_indices)
        if out_of_range or (num_classes == 0 and not out_indices):
            raise ValueError(
                f"out_indices {out_indices} must be a non-empty subset of 0..{levels - 1}"
            )
        if not -1 <= frozen_stages <= levels:
            raise ValueError(f"frozen_stages must be in [-1, {levels}], got {frozen_stages}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")

        self.in_chans = in_chans
        self.num_classes = num_classes
        self.depths, self.num_heads, self.dilations = depths, num_heads, dilations
        self.kernel_size = kernel_size
        self.out_indices = out_indices if num_classes == 0 else ()
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        self.widths = [embed_dim * 2**i for i in range(levels)]

        self.patch_embed = self._make_stem(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        # On the CPU even under a meta-device context (transformers builds models there).
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages = []
        for i, (depth, heads, dim) in enumerate(zip(depths, num_heads, self.widths)):
            blocks = [
                NABlock(
                    dim,
                    heads,
                    kernel_size,
                    dilation=dilations[i][j],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rates[sum(depths[:i]) + j],
                    layer_scale=layer_scale,
                )
                for j in range(depth)
            ]
            downsample = self._make_downsampler(dim) if i < levels - 1 else None
            stages.append(NAStage(blocks, downsample))
        setattr(self, self.stage_attr, nn.ModuleList(stages))

        if num_classes > 0:
            self.norm = nn.LayerNorm(self.widths[-1])
            self.head = nn.Linear(self.widths[-1], num_classes)
            self.apply(self._init_classifier_weights)
        else:
            for i in self.out_indices:
                self.add_module(f"norm{i}", nn.LayerNorm(self.widths[i]))
        self._freeze_stages()

    # ------------------------------------------------------------------ structure
    def _make_stem(self, in_chans: int, dim: int) -> nn.Module:
        return ConvTokenizer(in_chans, dim)

    def _make_downsampler(self, dim: int) -> nn.Module:
        return ConvDownsampler(dim)

    @property
    def stages(self) -> nn.ModuleList:
        """The levels (``levels`` or ``layers`` in the state dict)."""
        return getattr(self, self.stage_attr)

    @property
    def feature_info(self) -> list[dict]:
        """Channels and stride of each returned feature map (timm convention)."""
        return [
            dict(num_chs=self.widths[i], reduction=4 * 2**i, module=f"norm{i}", index=i)
            for i in self.out_indices
        ]

    @property
    def out_channels(self) -> list[int]:
        """Channels of the dense outputs, in order."""
        return [info["num_chs"] for info in self.feature_info]

    @property
    def out_strides(self) -> list[int]:
        """Strides of the dense outputs, in order."""
        return [info["reduction"] for info in self.feature_info]

    @staticmethod
    def _check_dilations(dilations: Optional[Dilations], depths: list[int]) -> list[list[int]]:
        if dilations is None:
            return [[1] * depth for depth in depths]
        dilations = [list(level) for level in dilations]
        if len(dilations) != len(depths) or any(len(d) != n for d, n in zip(dilations, depths)):
            raise ValueError(
                f"dilations must give one value per block: expected lengths {depths}, "
                f"got {[len(d) for d in dilations]}"
            )
        if any(not isinstance(d, int) or d < 1 for level in dilations for d in level):
            raise ValueError(f"dilations must be positive ints, got {dilations}")
        return dilations

    @staticmethod
    def _init_classifier_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ freezing
    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.stages[i])
            if i in self.out_indices:
                modules.append(getattr(self, f"norm{i}"))
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> NeighborhoodTransformer:
        """Sets the mode; frozen stages stay in eval mode with no gradients."""
        super().train(mode)
        self._freeze_stages()
        return self

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected an image batch [B, C, H, W], got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point image batch, got {x.dtype}: convert it (e.g. "
                "x.float(), then normalise as the model was trained) before the forward pass"
            )

    def _run_blocks(self, stage: NAStage, x: torch.Tensor) -> torch.Tensor:
        for block in stage.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_levels(self, x: torch.Tensor, with_stem: bool = False) -> list[torch.Tensor]:
        """Channels-last features of every level, taken before its downsampler.

        Args:
            x: ``[B, C, H, W]`` images.
            with_stem: Put the patch embedding's output first (transformers' convention
                for ``hidden_states``).
        """
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        features = [x] if with_stem else []
        for stage in self.stages:
            x = self._run_blocks(stage, x)
            features.append(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return features

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        """Logits ``[B, num_classes]``, or the dense features ``[B, C_i, H_i, W_i]``."""
        features = self.forward_levels(x)
        if self.num_classes > 0:
            pooled = self.norm(features[-1]).flatten(1, 2).mean(1)
            return self.head(pooled)
        return self.dense_outputs(features)

    def dense_outputs(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The normed ``[B, C_i, H_i, W_i]`` outputs of :meth:`forward_levels`' features."""
        return [
            getattr(self, f"norm{i}")(features[i]).permute(0, 3, 1, 2).contiguous()
            for i in self.out_indices
        ]


class NAT(NeighborhoodTransformer):
    """Neighborhood Attention Transformer (Hassani et al., CVPR 2023): dilation 1 everywhere.

    Raises:
        ValueError: ``dilations`` with any value other than 1 (the one place this rule is
            checked; every adapter builds through here).
    """

    family = "nat"

    @staticmethod
    def _check_dilations(dilations: Optional[Dilations], depths: list[int]) -> list[list[int]]:
        dilations = NeighborhoodTransformer._check_dilations(dilations, depths)
        if any(d != 1 for level in dilations for d in level):
            raise ValueError(
                f"NAT has dilation 1 everywhere, got dilations {dilations}: use a DiNAT model "
                "for dilations (a dinat_* variant, type='DiNAT', MODEL.DINAT)"
            )
        return dilations


class DiNAT(NeighborhoodTransformer):
    """Dilated Neighborhood Attention Transformer: NAT with per-block ``dilations``."""

    family = "dinat"


class DiNAT_s(NeighborhoodTransformer):  # noqa: N801 - the original's name
    """DiNAT_s: Swin's macro-architecture (4×4 patch embed, patch merging) with NA/DiNA."""

    family = "dinat_s"
    stage_attr = "layers"

    def __init__(self, embed_dim: int, depths, num_heads, mlp_ratio: float = 4.0, **kwargs) -> None:
        super().__init__(embed_dim, depths, num_heads, mlp_ratio=mlp_ratio, **kwargs)

    def _make_stem(self, in_chans: int, dim: int) -> nn.Module:
        return PatchEmbed4(in_chans, dim)

    def _make_downsampler(self, dim: int) -> nn.Module:
        return PatchMerging(dim)


#: Names before 0.2 (``DiNATs`` is also an OpenMMLab type name configs use).
DiNATs = DiNAT_s
NALevel = NAStage
