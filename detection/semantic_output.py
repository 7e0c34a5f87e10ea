"""Semantic output for MMDetection's Mask2Former, so one panoptic model reports PQ, AP and mIoU.

Detectron2's Mask2Former evaluates a panoptic model on all three tasks: its semantic
prediction is ``einsum("qc,qhw->chw", softmax(class_logits)[..., :-1], sigmoid(masks))``
on the masks resized to the output size. MMDetection's ``MaskFormerFusionHead`` raises
``NotImplementedError`` for it and its ``MaskFormer`` refuses semantic results; the two
subclasses below add them as ``pred_sem_seg`` (labels), which MMDetection's
``SemSegMetric`` scores against the ``gt_sem_seg`` that ``LoadPanopticAnnotations``
derives from the panoptic PNG.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.models.detectors import Mask2Former
from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
from mmdet.registry import MODELS
from mmengine.structures import PixelData
from torch import Tensor


@MODELS.register_module()
class MaskFormerFusionHeadWithSemSeg(MaskFormerFusionHead):
    """``MaskFormerFusionHead`` that also produces the semantic prediction.

    Set ``test_cfg.semantic_on=True`` (with ``panoptic_on`` / ``instance_on`` as
    before) to add ``sem_results`` to every image's results.
    """

    def __init__(self, *args, test_cfg: Optional[dict] = None, **kwargs):
        test_cfg = dict(test_cfg or {})
        self.semantic_on = bool(test_cfg.pop("semantic_on", False))
        super().__init__(*args, test_cfg=test_cfg, **kwargs)

    def semantic_postprocess(self, mask_cls: Tensor, mask_pred: Tensor) -> PixelData:
        """Per-pixel class of ``Σ_q softmax(cls_q)[c]·sigmoid(mask_q)`` (no-object dropped).

        Args:
            mask_cls: ``(num_queries, num_classes + 1)`` class logits.
            mask_pred: ``(num_queries, H, W)`` mask logits at the output size.
        """
        scores = F.softmax(mask_cls, dim=-1)[..., :-1]
        semseg = torch.einsum("qc,qhw->chw", scores, mask_pred.sigmoid())
        return PixelData(sem_seg=semseg.argmax(dim=0, keepdim=True))

    def predict(self, mask_cls_results, mask_pred_results, batch_data_samples, rescale=False, **kw):
        """The parent's results, plus ``sem_results`` when ``semantic_on``."""
        results = super().predict(
            mask_cls_results, mask_pred_results, batch_data_samples, rescale=rescale, **kw
        )
        if not self.semantic_on:
            return results
        for result, mask_cls, mask_pred, sample in zip(
            results, mask_cls_results, mask_pred_results, batch_data_samples
        ):
            height, width = sample.metainfo["img_shape"][:2]
            mask_pred = mask_pred[:, :height, :width]
            if rescale:
                mask_pred = F.interpolate(
                    mask_pred[:, None],
                    size=sample.metainfo["ori_shape"][:2],
                    mode="bilinear",
                    align_corners=False,
                )[:, 0]
            result["sem_results"] = self.semantic_postprocess(mask_cls, mask_pred)
        return results


@MODELS.register_module()
class Mask2FormerWithSemSeg(Mask2Former):
    """``Mask2Former`` that stores semantic results as ``pred_sem_seg``."""

    def add_pred_to_datasample(self, data_samples, results_list):
        """As the parent, with ``sem_results`` -> ``data_sample.pred_sem_seg``."""
        semantic = [results.pop("sem_results", None) for results in results_list]
        data_samples = super().add_pred_to_datasample(data_samples, results_list)
        for data_sample, sem_results in zip(data_samples, semantic):
            if sem_results is not None:
                data_sample.pred_sem_seg = sem_results
        return data_samples
