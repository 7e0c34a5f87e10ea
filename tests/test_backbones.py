"""NAT / DiNAT / DiNAT_s: exact structure, checkpoints, shapes, freezing, checkpointing."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from nattk.backbones import weights as ckpt
from nattk.backbones.nat import NAT, DiNAT_s
from nattk.backbones.variants import VARIANTS, create_model, dilation_preset

# Reference values (nat_dinat.md §2.2, §3): (embed, depths, heads, mlp, layer_scale),
# the parameter counts computed there, and the published (rounded) counts in millions.
REFERENCE = {
    "nat_mini": ((64, (3, 4, 6, 5), (2, 4, 8, 16), 3, False), 19.98, 20),
    "nat_tiny": ((64, (3, 4, 18, 5), (2, 4, 8, 16), 3, False), 27.90, 28),
    "nat_small": ((96, (3, 4, 18, 5), (3, 6, 12, 24), 2, True), 50.74, 51),
    "nat_base": ((128, (3, 4, 18, 5), (4, 8, 16, 32), 2, True), 89.77, 90),
    "dinat_mini": ((64, (3, 4, 6, 5), (2, 4, 8, 16), 3, False), 19.98, 20),
    "dinat_tiny": ((64, (3, 4, 18, 5), (2, 4, 8, 16), 3, False), 27.90, 28),
    "dinat_small": ((96, (3, 4, 18, 5), (3, 6, 12, 24), 2, False), 50.72, 51),
    "dinat_base": ((128, (3, 4, 18, 5), (4, 8, 16, 32), 2, True), 89.77, 90),
    "dinat_large": ((192, (3, 4, 18, 5), (6, 12, 24, 48), 2, False), 200.94, 200),
    "dinat_s_tiny": ((96, (2, 2, 6, 2), (3, 6, 12, 24), 4, False), 28.29, 28),
    "dinat_s_small": ((96, (2, 2, 18, 2), (3, 6, 12, 24), 4, False), 49.61, 50),
    "dinat_s_base": ((128, (2, 2, 18, 2), (4, 8, 16, 32), 4, False), 87.77, 88),
    "dinat_s_large": ((192, (2, 2, 18, 2), (6, 12, 24, 48), 4, False), 196.53, 197),
}
# Building a full-size model takes seconds: the fast tier checks the smallest of each
# family and nat_small (the smallest with layer scale).
FAST_VARIANTS = {"nat_mini", "nat_small", "dinat_mini", "dinat_s_tiny"}
VARIANT_TIERS = [
    n if n in FAST_VARIANTS else pytest.param(n, marks=pytest.mark.slow) for n in sorted(REFERENCE)
]


def expected_keys(name: str, num_classes: int, kernel: int = 7) -> list[tuple[str, tuple]]:
    """Key/shape list written from the documented official layout (not from our code)."""
    (embed, depths, heads, mlp, layer_scale), _, _ = REFERENCE[name]
    swin_like = name.startswith("dinat_s_")
    keys = []
    if swin_like:
        keys += [("patch_embed.proj.weight", (embed, 3, 4, 4)), ("patch_embed.proj.bias", (embed,))]
    else:
        keys += [
            ("patch_embed.proj.0.weight", (embed // 2, 3, 3, 3)),
            ("patch_embed.proj.0.bias", (embed // 2,)),
            ("patch_embed.proj.1.weight", (embed, embed // 2, 3, 3)),
            ("patch_embed.proj.1.bias", (embed,)),
        ]
    keys += [("patch_embed.norm.weight", (embed,)), ("patch_embed.norm.bias", (embed,))]
    stage = "layers" if swin_like else "levels"
    for i, (depth, h) in enumerate(zip(depths, heads)):
        c = embed * 2**i
        for j in range(depth):
            p = f"{stage}.{i}.blocks.{j}."
            if layer_scale:
                keys += [(p + "gamma1", (c,)), (p + "gamma2", (c,))]
            keys += [
                (p + "norm1.weight", (c,)),
                (p + "norm1.bias", (c,)),
                (p + "attn.rpb", (h, 2 * kernel - 1, 2 * kernel - 1)),
                (p + "attn.qkv.weight", (3 * c, c)),
                (p + "attn.qkv.bias", (3 * c,)),
                (p + "attn.proj.weight", (c, c)),
                (p + "attn.proj.bias", (c,)),
                (p + "norm2.weight", (c,)),
                (p + "norm2.bias", (c,)),
                (p + "mlp.fc1.weight", (mlp * c, c)),
                (p + "mlp.fc1.bias", (mlp * c,)),
                (p + "mlp.fc2.weight", (c, mlp * c)),
                (p + "mlp.fc2.bias", (c,)),
            ]
        if i < len(depths) - 1:
            p = f"{stage}.{i}.downsample."
            if swin_like:
                keys += [
                    (p + "norm.weight", (4 * c,)),
                    (p + "norm.bias", (4 * c,)),
                    (p + "reduction.weight", (2 * c, 4 * c)),
                ]
            else:
                keys += [
                    (p + "reduction.weight", (2 * c, c, 3, 3)),
                    (p + "norm.weight", (2 * c,)),
                    (p + "norm.bias", (2 * c,)),
                ]
    last = embed * 2 ** (len(depths) - 1)
    if num_classes:
        keys += [
            ("norm.weight", (last,)),
            ("norm.bias", (last,)),
            ("head.weight", (num_classes, last)),
            ("head.bias", (num_classes,)),
        ]
    else:
        keys += [(f"norm{i}.{t}", (embed * 2**i,)) for i in range(4) for t in ("weight", "bias")]
    return keys


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- structure
def test_every_reference_variant_exists():
    assert set(VARIANTS) == set(REFERENCE)


@pytest.mark.parametrize("name", VARIANT_TIERS)
def test_state_dict_keys_and_shapes_match_official_layout(name):
    for num_classes in (1000, 0):
        model = create_model(name, num_classes=num_classes)
        got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        want = expected_keys(name, num_classes)
        assert sorted(got) == sorted(want)
        # within a block the official order is rpb, qkv, proj
        attn = [k for k, _ in got if ".blocks.0.attn." in k][:5]
        assert [k.split("attn.")[1] for k in attn] == [
            "rpb",
            "qkv.weight",
            "qkv.bias",
            "proj.weight",
            "proj.bias",
        ]


def test_exact_parameter_counts_from_reference():
    assert _count(create_model("nat_tiny")) == 27_901_582
    assert len(create_model("nat_tiny").state_dict()) == 409
    assert _count(create_model("nat_tiny", num_classes=0)) == 27_389_478
    assert len(create_model("nat_tiny", num_classes=0).state_dict()) == 413
    assert _count(create_model("dinat_s_tiny")) == 28_288_354
    assert _count(create_model("dinat_s_tiny", num_classes=0)) == 27_520_698


@pytest.mark.parametrize("name", VARIANT_TIERS)
def test_parameter_counts_round_to_published(name):
    _, computed, published = REFERENCE[name]
    millions = _count(create_model(name)) / 1e6
    assert abs(millions - computed) < 0.01
    assert abs(millions - published) < 1.0  # the papers round DiNAT-L's 200.9M down


def test_kernel_11_dinat_large_has_21x21_rpb():
    model = create_model("dinat_large", num_classes=0, kernel_size=11, dilations="m2f")
    assert model.state_dict()["levels.0.blocks.0.attn.rpb"].shape == (6, 21, 21)
    assert model.dilations[2][:4] == [1, 2, 1, 3] and model.dilations[0] == [1, 14, 1]


def test_dilation_presets_expand_to_depths():
    assert dilation_preset("dinat", "coco", (3, 4, 6, 5)) == [
        [1, 28, 1],
        [1, 7, 1, 14],
        [1, 3, 1, 5, 1, 7],
        [1, 3, 1, 3, 1],
    ]
    assert dilation_preset("dinat", "imagenet224", (3, 4, 18, 5))[2] == [1, 2] * 9
    assert dilation_preset("dinat_s", "ade20k512", (2, 2, 18, 2))[2] == [1, 2, 1, 3, 1, 4] * 3
    model = create_model("dinat_tiny", num_classes=0, dilations="ade20k512")
    assert [layer.attn.dilation[0] for layer in model.levels[0].blocks] == [1, 16, 1]


def test_feature_info_is_the_single_source_of_channels_and_strides():
    model = create_model("dinat_s_base", num_classes=0, out_indices=(1, 3))
    assert model.out_channels == [256, 1024]
    assert model.out_strides == [8, 32]
    assert [i["module"] for i in model.feature_info] == ["norm1", "norm3"]


# --------------------------------------------------------------------------- forward shapes
def _swin_shapes(height, width):
    from mmdet.models.backbones import SwinTransformer

    swin = SwinTransformer(embed_dims=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7)
    swin.eval()  # mmdet's Swin.train() returns None, so no chaining
    with torch.no_grad():
        return [tuple(f.shape[-2:]) for f in swin(torch.zeros(1, 3, height, width))]


@pytest.mark.parametrize("size", [(511, 511), (112, 137), (64, 64)])
@pytest.mark.parametrize("name", ["dinat_mini", "dinat_s_tiny"])
def test_dense_output_shapes_for_odd_sizes_follow_mmdet_swin(name, size):
    model = create_model(name, num_classes=0, dilations="coco").eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [o.shape[1] for o in outs] == model.out_channels
    assert [tuple(o.shape[-2:]) for o in outs] == _swin_shapes(*size)
    assert [tuple(o.shape[-2:]) for o in outs] == [
        (math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in model.out_strides
    ]


def test_classifier_forward():
    model = create_model("nat_mini", num_classes=10).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


# --------------------------------------------------------------------------- freezing, checkpointing
def _tiny(**kwargs):
    return NAT(
        16, (1, 1, 2, 1), (1, 1, 2, 2), mlp_ratio=2.0, num_classes=0, drop_path_rate=0.0, **kwargs
    )


@pytest.mark.parametrize("frozen", [-1, 0, 1, 2, 4])
def test_frozen_stages_freeze_exactly_the_right_parameters(frozen):
    model = _tiny(frozen_stages=frozen)
    model.train()
    frozen_prefixes = []
    if frozen >= 0:
        frozen_prefixes.append("patch_embed.")
    frozen_prefixes += [f"levels.{i}." for i in range(max(frozen, 0))] + [
        f"norm{i}." for i in range(max(frozen, 0))
    ]
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(tuple(frozen_prefixes))), name
    for i in range(max(frozen, 0)):
        assert not model.levels[i].training
    if frozen < 4:
        assert model.levels[3].training


def test_with_cp_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    plain = _tiny()
    checkpointed = _tiny(with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 48)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        outs = model(x)
        sum((o * torch.arange(o.numel()).view_as(o).sin()).sum() for o in outs).backward()
        grads.append(([o.detach() for o in outs], [p.grad.clone() for p in model.parameters()]))
    for a, b in zip(grads[0][0] + grads[0][1], grads[1][0] + grads[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


# --------------------------------------------------------------------------- checkpoints
def _save(state, tmp_path, name="ckpt.pth", wrap=None):
    path = tmp_path / name
    torch.save(state if wrap is None else {wrap: state, "meta": {"epoch": 3}}, path)
    return path


def test_classification_checkpoint_round_trips_strict(tmp_path):
    source = create_model("dinat_mini", num_classes=1000).eval()
    path = _save(source.state_dict(), tmp_path)
    target = create_model("dinat_mini", num_classes=1000).eval()
    target.load_state_dict(ckpt.read_state_dict(path), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


@pytest.mark.parametrize("wrap,prefix", [(None, ""), ("model", "module."), ("state_dict", "")])
def test_dense_backbone_loads_classification_checkpoint_and_says_so(tmp_path, wrap, prefix, caplog):
    source = create_model("dinat_mini", num_classes=1000)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    dense = create_model("dinat_mini", num_classes=0, dilations="coco")
    with caplog.at_level("INFO"):
        report = ckpt.load_pretrained(dense, _save(state, tmp_path, wrap=wrap))
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.expected_missing) == sorted(
        f"norm{i}.{t}" for i in range(4) for t in ("weight", "bias")
    )
    assert sorted(report.expected_unexpected) == [
        "head.bias",
        "head.weight",
        "norm.bias",
        "norm.weight",
    ]
    assert report.loaded == report.total - 8
    assert "loaded 249/257 tensors" in caplog.text and "classifier tensors, expected" in caplog.text
    assert torch.equal(
        dense.state_dict()["levels.2.blocks.5.attn.rpb"],
        source.state_dict()["levels.2.blocks.5.attn.rpb"],
    )


def test_missing_rpb_is_an_error_unless_opted_out(tmp_path):
    state = {
        k: v
        for k, v in create_model("nat_mini", num_classes=0).state_dict().items()
        if not k.endswith("rpb")
    }
    path = _save(state, tmp_path)
    with pytest.raises(ValueError, match=r"lacks 18 of the model's tensors .*attn\.rpb"):
        ckpt.load_pretrained(create_model("nat_mini", num_classes=0), path)
    report = ckpt.load_pretrained(create_model("nat_mini", num_classes=0), path, allow_missing=True)
    assert len(report.missing) == 18 and all(k.endswith("attn.rpb") for k in report.missing)


def test_detector_checkpoint_uses_its_backbone_part(tmp_path):
    backbone = create_model("nat_mini", num_classes=0)
    state = {"backbone." + k: v for k, v in backbone.state_dict().items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    report = ckpt.load_pretrained(
        create_model("nat_mini", num_classes=0), _save(state, tmp_path, wrap="state_dict")
    )
    assert report.loaded == report.total and not report.unexpected


def test_shape_mismatch_is_an_error(tmp_path):
    state = create_model("nat_mini", num_classes=0).state_dict()
    state["levels.0.blocks.0.mlp.fc1.weight"] = torch.zeros(7, 64)
    with pytest.raises(
        ValueError, match=r"levels\.0\.blocks\.0\.mlp\.fc1\.weight: checkpoint \(7, 64\)"
    ):
        ckpt.load_pretrained(create_model("nat_mini", num_classes=0), state)


@pytest.mark.slow
def test_rpb_13_to_21_is_resized_bicubically(caplog):
    source = create_model("dinat_large", num_classes=0)
    target = create_model("dinat_large", num_classes=0, kernel_size=11)
    with caplog.at_level(logging.WARNING, logger=ckpt.load.logger.name):
        report = ckpt.load_pretrained(target, source.state_dict())
    assert len(report.resized) == 30 and not report.missing
    assert set(report.resized_sizes) == {"13x13 -> 21x21"}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "made for another kernel size: 30 resized bicubically" in warning.getMessage()
    assert (
        "13x13 -> 21x21: levels.0.blocks.0.attn.rpb, levels.0.blocks.1.attn.rpb"
        in warning.getMessage()
    )
    rpb7 = source.state_dict()["levels.1.blocks.2.attn.rpb"]
    rpb11 = target.state_dict()["levels.1.blocks.2.attn.rpb"]
    expected = torch.nn.functional.interpolate(
        rpb7[None], size=(21, 21), mode="bicubic", align_corners=False
    )[0]
    assert torch.allclose(rpb11, expected)


# Hugging Face checkpoints: tests/test_checkpoint_sources.py (transformers' own classes).


# --------------------------------------------------------------------------- bad input
def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'dinat_huge'"):
        create_model("dinat_huge")
    with pytest.raises(ValueError, match=r"expected lengths \[3, 4, 6, 5\]"):
        create_model("dinat_mini", dilations=[[1, 2, 1], [1], [1], [1]])
    with pytest.raises(ValueError, match="unknown dilation preset 'coco800'"):
        create_model("dinat_mini", dilations="coco800")
    with pytest.raises(ValueError, match="NAT model"):
        create_model("nat_mini", dilations=[[1, 2, 1], [1] * 4, [1] * 6, [1] * 5])
    with pytest.raises(ValueError, match=r"out_indices \(0, 4\)"):
        create_model("nat_mini", num_classes=0, out_indices=(0, 4))
    with pytest.raises(ValueError, match=r"frozen_stages must be in \[-1, 4\], got 5"):
        create_model("nat_mini", num_classes=0, frozen_stages=5)
    model = create_model("nat_mini", num_classes=0)
    with pytest.raises(
        ValueError, match=r"expected an image batch \[B, C, H, W\], got \(3, 32, 32\)"
    ):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 32, 32))


def test_dinat_s_pads_inputs_not_divisible_by_four():
    model = DiNAT_s(16, (1, 1, 1, 1), (1, 1, 2, 2), num_classes=0, drop_path_rate=0.0).eval()
    outs = model(torch.randn(1, 3, 30, 45))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 12), (4, 6), (2, 3), (1, 2)]
