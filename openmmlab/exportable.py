"""What ``tools/export_onnx.py`` exports from an MMDetection / MMSegmentation config.

* the dense backbone of any config (``[B, 3, H, W]`` -> its feature maps);
* the whole segmentor of an MMSegmentation config, in whole-image inference mode:
  image -> ``EncoderDecoder.encode_decode`` -> logits ``[B, classes, H, W]`` (the
  decode head's output resized to the input, before argmax).

Normalisation stays outside the graph: feed what the config's data preprocessor
produces (mean/std-normalised RGB, padded to its ``size_divisor``).
"""

from __future__ import annotations

from typing import Optional

import torch
from mmengine.config import Config
from torch import nn

from nattk.openmmlab.cli import framework_of


class ResizedSegmentorLogits(nn.Module):
    """Whole-image logits of an MMSegmentation ``EncoderDecoder`` (its ``encode_decode``).

    The decode head's logits resized to the input (``[B, classes, H, W]``, before
    argmax); compare :class:`nattk.segmentation.complexity.DecodeHeadLogits`, the head's
    output at its own resolution.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        if not hasattr(segmentor, "encode_decode"):
            raise ValueError(f"{type(segmentor).__name__} is not an MMSegmentation segmentor")
        self.segmentor = segmentor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        shape = tuple(image.shape[-2:])
        metas = [dict(img_shape=shape, pad_shape=shape, ori_shape=shape)] * image.shape[0]
        return self.segmentor.encode_decode(image, metas)


def build_exportable(
    config: str,
    checkpoint: Optional[str] = None,
    backbone_only: bool = False,
    allow_partial: bool = False,
):
    """The eval-mode module to export from ``config`` (and ``checkpoint``, refused when
    it does not fit the model unless ``allow_partial``: see :func:`nattk.inference.load_model`).

    Returns:
        ``(module, framework)``; SyncBN is reverted to BN (it cannot run on CPU).

    Raises:
        ValueError: A whole-model export of a detection config, or of a segmentor
            whose decode head needs more than the features (Mask2Former).
    """
    from mmengine.model import revert_sync_batchnorm

    from nattk.inference import load_model

    cfg = Config.fromfile(config)
    framework = framework_of(cfg)
    if framework == "mmdet" and not backbone_only:
        raise ValueError(
            "whole-detector export is not supported (post-processing and RoI ops); "
            "pass --backbone to export the backbone of a detection config"
        )
    model = load_model(cfg, checkpoint, device="cpu", allow_partial=allow_partial)
    model = revert_sync_batchnorm(model).eval()
    if backbone_only:
        return model.backbone, framework
    from nattk.segmentation.complexity import has_plain_decode_head

    if not has_plain_decode_head(model):
        raise ValueError(
            f"{type(model.decode_head).__name__} needs data samples at inference; only plain "
            "decode heads (UperNet, FPN, ...) export as a whole model. Pass --backbone for the "
            "backbone"
        )
    return ResizedSegmentorLogits(model), framework
