"""Every NAT / DiNAT / DiNAT_s variant as a Hugging Face transformers backbone.

:class:`NattkBackboneConfig` (``model_type="nattk"``) and :class:`NattkBackbone` follow
transformers 5's backbone conventions (``BackboneConfigMixin`` / ``BackboneMixin``):
``stage_names`` ``["stem", "stage1", ..., "stage4"]``, ``out_features`` /
``out_indices``, ``channels``, and NCHW ``feature_maps``. After
:func:`register_backbones` (done by :func:`nattk.hf.use_toolkit_attention`),
``AutoBackbone`` builds them, and so does every model that loads its backbone from a
``backbone_config``: ``Mask2FormerForUniversalSegmentation``,
``OneFormerForUniversalSegmentation``, ``UperNetForSemanticSegmentation``::

    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
    from nattk.hf import NattkBackboneConfig, use_toolkit_attention

    use_toolkit_attention()
    backbone = NattkBackboneConfig(variant="dinat_s_large", dilations="ade20k640",
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    model = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(backbone_config=backbone))

The network is the toolkit's core model (:func:`nattk.backbones.create_model`) under the
attribute ``backbone``, so its state-dict keys are the official ones with a
``backbone.`` prefix, it pads small maps as the published checkpoints were trained,
and :meth:`NattkBackbone.from_pretrained` reads weights through
:func:`nattk.backbones.load_pretrained`, which refuses a file that lacks tensors.

Importing this module registers the two classes with the Auto classes (a process that
loads a saved Mask2Former/OneFormer/UperNet with a ``"nattk"`` backbone must import it,
or call :func:`nattk.hf.use_toolkit_attention`, first). It needs transformers >= 5.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

try:
    from transformers import AutoBackbone, AutoConfig, PreTrainedConfig, PreTrainedModel
    from transformers import initialization as init
    from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
    from transformers.modeling_outputs import BackboneOutput
except ImportError as error:  # transformers 4.x: other backbone conventions
    raise ImportError(
        "nattk.hf.backbone needs transformers >= 5 (tested: 5.23.0); "
        "use_toolkit_attention() alone also supports 4.46.3"
    ) from error

from nattk.backbones import FAMILIES, VARIANTS, create_model, load_pretrained
from nattk.backbones.attention import NeighborhoodAttention2D
from nattk.backbones.layers import NABlock
from nattk.backbones.variants import dilation_preset
from nattk.backbones.weights import weights_file
from nattk.backbones.weights.huggingface import WEIGHT_FILES  # noqa: F401 (its old home)

MODEL_TYPE = "nattk"
_FIXED_OUTPUTS = (
    "a NattkBackbone's outputs are fixed when it is built (they decide its output norms); "
    "build a new one from a config with the out_features you want"
)
# Arguments of transformers' from_pretrained about where files come from; a local
# folder needs none of them.
_HUB_KWARGS = {
    "cache_dir",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
    "code_revision",
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
    "adapter_kwargs",
}


class NattkBackboneConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of a :class:`NattkBackbone`: a published variant plus overrides.

    Args:
        variant: One of the 13 published variants, e.g. ``"dinat_large"``,
            ``"nat_tiny"``, ``"dinat_s_base"``.
        dilations: A preset name (``"imagenet224"``, ``"coco"``, ``"ade20k512"``,
            ``"ade20k640"``, ``"m2f"``, ...) or one list per level; ignored by NAT.
        kernel_size: Neighborhood size (odd).
        num_channels: Input image channels.
        drop_path_rate: Stochastic depth; ``None`` takes the variant's ImageNet value.
        frozen_stages: ``-1`` trains everything; ``k >= 0`` freezes the stem and the
            first ``k`` levels.
        embed_dim: Override of the variant's width (e.g. for a tiny test model).
        depths: Override of the variant's blocks per level.
        num_heads: Override of the variant's heads per level.
        mlp_ratio: Override of the variant's MLP ratio.
        initializer_range: Std of transformers' normal initialisation of fresh weights.
        out_features: Subset of ``stage1`` .. ``stage4``; default the last stage.
        out_indices: The same as indices into ``stage_names`` (``stem`` is 0).
    """

    model_type = MODEL_TYPE

    variant: str = "dinat_tiny"
    dilations: Union[str, list, None] = "imagenet224"
    kernel_size: int = 7
    num_channels: int = 3
    drop_path_rate: Optional[float] = None
    frozen_stages: int = -1
    embed_dim: Optional[int] = None
    depths: Optional[list] = None
    num_heads: Optional[list] = None
    mlp_ratio: Optional[float] = None
    initializer_range: float = 0.02
    _out_features: Optional[list] = None
    _out_indices: Optional[list] = None

    def __post_init__(self, **kwargs):
        """Checks the variant and kernel, derives ``stage_names``, aligns the outputs."""
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {sorted(VARIANTS)}")
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int):
            raise ValueError(f"kernel_size must be an int, got {self.kernel_size!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        depths = self.depths if self.depths is not None else VARIANTS[self.variant].depths
        self._check_dilations(list(depths))
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(depths) + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None),
            out_features=kwargs.pop("out_features", None),
        )
        if "stem" in self.out_features:
            raise ValueError(
                "NAT-family backbones output stage1..stage4 (the stem has no output norm); "
                f"got out_features {self.out_features}"
            )
        super().__post_init__(**kwargs)

    def _check_dilations(self, depths: list) -> None:
        """The core's own rules, at once rather than when the model is built."""
        family = VARIANTS[self.variant].family
        dilations = self.dilations
        if isinstance(dilations, str):
            dilations = dilation_preset(family, dilations, depths, self.variant)
        FAMILIES[family]._check_dilations(dilations, depths)

    def core_kwargs(self) -> dict:
        """Arguments of :func:`nattk.backbones.create_model` for this configuration."""
        overrides = {
            name: getattr(self, name)
            for name in ("embed_dim", "depths", "num_heads", "mlp_ratio", "drop_path_rate")
            if getattr(self, name) is not None
        }
        return dict(
            num_classes=0,
            dilations=self.dilations,
            kernel_size=self.kernel_size,
            in_chans=self.num_channels,
            # Through the names: transformers keeps negative out_indices as given.
            out_indices=[self.stage_names.index(name) - 1 for name in self.out_features],
            frozen_stages=self.frozen_stages,
            **overrides,
        )


class NattkBackbone(BackboneMixin, PreTrainedModel):
    """A NAT / DiNAT / DiNAT_s dense backbone for transformers' models.

    ``feature_maps`` are the normed ``[B, C_i, H/4·2^i, W/4·2^i]`` outputs of the
    levels in ``out_features``. Attention weights are not returned
    (``has_attentions = False``); ``output_hidden_states=True`` adds one un-normed NCHW
    tensor per stage name (the patch embedding's, then every level's).

    ``out_features`` / ``out_indices`` are fixed when the backbone is built (they decide
    which output norms exist); to change them, build a new one from a new config.
    """

    config: NattkBackboneConfig
    config_class = NattkBackboneConfig
    base_model_prefix = MODEL_TYPE  # no base-model attribute: the network is `backbone`
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    has_attentions = False
    supports_gradient_checkpointing = False

    def __init__(self, config: NattkBackboneConfig) -> None:
        super().__init__(config)
        self.backbone = create_model(config.variant, **config.core_kwargs())
        self.num_features = [self.backbone.widths[0], *self.backbone.widths]
        self.post_init()

    @property
    def out_features(self) -> list[str]:
        return self.config.out_features

    @out_features.setter
    def out_features(self, value) -> None:
        raise AttributeError(_FIXED_OUTPUTS)

    @property
    def out_indices(self) -> list[int]:
        return self.config.out_indices

    @out_indices.setter
    def out_indices(self, value) -> None:
        raise AttributeError(_FIXED_OUTPUTS)

    def _init_weights(self, module: torch.nn.Module) -> None:
        """transformers' initialisation, plus the core's rpb and layer-scale values.

        transformers builds models on the meta device and initialises what a checkpoint
        does not hold through this method, so every parameter of the core is covered.
        """
        super()._init_weights(module)
        if isinstance(module, NeighborhoodAttention2D) and module.rpb is not None:
            init.trunc_normal_(module.rpb, std=0.02, a=-2.0, b=2.0)
        elif isinstance(module, NABlock) and module.gamma1 is not None:
            layer_scale = VARIANTS[self.config.variant].layer_scale
            init.constant_(module.gamma1, layer_scale)
            init.constant_(module.gamma2, layer_scale)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[BackboneOutput, tuple]:
        """Runs the backbone.

        Args:
            pixel_values: ``[B, C, H, W]`` images.
            output_hidden_states: Also return every stage's un-normed features.
            output_attentions: Must be false (not available).
            return_dict: Return a ``BackboneOutput`` (default) or a tuple.

        Raises:
            ValueError: ``output_attentions`` was asked for.
        """
        if output_attentions:
            raise ValueError("NattkBackbone does not return attention weights")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        stem, *levels = self.backbone.forward_levels(pixel_values, with_stem=True)
        feature_maps = tuple(self.backbone.dense_outputs(levels))
        hidden_states = None
        if output_hidden_states:  # one per stage name: the stem's, then every level's
            hidden_states = tuple(h.permute(0, 3, 1, 2) for h in (stem, *levels))
        if not return_dict:
            return (feature_maps,) + ((hidden_states,) if output_hidden_states else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states)

    @classmethod
    def _resolve_config(
        cls, folder: Path, config: Optional[NattkBackboneConfig], kwargs: dict
    ) -> NattkBackboneConfig:
        """The folder's ``config.json`` (or ``config``) with ``kwargs``'s overrides.

        Raises:
            TypeError: ``kwargs`` holds arguments that are no configuration field.
        """
        for name in _HUB_KWARGS:
            kwargs.pop(name, None)
        if config is None:
            config, kwargs = cls.config_class.from_pretrained(
                str(folder), return_unused_kwargs=True, **kwargs
            )
        else:
            overrides = {k: kwargs.pop(k) for k in list(kwargs) if hasattr(config, k)}
            base = config.to_dict()
            if {"out_features", "out_indices"} & set(overrides):
                base.pop("out_features", None), base.pop("out_indices", None)
            config = cls.config_class.from_dict({**base, **overrides})
        if kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unknown arguments {sorted(kwargs)}"
            )
        return config

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        *model_args,
        config: Optional[NattkBackboneConfig] = None,
        allow_missing: bool = False,
        dtype: Optional[torch.dtype] = None,
        **kwargs,
    ) -> NattkBackbone:
        """Builds the backbone from a folder and loads its weights, refusing gaps.

        The folder holds ``config.json`` and one weight file: what
        :meth:`save_pretrained` wrote, or what ``tools/convert_checkpoint.py --to hf``
        made of an official ``.pth``. Weights go through
        :func:`nattk.backbones.load_pretrained` (official, toolkit and Hugging Face
        key layouts; ``.safetensors`` without pickle).

        Args:
            pretrained_model_name_or_path: The folder.
            config: Use this configuration instead of the folder's ``config.json``.
            allow_missing: Load even when the file lacks some of the model's tensors.
            dtype: Cast the loaded model to this dtype, or its name (``torch_dtype`` is
                accepted too).
            **kwargs: Configuration overrides (e.g. ``out_features``).

        Raises:
            FileNotFoundError: No such folder, or no weight file in it.
            ValueError: The weights lack tensors (unless ``allow_missing``) or do not fit.
            TypeError: Unknown keyword arguments.
        """
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes no positional model args")
        folder = Path(pretrained_model_name_or_path) / kwargs.pop("subfolder", "")
        weights = weights_file(folder)  # refuses a folder that is not there first
        dtype = kwargs.pop("torch_dtype", dtype)
        model = cls(cls._resolve_config(folder, config, kwargs))
        load_pretrained(model.backbone, weights, allow_missing=allow_missing)
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        return model.eval()


def save_backbone_folder(
    checkpoint: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
    folder: Union[str, os.PathLike],
    config: NattkBackboneConfig,
) -> Path:
    """Writes ``checkpoint`` as a model folder that :meth:`NattkBackbone.from_pretrained` reads.

    The weights go through :func:`nattk.backbones.load_pretrained` (an ImageNet
    classifier's ``norm``/``head`` are left out, the dense output norms start fresh,
    and a missing tensor is refused), then transformers' ``save_pretrained`` writes
    ``config.json`` and ``model.safetensors``.

    Args:
        checkpoint: A state dict or file in any layout :func:`load_pretrained` reads.
        folder: The output folder.
        config: The backbone's configuration (variant, dilations, kernel, outputs).

    Returns:
        The folder.
    """
    model = NattkBackbone(config)
    load_pretrained(model.backbone, checkpoint)
    model.save_pretrained(folder)
    return Path(folder)


def register_backbones() -> None:
    """Registers :class:`NattkBackboneConfig` / :class:`NattkBackbone` with the Auto classes."""
    AutoConfig.register(MODEL_TYPE, NattkBackboneConfig, exist_ok=True)
    AutoBackbone.register(NattkBackboneConfig, NattkBackbone, exist_ok=True)


register_backbones()
