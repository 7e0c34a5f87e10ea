"""The forward pass the published detection FLOPs were counted on.

MMDetection 2.x ``get_flops.py`` traced ``forward_dummy``: backbone, neck, the RPN
head, then every RoI head stage on 1000 proposals, with the mask head(s) on the
first 100. MMDetection 3.x's ``_forward`` differs (RPN post-processing, cascade
refinement, masks on every proposal), so counting it would not reproduce the tables.
"""

from __future__ import annotations

import torch
from mmdet.structures.bbox import bbox2roi
from torch import nn


class DummyForward(nn.Module):
    """Wraps a two-stage detector so that ``forward(images)`` is ``forward_dummy``.

    Args:
        detector: An MMDetection ``TwoStageDetector`` (Mask R-CNN, Cascade Mask R-CNN).
        num_proposals: Boxes fed to the bbox head(s).
        num_mask_rois: Boxes fed to the mask head(s).
    """

    def __init__(self, detector: nn.Module, num_proposals: int = 1000, num_mask_rois: int = 100):
        super().__init__()
        if not (hasattr(detector, "rpn_head") and hasattr(detector, "roi_head")):
            raise TypeError(f"{type(detector).__name__} is not a two-stage detector")
        self.detector = detector
        self.num_proposals = num_proposals
        self.num_mask_rois = num_mask_rois

    def proposals(self, height: int, width: int) -> torch.Tensor:
        """Fixed, valid boxes (the count is what matters for FLOPs, not the values)."""
        steps = torch.arange(self.num_proposals, dtype=torch.float32) / self.num_proposals
        x1, y1 = steps * width * 0.5, (1 - steps) * height * 0.5
        return torch.stack([x1, y1, x1 + width * 0.4, y1 + height * 0.4], dim=1)

    def forward(self, images: torch.Tensor) -> list:
        detector = self.detector
        features = detector.extract_feat(images)
        outputs = [detector.rpn_head(features)]
        rois = bbox2roi([self.proposals(*images.shape[-2:]).to(images)])
        mask_rois = rois[: self.num_mask_rois]
        roi_head = detector.roi_head
        stages = (
            [(s,) for s in range(roi_head.num_stages)] if hasattr(roi_head, "num_stages") else [()]
        )
        for stage in stages:
            outputs.append(roi_head._bbox_forward(*stage, features, rois)["cls_score"])
            if roi_head.with_mask:
                outputs.append(roi_head._mask_forward(*stage, features, mask_rois)["mask_preds"])
        return outputs
