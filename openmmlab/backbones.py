"""MMEngine-side backbones shared by the MMDetection and MMSegmentation adapters.

``NAT``, ``DiNAT`` and ``DiNAT_s`` are the core classes as MMEngine ``BaseModule`` s with
the constructor conventions of MMDetection's Swin: ``arch`` presets,
``init_cfg=dict(type='Pretrained', checkpoint=...)`` and the deprecated
``pretrained=`` alias. The three classes are registered once, in MMEngine's
root ``MODELS`` registry: MMDetection's and MMSegmentation's registries are its
children and fall back to it, so ``type='DiNAT'`` resolves under either scope without
either adapter importing the other framework. Importing this module also lets
MMEngine's ``CheckpointLoader`` read local ``.safetensors`` files (``init_cfg``
checkpoints and ``load_from``; see :func:`nattk.openmmlab.compat.register_safetensors_loader`).
"""

from __future__ import annotations

import warnings
from typing import Optional, Union

from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader

from nattk.backbones import nat as core
from nattk.backbones.variants import variant_kwargs
from nattk.backbones.weights import LoadReport, load_pretrained
from nattk.openmmlab.compat import checkpoint_allowlist, register_safetensors_loader


class _OpenMMLabMixin:
    """Adds ``arch``, ``init_cfg`` and ``pretrained`` handling to a core backbone.

    Args:
        arch: Published variant (e.g. ``'tiny'``); explicit arguments override it.
        dilations: Preset name (e.g. ``'coco'``) or per-block nested list.
        pretrained: Deprecated alias of ``init_cfg=dict(type='Pretrained', ...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., [prefix=...],
            [allow_missing=False])``; missing backbone tensors raise unless allowed.
        **kwargs: Any argument of the core class (``kernel_size``, ``drop_path_rate``,
            ``layer_scale``, ``out_indices``, ``frozen_stages``, ``with_cp``, ...).
    """

    def __init__(
        self,
        arch: Optional[str] = None,
        dilations: Union[str, list, None] = None,
        pretrained: Optional[str] = None,
        init_cfg: Optional[dict] = None,
        **kwargs,
    ) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError("give either init_cfg or pretrained, not both")
            if not isinstance(pretrained, str):
                raise TypeError(f"pretrained must be a str path or URL, got {type(pretrained)}")
            warnings.warn(
                "pretrained is deprecated; use init_cfg=dict(type='Pretrained', checkpoint=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        if "num_classes" in kwargs:
            raise ValueError(
                "a detection/segmentation backbone has no classifier: drop num_classes"
            )
        super().__init__(num_classes=0, **variant_kwargs(self.family, arch, dilations, **kwargs))
        self.init_cfg = init_cfg

    def init_weights(self) -> None:
        """Loads ``init_cfg``'s checkpoint (strictly, with a summary log) or keeps the init.

        The official dense backbones apply no initialisation of their own, so without a
        checkpoint the modules keep PyTorch's defaults (as the originals did).
        """
        cfg = self.init_cfg or {}
        if cfg.get("type") != "Pretrained":
            if cfg:
                return super().init_weights()
            log, name = MMLogger.get_current_instance(), type(self).__name__
            log.info(f"{name}: no pretrained checkpoint, training from scratch")
            return
        self.load_report = self.load_checkpoint(
            cfg["checkpoint"], cfg.get("prefix"), cfg.get("allow_missing", False)
        )
        self._is_init = True

    def load_checkpoint(
        self, checkpoint: str, prefix: Optional[str] = None, allow_missing: bool = False
    ) -> LoadReport:
        """Loads a path or URL into the backbone; see :func:`load_pretrained`.

        Args:
            checkpoint: Local path or URL (anything MMEngine's ``CheckpointLoader`` reads,
                local ``.safetensors`` files included).
            prefix: Only keys under this prefix are used, with the prefix removed.
            allow_missing: Load even when backbone tensors are absent from the file.
        """
        with checkpoint_allowlist():  # MMEngine's loader: local paths, URLs, s3, ...
            state = CheckpointLoader.load_checkpoint(checkpoint, map_location="cpu")
        log = MMLogger.get_current_instance()
        log.info(f"{type(self).__name__}: loading {checkpoint}")
        return load_pretrained(self, state, allow_missing=allow_missing, log=log, prefix=prefix)


register_safetensors_loader()


@MODELS.register_module()
class NAT(_OpenMMLabMixin, core.NAT, BaseModule):
    """NAT for MMDetection / MMSegmentation (``type='NAT'``); see :class:`_OpenMMLabMixin`."""


@MODELS.register_module()
class DiNAT(_OpenMMLabMixin, core.DiNAT, BaseModule):
    """DiNAT for MMDetection / MMSegmentation (``type='DiNAT'``); see :class:`_OpenMMLabMixin`."""


# "DiNATs" is the type name configs used before 0.2; it stays valid.
@MODELS.register_module(name=["DiNAT_s", "DiNATs"])
class DiNAT_s(_OpenMMLabMixin, core.DiNAT_s, BaseModule):  # noqa: N801 - the original's name
    """DiNAT_s for MMDetection / MMSegmentation (``type='DiNAT_s'``); see :class:`_OpenMMLabMixin`."""


DiNATs = DiNAT_s
