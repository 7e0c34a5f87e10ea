"""Detectron2's own ``DetectionCheckpointer`` reading ``MODEL.WEIGHTS=*.safetensors``.

Runs in ``.venv-d2`` (see ``conftest.py`` here); the files are this toolkit's and the one
transformers' ``save_pretrained`` writes (``tests/test_safetensors.py``'s ``source``).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed (not on PyPI; build it from source)"
)
import test_safetensors  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from hf_helpers import small_model  # noqa: E402

from nattk.mask2former.checkpoint import enable_safetensors_weights  # noqa: E402

#: The fixture: this toolkit's file and the one transformers' save_pretrained writes.
source = test_safetensors.source


def test_detectron2_checkpointer_reads_safetensors_after_enabling(source):
    """Detectron2 loads MODEL.WEIGHTS=*.safetensors onto ``backbone.*``."""
    path, expected = source
    enable_safetensors_weights()
    wrapper = torch.nn.Module()
    wrapper.backbone = small_model("dinat", test_safetensors.LAYER_SCALE, num_classes=0)
    DetectionCheckpointer(wrapper).load(str(path))
    backbone = {k: v for k, v in expected.items() if k not in test_safetensors.CLASSIFIER}
    loaded = wrapper.backbone.state_dict()
    test_safetensors.assert_same_tensors({k: loaded[k] for k in backbone}, backbone)
