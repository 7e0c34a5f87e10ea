"""Published FLOPs are reproduced; checkpoint conversion tool round-trips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nattk import convert_checkpoint, get_flops
from nattk.backbones.variants import create_model  # noqa: E402
from nattk.backbones.weights import load_pretrained  # noqa: E402

# nat_dinat.md §7.1: (model, resolution, kernel, dilation preset, published GFLOPs)
PUBLISHED_FLOPS = [
    ("nat_mini", 224, 7, "imagenet224", 2.7),
    ("nat_tiny", 224, 7, "imagenet224", 4.3),
    ("nat_small", 224, 7, "imagenet224", 7.8),
    ("nat_base", 224, 7, "imagenet224", 13.7),
    ("dinat_mini", 224, 7, "imagenet224", 2.7),
    ("dinat_tiny", 224, 7, "imagenet224", 4.3),
    ("dinat_small", 224, 7, "imagenet224", 7.8),
    ("dinat_base", 224, 7, "imagenet224", 13.7),
    ("dinat_large", 224, 7, "imagenet224", 30.6),
    ("dinat_large", 384, 7, "imagenet384", 89.7),
    ("dinat_large", 384, 11, "imagenet224", 92.4),
    ("dinat_s_tiny", 224, 7, "imagenet224", 4.5),
    ("dinat_s_small", 224, 7, "imagenet224", 8.7),
    ("dinat_s_base", 224, 7, "imagenet224", 15.4),
    ("dinat_s_large", 224, 7, "imagenet224", 34.5),
    ("dinat_s_large", 384, 7, "imagenet384", 101.5),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,size,kernel,preset,published", PUBLISHED_FLOPS)
def test_flops_match_published_table_within_2_percent(name, size, kernel, preset, published):
    model = create_model(name, kernel_size=kernel, dilations=preset)
    _, flops = get_flops.count(model, (size, size))
    assert abs(flops / 1e9 - published) / published < 0.02, flops / 1e9


def test_attention_flops_are_n_k2_c_per_product_and_independent_of_dilation():
    from mmengine.analysis import FlopAnalyzer

    plain = create_model("dinat_mini", dilations=[[1] * 3, [1] * 4, [1] * 6, [1] * 5]).eval()
    dilated = create_model("dinat_mini").eval()
    _, f_plain = get_flops.count(plain, (224, 224))
    _, f_dilated = get_flops.count(dilated, (224, 224))
    assert f_plain == f_dilated
    without_na = FlopAnalyzer(plain, torch.zeros(1, 3, 224, 224))
    without_na.unsupported_ops_warnings(False)
    # QK + AV: 2 * N * k^2 * C per block; NAT-Mini depths 3, 4, 6, 5 on 56², 28², 14², 7².
    expected = sum(
        depth * 2 * side**2 * 49 * channels
        for depth, side, channels in zip((3, 4, 6, 5), (56, 28, 14, 7), (64, 128, 256, 512))
    )
    assert f_plain - without_na.total() == expected


def test_get_model_complexity_info_counts_na_after_registration():
    from mmengine.analysis import get_model_complexity_info

    from nattk.openmmlab.compat import register_na_flop_handles

    model = create_model("nat_mini").eval()
    register_na_flop_handles()
    info = get_model_complexity_info(
        model, input_shape=(3, 224, 224), show_table=False, show_arch=False
    )
    assert info["flops"] == get_flops.count(model, (224, 224))[1]
    assert abs(info["flops"] / 1e9 - 2.7) / 2.7 < 0.02


def test_na_flop_registration_names_the_missing_private_table(monkeypatch):
    from mmengine.analysis import complexity_analysis

    from nattk.openmmlab.compat import register_na_flop_handles

    monkeypatch.delattr(complexity_analysis, "_DEFAULT_SUPPORTED_FLOP_OPS")
    with pytest.raises(RuntimeError, match=r"_DEFAULT_SUPPORTED_FLOP_OPS .*tested with mmengine"):
        register_na_flop_handles()


def test_fvcore_counts_the_same_flops_with_the_handles():
    fvcore_nn = pytest.importorskip("fvcore.nn", reason="fvcore not installed")
    from nattk.backbones.flops import NA_FLOP_HANDLES

    model = create_model("dinat_s_tiny").eval()
    analysis = fvcore_nn.FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224)).set_op_handle(
        **NA_FLOP_HANDLES
    )
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert analysis.total() == get_flops.count(model, (224, 224))[1]
    assert abs(analysis.total() / 1e9 - 4.5) / 4.5 < 0.02


def test_convert_to_toolkit_format_and_d2_pkl(tmp_path):
    source = create_model("dinat_mini", num_classes=1000)
    src = tmp_path / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, src)

    toolkit = tmp_path / "toolkit.pth"
    convert_checkpoint.main([str(src), str(toolkit)])
    saved = torch.load(toolkit, weights_only=True)
    assert set(saved["state_dict"]) == set(source.state_dict())
    report = load_pretrained(create_model("dinat_mini", num_classes=0), toolkit)
    assert not report.missing

    d2 = tmp_path / "d2.pkl"
    convert_checkpoint.main([str(src), str(d2), "--to", "d2"])
    with open(d2, "rb") as f:
        payload = pickle.load(f)
    assert payload["matching_heuristics"] is True
    assert not any(k.startswith(("norm.", "head.")) for k in payload["model"])
    rpb = payload["model"]["levels.0.blocks.1.attn.rpb"]
    assert isinstance(rpb, np.ndarray) and np.array_equal(
        rpb, source.state_dict()["levels.0.blocks.1.attn.rpb"].numpy()
    )


def test_convert_resizes_rpb_for_kernel_11(tmp_path):
    src = tmp_path / "k7.pth"
    torch.save(create_model("dinat_mini", num_classes=0).state_dict(), src)
    dst = tmp_path / "k11.pth"
    convert_checkpoint.main([str(src), str(dst), "--kernel-size", "11"])
    state = torch.load(dst, weights_only=True)["state_dict"]
    assert state["levels.3.blocks.0.attn.rpb"].shape == (16, 21, 21)
    model = create_model("dinat_mini", num_classes=0, kernel_size=11)
    model.load_state_dict(state, strict=True)
