"""OneFormer's ``MODEL.DiNAT`` namespace and backbone stand-in (runs without detectron2).

OneFormer's own config is written out below as its ``add_dinat_config`` declares it
(``oneformer/config.py`` at SHI-Labs/OneFormer 4962ef6): mixed-case ``MODEL.DiNAT``,
``OUT_INDICES`` and ``IN_PATCH_SIZE``, none of the toolkit's four extra keys. The
backbone mixin runs on the real core class; only Detectron2's ``Backbone`` is absent.
``tests/d2/test_oneformer.py`` repeats the checks with detectron2 and a OneFormer checkout.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from yacs.config import CfgNode

from nattk.backbones import DiNAT
from nattk.mask2former.backbone_mixin import D2BackboneMixin
from nattk.mask2former.config import (
    add_dinat_config,
    add_toolkit_keys,
    backbone_kwargs,
    family_node,
)
from nattk.mask2former.oneformer import (
    BACKBONE_MODULE,
    install_backbone_module,
    split_toolkit_opts,
)
from nattk.mask2former.upstream import ONEFORMER, find_checkout

# OneFormer's ADE20K 640x640 DiNAT-L yaml (configs/ade20k/dinat/oneformer_dinat_large_bs16_160k.yaml).
ADE20K_640 = dict(
    EMBED_DIM=192, MLP_RATIO=2.0, DEPTHS=[3, 4, 18, 5], NUM_HEADS=[6, 12, 24, 48],
    KERNEL_SIZE=11, DROP_PATH_RATE=0.3,
    DILATIONS=[[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5],
               [1, 2, 1, 2, 1]],
)  # fmt: skip
TINY = dict(EMBED_DIM=16, DEPTHS=[1, 1, 2, 1], NUM_HEADS=[1, 2, 4, 8], KERNEL_SIZE=3,
            DILATIONS=[[2], [1], [1, 2], [1]])  # fmt: skip


def oneformer_cfg(**values) -> CfgNode:
    """A config with OneFormer's ``MODEL.DiNAT`` as OneFormer declares it, then ``values``."""
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    cfg.MODEL.DiNAT = CfgNode()
    node = cfg.MODEL.DiNAT
    node.DEPTHS = [3, 4, 18, 5]
    node.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    node.EMBED_DIM = 64
    node.MLP_RATIO = 3.0
    node.NUM_HEADS = [2, 4, 8, 16]
    node.DROP_PATH_RATE = 0.2
    node.KERNEL_SIZE = 7
    node.DILATIONS = [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]]
    node.OUT_INDICES = (0, 1, 2, 3)
    node.QKV_BIAS = True
    node.QK_SCALE = None
    node.DROP_RATE = 0
    node.ATTN_DROP_RATE = 0.0
    node.IN_PATCH_SIZE = 4
    for key, value in values.items():
        setattr(node, key, value)
    return cfg


class _ProbeDiNAT(D2BackboneMixin, DiNAT):
    """The mixin on the real core class (Detectron2's Backbone adds only ABC plumbing)."""


def test_oneformer_namespace_is_read_with_the_toolkit_keys_defaulted():
    cfg = oneformer_cfg(**TINY)
    assert family_node(cfg, "dinat")[0] == "MODEL.DiNAT"
    model = _ProbeDiNAT(cfg, None)
    assert model.config_key == "MODEL.DiNAT" and model.allow_missing_weights is False
    assert model.widths[0] == 16 and model.frozen_stages == -1 and not model.with_cp
    assert model.levels[2].blocks[1].attn.dilation == (2, 2)
    assert not any("gamma" in name for name in model.state_dict())  # no layer scale
    assert set(model(torch.randn(1, 3, 64, 64))) == {"res2", "res3", "res4", "res5"}


def test_both_namespaces_give_the_same_dinat_large():
    ours = CfgNode()
    ours.MODEL = CfgNode()
    add_dinat_config(ours)
    for key, value in ADE20K_640.items():
        setattr(ours.MODEL.DINAT, key, value)
    theirs = oneformer_cfg(**ADE20K_640)
    expected = backbone_kwargs(ours.MODEL.DINAT, "dinat")
    assert backbone_kwargs(theirs.MODEL.DiNAT, "dinat", name="MODEL.DiNAT") == expected
    model = _ProbeDiNAT(theirs, None)
    # OneFormer's DiNAT-L layout (NATTEN 0.14 era): the tokenizer (2 convs + norm: 6
    # tensors), 13 per block (2 norms, qkv, rpb, proj, 2 MLP linears), 3 per downsampler
    # (conv + norm) and the 4 output norms.
    state = model.state_dict()
    assert len(state) == 6 + 13 * 30 + 3 * 3 + 2 * 4
    assert {f"norm{i}.weight" for i in range(4)} <= set(state)
    assert state["levels.0.blocks.0.attn.rpb"].shape == (6, 21, 21)
    assert model.levels[0].blocks[1].attn.dilation == (20, 20)


def test_toolkit_keys_can_be_added_to_the_oneformer_node_and_set():
    cfg = oneformer_cfg(**TINY)
    add_toolkit_keys(cfg.MODEL.DiNAT)
    cfg.merge_from_list(["MODEL.DiNAT.FROZEN_STAGES", "1", "MODEL.DiNAT.LAYER_SCALE", "1e-5"])
    cfg.MODEL.DiNAT.KERNEL_SIZE = 5
    add_toolkit_keys(cfg.MODEL.DiNAT)  # keeps what is set
    model = _ProbeDiNAT(cfg, None)
    assert model.frozen_stages == 1 and model.levels[0].blocks[0].attn.kernel_size == (5, 5)
    assert model.levels[0].blocks[0].gamma1.shape == (16,)


def test_a_config_with_both_namespaces_is_refused():
    cfg = oneformer_cfg(**TINY)
    add_dinat_config(cfg)
    with pytest.raises(ValueError, match="both MODEL.DINAT and MODEL.DiNAT are declared"):
        _ProbeDiNAT(cfg, None)


def test_a_config_with_neither_namespace_names_both():
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    with pytest.raises(ValueError, match="neither MODEL.DINAT nor MODEL.DiNAT is declared"):
        family_node(cfg, "dinat")
    with pytest.raises(
        ValueError, match="MODEL.NAT is not declared: call nattk.mask2former.add_nat_config"
    ):
        family_node(cfg, "nat")


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(OUT_INDICES=(0, 1, 2, 3), OUT_FEATURES=["res4", "res5"]), "OUT_INDICES .* different levels"),
        (dict(IN_PATCH_SIZE=8), "MODEL.DiNAT.IN_PATCH_SIZE is 8"),
        (dict(DILATIONS=None), "MODEL.DiNAT.DILATIONS is not set"),
        (dict(DILATIONS=[[2], [1], [1, 2], [1, 1]]), r"^MODEL\.DiNAT\.DILATIONS: dilations must give one value per block"),
        (dict(DILATIONS="nope"), r"^MODEL\.DiNAT\.DILATIONS: unknown dilation preset"),
        (dict(NUM_HEADS=[1, 2, 4]), r"^MODEL\.DiNAT\.NUM_HEADS, MODEL\.DiNAT\.DEPTHS: num_heads"),
    ],
)  # fmt: skip
def test_oneformer_keys_the_core_cannot_honour_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        _ProbeDiNAT(oneformer_cfg(**{**TINY, **values}), None)


def test_out_indices_that_match_out_features_select_the_levels():
    cfg = oneformer_cfg(**TINY, OUT_INDICES=(2, 3), OUT_FEATURES=["res5", "res4"])
    model = _ProbeDiNAT(cfg, None)
    assert model.feature_shapes() == {"res4": (64, 16), "res5": (128, 32)}
    assert not any(key.startswith(("norm0", "norm1")) for key in model.state_dict())


def test_split_toolkit_opts_takes_only_the_toolkit_keys_of_the_oneformer_node():
    opts = ["MODEL.DiNAT.WITH_CP", "True", "SOLVER.MAX_ITER", "3",
            "MODEL.DiNAT.KERNEL_SIZE", "7", "MODEL.DiNAT.ALLOW_MISSING_WEIGHTS", "True"]  # fmt: skip
    toolkit, rest = split_toolkit_opts(opts)
    assert toolkit == ["MODEL.DiNAT.WITH_CP", "True", "MODEL.DiNAT.ALLOW_MISSING_WEIGHTS", "True"]
    assert rest == ["SOLVER.MAX_ITER", "3", "MODEL.DiNAT.KERNEL_SIZE", "7"]
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        split_toolkit_opts(["MODEL.DiNAT.WITH_CP"])


@pytest.fixture
def oneformer_like_package(tmp_path, monkeypatch):
    """A package laid out as OneFormer's import chain; its ``dinat.py`` fails if executed."""
    root = tmp_path / "checkout"
    backbone = root / "oneformer" / "modeling" / "backbone"
    backbone.mkdir(parents=True)
    (root / "oneformer" / "__init__.py").write_text("from . import modeling\n")
    (root / "oneformer" / "modeling" / "__init__.py").write_text(
        "from .backbone.swin import D2SwinTransformer\nfrom .backbone.dinat import D2DiNAT\n"
    )
    (backbone / "__init__.py").write_text("")
    (backbone / "swin.py").write_text("D2SwinTransformer = 'swin'\n")
    (backbone / "dinat.py").write_text("raise ImportError(\"No module named 'natten'\")\n")
    # A real OneFormer imported by another test file of this process is set aside.
    for name in _oneformer_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in _oneformer_modules():
        del sys.modules[name]


def _oneformer_modules() -> list[str]:
    return [n for n in sys.modules if n == "oneformer" or n.startswith("oneformer.")]


def test_stand_in_module_keeps_oneformers_dinat_from_running(oneformer_like_package):
    with pytest.raises(ImportError, match="natten"):
        importlib.import_module("oneformer")  # what `import oneformer` does today

    class ToolkitD2DiNAT:
        pass

    module = install_backbone_module(ToolkitD2DiNAT)
    assert sys.modules[BACKBONE_MODULE] is module
    oneformer = importlib.import_module("oneformer")
    assert oneformer.modeling.D2DiNAT is ToolkitD2DiNAT
    assert Path(oneformer.__file__).is_relative_to(oneformer_like_package)
    assert install_backbone_module(ToolkitD2DiNAT) is module  # idempotent

    class Other:
        pass

    with pytest.raises(RuntimeError, match="before importing oneformer"):
        install_backbone_module(Other)


def test_stand_in_is_refused_after_oneformer_was_imported(oneformer_like_package):
    (oneformer_like_package / "oneformer" / "modeling" / "backbone" / "dinat.py").write_text(
        "D2DiNAT = 'oneformer'\n"
    )
    importlib.import_module("oneformer")
    with pytest.raises(RuntimeError, match="use_toolkit_backbone\\(\\) before importing"):
        install_backbone_module(type("ToolkitD2DiNAT", (), {}))


def test_find_oneformer_checkout_names_flag_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEFORMER_ROOT", raising=False)
    with pytest.raises(
        FileNotFoundError, match="not a OneFormer checkout.*--oneformer-root.*ONEFORMER_ROOT"
    ):
        find_checkout(tmp_path, ONEFORMER)
    (tmp_path / "oneformer").mkdir()
    (tmp_path / "oneformer" / "__init__.py").write_text("")
    (tmp_path / "train_net.py").write_text("")
    monkeypatch.setenv("ONEFORMER_ROOT", str(tmp_path))
    assert find_checkout(None, ONEFORMER) == tmp_path.resolve()
