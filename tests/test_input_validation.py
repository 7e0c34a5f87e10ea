"""Bad values are refused where they are given, with the valid ones named."""

from __future__ import annotations

import pytest
import torch

from nattk.backbones import create_model


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("nat_mini", dict(dilations="cocoo"), r"unknown dilation preset 'cocoo' \(DiNAT presets: \['ade20k512'"),
        ("nat_mini", dict(dilations="coco"), r"nat_mini is a NAT model .*'coco' is a DiNAT dilation preset"),
        ("dinat_mini", dict(dilations="cocoo"), r"unknown dilation preset 'cocoo' for dinat; choose from"),
        ("dinat_mini", dict(out_indices=(9,)), r"out_indices \(9,\) must be a non-empty subset of 0..3"),
        ("dinat_mini", dict(num_classes=0, out_indices=()), r"out_indices \(\) must be a non-empty"),
    ],
)  # fmt: skip
def test_create_model_refuses_at_once(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, **kwargs)


def test_nat_takes_its_default_and_all_ones():
    assert create_model("nat_mini", num_classes=0).levels[0].blocks[0].attn.dilation == (1, 1)
    create_model("nat_mini", num_classes=0, dilations=[[1] * 3, [1] * 4, [1] * 6, [1] * 5])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_an_integer_image_is_refused_with_what_to_do(dtype):
    model = create_model("dinat_mini", num_classes=0, depths=[1, 1, 2, 1], embed_dim=32)
    with pytest.raises(ValueError, match=rf"floating-point image batch, got {dtype}: convert it"):
        model(torch.zeros(1, 3, 64, 64, dtype=dtype))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dilations="cocoo"), r"unknown dilation preset 'cocoo' for dinat"),
        (dict(kernel_size=6), r"kernel_size must be odd and positive, got 6"),
        (dict(variant="nat_mini", dilations="coco"), r"'coco' is a DiNAT dilation preset"),
        (dict(dilations=[[1], [1], [1], [1]]), r"expected lengths \[3, 4, 18, 5\]"),
    ],
)
def test_hugging_face_config_refuses_in_its_constructor(kwargs, message):
    pytest.importorskip("transformers")
    from nattk.hf.backbone import NattkBackboneConfig

    with pytest.raises(ValueError, match=message):
        NattkBackboneConfig(**kwargs)
