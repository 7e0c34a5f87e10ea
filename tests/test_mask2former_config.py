"""Framework-free half of the Detectron2 / Mask2Former adapter (runs without detectron2).

The config keys are declared on yacs' ``CfgNode`` (what Detectron2's config derives
from), the published yamls are read with PyYAML, and the backbone mixin is exercised on
the real core classes; only ``detectron2.modeling.Backbone`` itself is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from yacs.config import CfgNode

from nattk.backbones import NAT, DiNAT, DiNAT_s, create_model, dilation_preset
from nattk.mask2former.backbone_mixin import D2BackboneMixin
from nattk.mask2former.config import (
    CONFIG_KEYS,
    add_dinat_config,
    add_nattk_config,
    backbone_kwargs,
    config_error,
    out_indices_from_features,
)
from nattk.mask2former.upstream import (
    ensure_msdeform_attn_fallback,
    find_checkout,
    resolve_base,
)

REPO = Path(__file__).resolve().parents[1]
YAMLS = sorted((REPO / "mask2former" / "configs").rglob("*.yaml"))
OFFICIAL_DINAT_KEYS = {
    "EMBED_DIM", "DEPTHS", "NUM_HEADS", "KERNEL_SIZE", "DILATIONS", "MLP_RATIO", "QKV_BIAS",
    "QK_SCALE", "DROP_RATE", "ATTN_DROP_RATE", "DROP_PATH_RATE", "OUT_FEATURES",
}  # fmt: skip


def _cfg(family: str = "dinat", **overrides) -> CfgNode:
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    add_nattk_config(cfg)
    node = getattr(cfg.MODEL, CONFIG_KEYS[family])
    tiny = dict(EMBED_DIM=16, DEPTHS=[1, 1, 2, 1], NUM_HEADS=[1, 2, 4, 8], KERNEL_SIZE=3)
    if family != "nat":
        tiny["DILATIONS"] = [[2], [1], [1, 2], [1]]
    for key, value in {**tiny, **overrides}.items():
        setattr(node, key, value)
    return cfg


class _ProbeDiNAT(D2BackboneMixin, DiNAT):
    """The mixin on the real core class (Detectron2's Backbone adds only ABC plumbing)."""


class _ProbeDiNAT_s(D2BackboneMixin, DiNAT_s):
    pass


class _ProbeNAT(D2BackboneMixin, NAT):
    pass


def test_add_dinat_config_declares_the_official_keys_plus_four():
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    add_dinat_config(cfg)
    declared = set(cfg.MODEL.DINAT)
    assert OFFICIAL_DINAT_KEYS <= declared
    assert declared - OFFICIAL_DINAT_KEYS == {
        "LAYER_SCALE",
        "FROZEN_STAGES",
        "WITH_CP",
        "ALLOW_MISSING_WEIGHTS",
    }
    assert cfg.MODEL.DINAT.DEPTHS == [3, 4, 18, 5] and cfg.MODEL.DINAT.MLP_RATIO == 2.0
    assert isinstance(cfg.MODEL.DINAT, CfgNode)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO / "mask2former")))
def test_published_yaml_builds_dinat_large_kernel_11(path):
    assert len(YAMLS) == 8
    data = yaml.safe_load(path.read_text())
    assert data["MODEL"]["BACKBONE"]["NAME"] == "D2DiNAT"
    assert data["MODEL"]["WEIGHTS"] == "dinat_large_in22k_224_11x11interp.pkl"
    assert data["SOLVER"]["AMP"]["ENABLED"] is False
    base = data["_BASE_"]
    assert base.startswith("../" * 6 + "Mask2Former/configs/") and base.endswith(".yaml")
    assert (
        path.parent.parent.relative_to(REPO / "mask2former")
        == Path(base.split("Mask2Former/")[1]).parent
    )

    kwargs = _yaml_kwargs(path)
    assert kwargs == _yaml_kwargs(YAMLS[0])  # all eight describe the same backbone
    assert kwargs["kernel_size"] == 11 and kwargs["drop_path_rate"] == 0.3
    assert kwargs["out_indices"] == [0, 1, 2, 3]
    # The explicit dilations are the toolkit's 'm2f' preset, block for block.
    assert kwargs["dilations"] == dilation_preset("dinat", "m2f", [3, 4, 18, 5])


def _yaml_kwargs(path: Path) -> dict:
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    add_dinat_config(cfg)
    cfg.MODEL.DINAT.merge_from_other_cfg(
        CfgNode(yaml.safe_load(path.read_text())["MODEL"]["DINAT"])
    )
    return backbone_kwargs(cfg.MODEL.DINAT, "dinat")


def test_yaml_backbone_is_dinat_large_with_published_keys():
    built = DiNAT(**_yaml_kwargs(YAMLS[0]))
    reference = create_model(
        "dinat_large", num_classes=0, kernel_size=11, dilations="m2f", drop_path_rate=0.3
    )
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert built.levels[0].blocks[0].attn.rpb.shape == (6, 21, 21)


def test_ade20k_semantic_yaml_writes_out_the_official_size_list():
    path = REPO / "mask2former/configs/ade20k/semantic-segmentation/dinat"
    data = yaml.safe_load(next(path.glob("*.yaml")).read_text())
    assert data["INPUT"]["MIN_SIZE_TRAIN"] == [int(x * 0.1 * 640) for x in range(5, 21)]


def test_mixin_outputs_res_dict_with_core_channels_and_strides():
    model = _ProbeDiNAT(_cfg(), None).eval()
    assert model.feature_shapes() == {
        "res2": (16, 4),
        "res3": (32, 8),
        "res4": (64, 16),
        "res5": (128, 32),
    }
    assert model.size_divisibility == 32
    out = model(torch.randn(2, 3, 64, 96))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, (channels, stride) in model.feature_shapes().items():
        assert out[name].shape == (2, channels, 64 // stride, 96 // stride)
    # Parameter names stay at the top level, as in the published checkpoints.
    assert "levels.0.blocks.0.attn.rpb" in model.state_dict()
    assert any(k.startswith("patch_embed.") for k in model.state_dict())


def test_mixin_reads_out_features_frozen_stages_layer_scale_and_channels():
    cfg = _cfg(OUT_FEATURES=["res5", "res3"], FROZEN_STAGES=2, LAYER_SCALE=1e-5)
    model = _ProbeDiNAT(cfg, type("Shape", (), {"channels": 4})())
    assert model._out_features == ["res3", "res5"]
    assert model.in_chans == 4 and model.levels[0].blocks[0].gamma1.shape == (16,)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("levels.1.") for n in frozen)
    assert not any(n.startswith("levels.2.") for n in frozen)
    assert set(model(torch.randn(1, 4, 64, 64))) == {"res3", "res5"}


def test_mixin_serves_dinat_s_from_its_own_keys():
    model = _ProbeDiNAT_s(_cfg("dinat_s", DILATIONS=[[1], [1], [1, 2], [1]]), None)
    assert "layers.0.blocks.0.attn.rpb" in model.state_dict()
    assert model.feature_shapes()["res5"] == (128, 32)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(DILATIONS=None), "MODEL.DINAT.DILATIONS is not set"),
        (dict(DILATIONS="nope"), "MODEL.DINAT.DILATIONS: unknown dilation preset"),
        (dict(OUT_FEATURES=["res1"]), "MODEL.DINAT.OUT_FEATURES must be distinct names"),
        (
            dict(DILATIONS=[[1], [1], [1], [1]]),
            r"^MODEL\.DINAT\.DILATIONS: dilations must give one value per block: "
            r"expected lengths \[1, 1, 2, 1\], got \[1, 1, 1, 1\]$",
        ),
        (dict(DILATIONS=[[0], [1], [1, 2], [1]]), "MODEL.DINAT.DILATIONS: dilations must be"),
        (dict(NUM_HEADS=[1, 2, 4]), "MODEL.DINAT.NUM_HEADS, MODEL.DINAT.DEPTHS: num_heads"),
        (dict(KERNEL_SIZE=4), "MODEL.DINAT.KERNEL_SIZE: .*odd kernel_size"),
        (dict(FROZEN_STAGES=9), "MODEL.DINAT.FROZEN_STAGES: frozen_stages must be"),
        (dict(NUM_HEADS=[3, 2, 4, 8]), "MODEL.DINAT.EMBED_DIM, MODEL.DINAT.NUM_HEADS: dim"),
    ],
)
def test_bad_config_values_fail_with_the_key_named(overrides, message):
    with pytest.raises(ValueError, match=message) as raised:
        _ProbeDiNAT(_cfg(**overrides), None)
    assert "MODEL.DINAT" in str(raised.value)


@pytest.mark.parametrize("family", ["nat", "dinat", "dinat_s"])
def test_core_errors_name_the_key_of_each_family(family):
    probe = {"nat": _ProbeNAT, "dinat": _ProbeDiNAT, "dinat_s": _ProbeDiNAT_s}[family]
    key = f"MODEL.{CONFIG_KEYS[family]}"
    with pytest.raises(ValueError, match=rf"^{key}\.NUM_HEADS, {key}\.DEPTHS: ") as raised:
        probe(_cfg(family, NUM_HEADS=[1, 2, 4]), None)
    assert isinstance(raised.value.__cause__, ValueError)  # the core's own error, chained
    if family != "nat":
        with pytest.raises(ValueError, match=rf"^{key}\.DILATIONS: dilations must give one"):
            probe(_cfg(family, DILATIONS=[[1], [1], [1, 2], [1, 1]]), None)


def test_config_error_falls_back_to_the_node_name():
    error = config_error("MODEL.DiNAT", ValueError("something else"))
    assert str(error) == "MODEL.DiNAT: something else"


def test_out_indices_from_features_sorts_and_rejects_duplicates():
    assert out_indices_from_features(["res4", "res2"]) == [0, 2]
    with pytest.raises(ValueError):
        out_indices_from_features(["res2", "res2"])


def test_checkpoint_without_rpb_is_refused_not_skipped():
    source = _ProbeDiNAT(_cfg(), None)
    model = _ProbeDiNAT(_cfg(), None)
    wrapper = torch.nn.Module()
    wrapper.backbone = model
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    wrapper.load_state_dict(state)  # complete: fine
    assert torch.equal(model.levels[0].blocks[0].attn.rpb, source.levels[0].blocks[0].attn.rpb)

    # What Detectron2 does with a 7x7 rpb in a kernel-11 model: drops it, loads strict=False.
    partial = {k: v for k, v in state.items() if not k.endswith(".rpb")}
    with pytest.raises(RuntimeError, match=r"no value for 5 of .* --kernel-size K"):
        wrapper.load_state_dict(partial, strict=False)

    # ImageNet weights have no dense-output norms: those alone may start fresh.
    no_norms = {k: v for k, v in state.items() if not k.startswith("backbone.norm")}
    assert sorted(wrapper.load_state_dict(no_norms, strict=False).missing_keys)[0] == (
        "backbone.norm0.bias"
    )

    lenient = _ProbeDiNAT(_cfg(ALLOW_MISSING_WEIGHTS=True), None)
    wrapper.backbone = lenient
    result = wrapper.load_state_dict(partial, strict=False)
    assert len(result.missing_keys) == 5


def test_msdeform_attn_stand_in_sends_calls_to_the_fallback(monkeypatch):
    monkeypatch.delitem(sys.modules, "MultiScaleDeformableAttention", raising=False)
    compiled = ensure_msdeform_attn_fallback()
    if compiled:
        pytest.skip("the compiled MultiScaleDeformableAttention op is installed here")
    import MultiScaleDeformableAttention as msda

    with pytest.raises(RuntimeError, match="not compiled"):
        msda.ms_deform_attn_forward()
    assert ensure_msdeform_attn_fallback() is False  # idempotent


def _fake_checkout(root: Path) -> Path:
    (root / "mask2former").mkdir(parents=True)
    (root / "mask2former" / "__init__.py").write_text("")
    (root / "train_net.py").write_text("")
    base = root / "configs" / "coco" / "panoptic-segmentation" / "maskformer2_R50_bs16_50ep.yaml"
    base.parent.mkdir(parents=True)
    base.write_text("MODEL: {}\n")
    return base


def test_resolve_base_finds_upstream_yaml_in_any_checkout(tmp_path, monkeypatch):
    base = _fake_checkout(tmp_path / "elsewhere" / "M2F")
    ours = next(p for p in YAMLS if "coco/panoptic" in p.as_posix())
    written = yaml.safe_load(ours.read_text())["_BASE_"]
    if (ours.parent / written).is_file():
        pytest.skip("a real Mask2Former checkout sits next to the toolkit")
    monkeypatch.setenv("MASK2FORMER_ROOT", str(tmp_path / "elsewhere" / "M2F"))
    assert Path(resolve_base(ours, written)) == base.resolve()
    # A base that exists as written (upstream's own yamls) is left alone.
    assert resolve_base(base, "Base.yaml") == str(base.parent / "Base.yaml")


def test_find_checkout_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Mask2Former checkout.*MASK2FORMER_ROOT"):
        find_checkout(tmp_path)
    _fake_checkout(tmp_path / "ok")
    assert find_checkout(tmp_path / "ok") == (tmp_path / "ok").resolve()
