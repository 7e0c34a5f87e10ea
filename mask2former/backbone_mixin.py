"""The framework-free half of the Detectron2 backbones (no detectron2 import).

:class:`D2BackboneMixin` sits in front of a core class (``NAT``, ``DiNAT``, ``DiNAT_s``)
and gives it what Detectron2's ``Backbone`` protocol needs: a ``(cfg, input_shape)``
constructor, ``res2..res5`` dict outputs, ``_out_feature_channels/_strides`` (which
``Backbone.output_shape()`` turns into ``ShapeSpec``) and ``size_divisibility``.
Inheritance, not composition, keeps the core's parameter names at the top level, so
the published Mask2Former checkpoints (``backbone.levels.*``) load unchanged.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from nattk.backbones.nat import NeighborhoodTransformer
from nattk.backbones.weights import refuse_missing_weights

from .config import FEATURE_NAMES, backbone_kwargs, config_error, family_node, toolkit_option

#: How to fix the usual cause of a missing rpb under Detectron2.
_RPB_HINT = (
    "an rpb made for another kernel size is skipped by Detectron2 as a shape mismatch: "
    "resize it with `python tools/convert_checkpoint.py IN.pth OUT.pkl --to d2 --kernel-size K`"
)

logger = logging.getLogger(__name__)


class D2BackboneMixin:
    """Detectron2 backbone protocol over a :class:`NeighborhoodTransformer` core class.

    ``config_node`` (class attribute) names the one ``cfg.MODEL`` node to read; ``None``
    means the family's (:data:`~nattk.mask2former.config.CONFIG_KEYS`).

    Use as ``class D2DiNAT(D2BackboneMixin, DiNAT, Backbone)``.

    Args:
        cfg: Detectron2 config with ``MODEL.<NAT|DINAT|DINAT_S>`` (or OneFormer's
            ``MODEL.DiNAT``) declared; see :func:`~nattk.mask2former.config.family_node`.
        input_shape: Detectron2 ``ShapeSpec`` of the image (only ``channels`` is read);
            ``None`` means 3 channels.

    Raises:
        ValueError: A config value the core refuses, named by its key (e.g.
            ``MODEL.DINAT.DILATIONS: dilations must give one value per block: ...``).
    """

    config_node: Optional[str] = None

    def __init__(self, cfg, input_shape=None) -> None:
        family = self._core_family()
        name, node = family_node(cfg, family, self.config_node)
        in_chans = 3 if getattr(input_shape, "channels", None) is None else input_shape.channels
        kwargs = backbone_kwargs(node, family, in_chans=in_chans, name=name)
        try:
            super().__init__(**kwargs)
        except ValueError as error:  # the core's checks speak of its arguments, not of keys
            raise config_error(name, error) from error
        self.config_key = name
        self.allow_missing_weights = bool(toolkit_option(node, "ALLOW_MISSING_WEIGHTS"))
        self._out_features = [FEATURE_NAMES[i] for i in self.out_indices]
        self._out_feature_channels = dict(zip(self._out_features, self.out_channels))
        self._out_feature_strides = dict(zip(self._out_features, self.out_strides))

    @classmethod
    def _core_family(cls) -> str:
        """The ``family`` of the core class (``"nat"``, ``"dinat"``, ``"dinat_s"``)."""
        if not issubclass(cls, NeighborhoodTransformer) or not cls.family:
            raise TypeError(f"{cls.__name__} must derive from NAT, DiNAT or DiNAT_s")
        return cls.family

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps an image batch ``[B, C, H, W]`` to ``{"res2": ..., "res5": ...}``."""
        return dict(zip(self._out_features, super().forward(x)))

    def feature_shapes(self) -> dict[str, tuple[int, int]]:
        """``{name: (channels, stride)}`` of each output (``output_shape()`` without ShapeSpec)."""
        return {
            name: (self._out_feature_channels[name], self._out_feature_strides[name])
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of 32, the stride of ``res5``."""
        return 32

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        # Detectron2 loads with strict=False and drops shape-mismatched tensors (an rpb
        # made for another kernel size) with a warning only; refuse to go on silently.
        expected = list(self.state_dict(keep_vars=True))
        missing = [key for key in expected if prefix + key not in state_dict]
        option = f"{self.config_key}.ALLOW_MISSING_WEIGHTS"
        refusal = refuse_missing_weights(
            type(self).__name__, missing, len(expected), option,
            self.allow_missing_weights, _RPB_HINT, logger, prefix,
        )  # fmt: skip
        if refusal:
            args[-1].append(refusal)  # torch's errors (after metadata, strict, missing, unexpected)
