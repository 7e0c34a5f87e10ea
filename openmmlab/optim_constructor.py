"""Detectron2's Mask2Former optimiser rule as an MMEngine optimiser-wrapper constructor.

The published Mask2Former results were trained with the parameter groups built by
Mask2Former's ``build_optimizer`` (``train_net.py``), which decides per parameter:

* learning rate ``lr × BACKBONE_MULTIPLIER`` (0.1) when its module's name contains
  ``backbone``;
* weight decay 0 when the parameter's own name contains ``relative_position_bias_table``
  or ``absolute_pos_embed`` (DiNAT's bias table is called ``rpb`` and is therefore
  **decayed**);
* weight decay ``WEIGHT_DECAY_NORM`` (0) for every parameter of a normalisation module
  (BatchNorm, SyncBatchNorm, GroupNorm, InstanceNorm, LayerNorm, LocalResponseNorm),
  the backbone's LayerNorms included;
* weight decay ``WEIGHT_DECAY_EMBED`` (0) for every parameter of an ``nn.Embedding``;
* otherwise the base lr and weight decay (biases are decayed).

MMEngine's ``DefaultOptimWrapperConstructor`` cannot express this: a matching
``custom_keys`` entry (``'backbone': dict(lr_mult=0.1)``) switches the ``norm_decay_mult``
rule off for every parameter it matches, so the backbone's LayerNorms were decayed.

One module differs in type between the two implementations: MMDetection's
``MSDeformAttnPixelDecoder`` keeps its level embedding in an ``nn.Embedding``
(``pixel_decoder.level_encoding``) where upstream keeps a plain ``nn.Parameter``, which
upstream decays. ``decayed_embeddings`` lists such names (default: that one) so that the
groups equal upstream's.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
_OPTIONS = {
    "backbone_lr_mult": 0.1,
    "weight_decay_norm": 0.0,
    "weight_decay_embed": 0.0,
    "zero_decay_names": ("relative_position_bias_table", "absolute_pos_embed"),
    "decayed_embeddings": ("pixel_decoder.level_encoding",),
}


def detectron2_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float = 0.1,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    zero_decay_names: Sequence[str] = ("relative_position_bias_table", "absolute_pos_embed"),
    decayed_embeddings: Sequence[str] = (),
) -> list[dict]:
    """One parameter group per trainable parameter, as Mask2Former's ``build_optimizer``.

    Args:
        model: The model (unwrapped).
        lr: Base learning rate.
        weight_decay: Base weight decay.
        backbone_lr_mult: ``SOLVER.BACKBONE_MULTIPLIER``.
        weight_decay_norm: ``SOLVER.WEIGHT_DECAY_NORM``.
        weight_decay_embed: ``SOLVER.WEIGHT_DECAY_EMBED``.
        zero_decay_names: Parameter-name fragments that get no decay.
        decayed_embeddings: Names of ``nn.Embedding`` modules (suffixes of the full module
            name) that upstream holds as plain parameters, so they keep the base decay.

    Returns:
        ``[{"params": [p], "lr": ..., "weight_decay": ...}, ...]`` in module order; each
        parameter appears once (shared parameters take the first module's rule).
    """
    groups: list[dict] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group_lr, group_decay = lr, weight_decay
            if "backbone" in module_name:
                group_lr = lr * backbone_lr_mult
            if any(fragment in param_name for fragment in zero_decay_names):
                group_decay = 0.0
            if isinstance(module, NORM_TYPES):
                group_decay = weight_decay_norm
            if isinstance(module, nn.Embedding) and not module_name.endswith(
                tuple(decayed_embeddings)
            ):
                group_decay = weight_decay_embed
            groups.append({"params": [param], "lr": group_lr, "weight_decay": group_decay})
    return groups


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class Detectron2OptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Builds the optimiser with Mask2Former/Detectron2's parameter groups.

    Config::

        optim_wrapper = dict(
            type='OptimWrapper',
            constructor='Detectron2OptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
            paramwise_cfg=dict(backbone_lr_mult=0.1),  # every key optional, see below
            clip_grad=dict(max_norm=0.01, norm_type=2))

    ``paramwise_cfg`` keys (defaults in brackets): ``backbone_lr_mult`` [0.1],
    ``weight_decay_norm`` [0.0], ``weight_decay_embed`` [0.0], ``zero_decay_names``
    [relative_position_bias_table, absolute_pos_embed], ``decayed_embeddings``
    [pixel_decoder.level_encoding]. See :func:`detectron2_param_groups`.

    Raises:
        KeyError: An unknown ``paramwise_cfg`` key (MMEngine's ``custom_keys``,
            ``norm_decay_mult`` ... do not apply here and are refused, not ignored).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(_OPTIONS))
        if unknown:
            raise KeyError(
                f"Detectron2OptimWrapperConstructor: unknown paramwise_cfg keys {unknown}; "
                f"accepted: {sorted(_OPTIONS)}"
            )
        super().__init__(optim_wrapper_cfg, None)
        self.options = {**_OPTIONS, **paramwise_cfg}

    def __call__(self, model: nn.Module):
        """Returns the optimiser wrapper for ``model`` (DDP wrappers are unwrapped)."""
        if hasattr(model, "module"):
            model = model.module
        optimizer_cfg = self.optimizer_cfg.copy()
        optimizer_cfg["params"] = detectron2_param_groups(
            model, self.base_lr, self.base_wd or 0.0, **self.options
        )
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
