"""Every NAT-family variant as a transformers backbone (:mod:`nattk.hf.backbone`)."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import HAVE_TRANSFORMERS, SKIP_REASON, SKIP_REASON_5, TRANSFORMERS_5

from nattk.backbones import VARIANTS, create_model, load_pretrained
from nattk.backbones.variants import DILATION_PRESETS

pytestmark = [
    pytest.mark.skipif(not HAVE_TRANSFORMERS, reason=SKIP_REASON),
    pytest.mark.skipif(HAVE_TRANSFORMERS and not TRANSFORMERS_5, reason=SKIP_REASON_5),
]

STAGES = ["stage1", "stage2", "stage3", "stage4"]
#: A small DiNAT_s: the map sizes of a 64x96 input need padding from level 2 on.
TINY = dict(variant="dinat_s_tiny", embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4])


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoBackbone, AutoConfig

    from nattk.hf import NattkBackbone, NattkBackboneConfig, use_toolkit_attention

    use_toolkit_attention()
    return AutoBackbone, AutoConfig, NattkBackbone, NattkBackboneConfig


def tiny(hf, **options):
    AutoBackbone, _, _, Config = hf
    config = Config(**{**TINY, "out_features": STAGES, **options})
    return AutoBackbone.from_config(config).eval()


def core_twin(model):
    """Our core model with the HF backbone's arguments and weights."""
    core = create_model(model.config.variant, **model.config.core_kwargs()).eval()
    core.load_state_dict(model.backbone.state_dict(), strict=True)
    return core


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_builds_through_auto_backbone(hf, name):
    AutoBackbone, AutoConfig, NattkBackbone, Config = hf
    family = VARIANTS[name].family
    dilations = None if family == "nat" else sorted(DILATION_PRESETS[family])[-1]
    config = Config(variant=name, dilations=dilations, out_features=STAGES)
    assert isinstance(AutoConfig.for_model("nattk", variant=name), Config)
    with torch.device("meta"):
        model = AutoBackbone.from_config(config)
        core = create_model(name, num_classes=0, dilations=dilations)
    assert isinstance(model, NattkBackbone)
    assert model.channels == core.out_channels
    assert model.stage_names == ["stem", *STAGES]
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in core.parameters())
    assert [k[len("backbone.") :] for k in model.state_dict()] == list(core.state_dict())


def test_feature_maps_equal_the_core_backbones(hf):
    model = tiny(hf, out_features=["stage2", "stage4"])
    core = core_twin(model)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        expected = core(x)
        levels = core.forward_levels(x)
    assert model.channels == [32, 128] and core.out_indices == (1, 3)
    assert len(out.feature_maps) == 2
    for ours, theirs in zip(out.feature_maps, expected):
        assert torch.equal(ours, theirs)
    assert [tuple(h.shape) for h in out.hidden_states] == [  # one per stage name
        (2, 16, 16, 24),
        (2, 16, 16, 24),
        (2, 32, 8, 12),
        (2, 64, 4, 6),
        (2, 128, 2, 3),
    ]
    assert len(out.hidden_states) == len(model.stage_names) == 5
    assert torch.equal(out.hidden_states[3], levels[2].permute(0, 3, 1, 2))
    assert model(x, return_dict=False)[0][0].shape == (2, 32, 8, 12)


def test_negative_out_indices_and_fixed_outputs(hf):
    model = tiny(hf, out_features=None, out_indices=[-3, -1])
    assert model.out_features == ["stage2", "stage4"] and model.backbone.out_indices == (1, 3)
    assert [f.shape[1] for f in model(torch.randn(1, 3, 64, 96)).feature_maps] == [32, 128]
    with pytest.raises(AttributeError, match="fixed when it is built"):
        model.out_features = ["stage1"]


def test_save_pretrained_round_trip(hf, tmp_path):
    # NattkBackbone.from_pretrained, not AutoBackbone's: transformers 5.23's
    # AutoBackbone.from_pretrained asks the Hub whether a local folder is a repo id.
    NattkBackbone = hf[2]
    model = tiny(hf)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    model.save_pretrained(tmp_path)
    loaded = NattkBackbone.from_pretrained(str(tmp_path))
    assert type(loaded) is type(model) and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model(x).feature_maps, loaded(x).feature_maps):
            assert torch.equal(a, b)
    last = NattkBackbone.from_pretrained(str(tmp_path), out_features=["stage4"])
    assert last.out_features == ["stage4"] and len(last(x).feature_maps) == 1


def test_a_file_without_rpb_is_refused(hf, tmp_path):
    from safetensors.torch import load_file, save_file

    NattkBackbone = hf[2]
    tiny(hf).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    state = load_file(str(path))
    save_file({k: v for k, v in state.items() if not k.endswith(".rpb")}, str(path))
    with pytest.raises(ValueError, match=r"lacks 6 of the model's tensors .*\.attn\.rpb"):
        NattkBackbone.from_pretrained(str(tmp_path))
    model = NattkBackbone.from_pretrained(str(tmp_path), allow_missing=True)
    assert model.backbone.layers[0].blocks[0].attn.rpb.shape == (1, 13, 13)


def test_an_official_checkpoint_converted_to_a_folder_loads(hf, tmp_path):
    from nattk.convert_checkpoint import main as convert

    NattkBackbone = hf[2]
    classifier = create_model("nat_mini", num_classes=1000)
    torch.save({"model": classifier.state_dict()}, tmp_path / "nat_mini_in1k_224.pth")
    convert(
        [str(tmp_path / "nat_mini_in1k_224.pth"), str(tmp_path / "hf"), "--to", "hf"]
        + ["--variant", "nat_mini", "--kernel-size", "11"]
    )
    model = NattkBackbone.from_pretrained(str(tmp_path / "hf"))
    assert model.config.kernel_size == 11 and model.channels == [64, 128, 256, 512]
    dense = create_model("nat_mini", num_classes=0, kernel_size=11).eval()
    report = load_pretrained(dense, tmp_path / "nat_mini_in1k_224.pth")
    assert report.resized and not report.missing
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x).feature_maps, dense(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_kernel_size_is_read_from_the_checkpoint(hf, tmp_path):
    from nattk.convert_checkpoint import main as convert

    state = create_model("dinat_mini", num_classes=0, kernel_size=5).state_dict()
    torch.save(state, tmp_path / "k5.pth")
    convert(
        [str(tmp_path / "k5.pth"), str(tmp_path / "hf"), "--to", "hf", "--variant", "dinat_mini"]
    )
    assert hf[2].from_pretrained(str(tmp_path / "hf")).config.kernel_size == 5


def test_frozen_stages_freeze_the_stem_and_first_levels(hf):
    model = tiny(hf, frozen_stages=2)
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"patch_embed", "layers", "norm0", "norm1"}
    assert all(p.requires_grad for p in model.backbone.layers[2].parameters())


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(out_features=["stem", "stage1"]), r"output stage1\.\.stage4 .*'stem'"),
        (dict(variant="dinat_huge"), r"unknown variant 'dinat_huge'"),
        (dict(dilations="city"), r"unknown dilation preset 'city'"),
    ],
)
def test_bad_configurations_are_refused(hf, options, match):
    with pytest.raises(ValueError, match=match):
        tiny(hf, **options)


def test_from_pretrained_names_what_it_cannot_use(hf, tmp_path):
    NattkBackbone = hf[2]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        NattkBackbone.from_pretrained(str(tmp_path / "nowhere"))
    tiny(hf).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no weight file"):
        NattkBackbone.from_pretrained(str(tmp_path))
