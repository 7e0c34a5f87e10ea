"""The forward pass the published segmentation FLOPs were counted on.

MMSegmentation 0.x ``get_flops.py`` traced ``forward_dummy``: backbone and decode head
(no auxiliary head, which only trains) at 2048×512.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn


def has_plain_decode_head(segmentor: nn.Module) -> bool:
    """Whether the segmentor's decode head is a plain ``head(features)``.

    Query-based heads (Mask2Former) need data samples: they neither trace as
    :class:`DecodeHeadLogits` (their published FLOPs were counted by Detectron2's tool,
    a convention not reproduced here) nor export as a whole model.
    """
    return len(inspect.signature(segmentor.decode_head.forward).parameters) == 1


class DecodeHeadLogits(nn.Module):
    """Wraps a segmentor so that ``forward(images)`` is MMSegmentation 0.x's ``forward_dummy``.

    The output is the decode head's logits at the head's resolution (stride 4 for
    UperNet), not resized to the input; compare
    :class:`nattk.openmmlab.exportable.ResizedSegmentorLogits`.

    Args:
        segmentor: An MMSegmentation ``EncoderDecoder`` whose decode head takes features
            only (UperNet, FCN).
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    @staticmethod
    def supports(segmentor: nn.Module) -> bool:
        """Whether the decode head is a plain ``head(features)`` (:func:`has_plain_decode_head`)."""
        return has_plain_decode_head(segmentor)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Decode-head logits of ``images``."""
        return self.segmentor.decode_head(self.segmentor.extract_feat(images))
