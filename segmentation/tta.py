"""Test-time augmentation merge for Mask2Former's semantic scores.

MMSegmentation's ``SegTTAModel`` applies ``softmax`` to every augmented prediction
before averaging, which is right for logits. Mask2Former's ``seg_logits`` are already
``Σ_q softmax(cls_q)·sigmoid(mask_q)`` scores, and Detectron2's
``SemanticSegmentorWithTTA`` averages those raw ``sem_seg`` maps. Softmax over them
reweights classes non-linearly (a 0.6/0.4 split becomes 0.55/0.45), which can change
the merged argmax.
"""

from __future__ import annotations

import torch
from mmengine.structures import PixelData
from mmseg.models import SegTTAModel
from mmseg.registry import MODELS


@MODELS.register_module()
class MeanScoreSegTTAModel(SegTTAModel):
    """``SegTTAModel`` that averages ``seg_logits`` as they are (no softmax), then argmax."""

    def merge_preds(self, data_samples_list):
        """Merges the augmented predictions of each image (flips already undone)."""
        merged = []
        for data_samples in data_samples_list:
            scores = torch.stack([sample.seg_logits.data for sample in data_samples]).mean(0)
            result = data_samples[0].new()
            result.set_data(
                {
                    "seg_logits": PixelData(data=scores),
                    "pred_sem_seg": PixelData(data=scores.argmax(0, keepdim=True)),
                }
            )
            if "gt_sem_seg" in data_samples[0]:
                result.gt_sem_seg = data_samples[0].gt_sem_seg
            merged.append(result)
        return merged
