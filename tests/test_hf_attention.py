"""transformers' own Dinat classes on this toolkit's attention (:mod:`nattk.hf`).

The references are transformers' code, not ours: transformers 5.x's classes (pinned in
CI) after :func:`use_toolkit_attention` must compute what transformers 4.46.3's classes
computed with NATTEN 0.14's semantics (``tests/fixtures/hf_4_46_3``: weights 4.46.3
saved, fp64 outputs of its own forward on :mod:`natten_reference`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import natten_reference
import pytest
import torch
from hf_helpers import (
    HAVE_TRANSFORMERS,
    SKIP_REASON,
    dinat_classes,
    fixture,
    fixture_inputs,
    randomise,
    small_config,
    small_model,
)

from nattk.backbones.attention import legacy_natten as natten_functional
from nattk.backbones.weights import load_pretrained
from nattk.hf import (
    TESTED_TRANSFORMERS,
    attention_status,
    restore_transformers_attention,
    use_toolkit_attention,
)
from nattk.hf.attention import _legacy_natten_kernels, natten_version

pytestmark = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason=SKIP_REASON)

TESTS = Path(__file__).resolve().parent
EXACT = dict(atol=1e-10, rtol=0)
#: One per level (its last layer), [B, heads, H, W, k*k] at the padded map size.
ATTENTION_SHAPES_56X72 = [[1, 1, 14, 18, 9], [1, 2, 7, 9, 9], [1, 2, 6, 6, 9], [1, 4, 3, 3, 9]]


def dinat_module():
    dinat_classes()
    return sys.modules["transformers.models.dinat.modeling_dinat"]


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", ["dinat_model_ls", "dinat_cls", "dinat_backbone"])
def test_transformers_5_dinat_computes_what_4_46_3_computed(name):
    # fp64, non-square inputs, and maps smaller than kernel x dilation (HF pads them).
    hf = dinat_classes()
    fix = fixture(name)
    cls = {"DinatModel": hf.Model, "DinatBackbone": hf.Backbone}.get(
        fix.meta["cls"], hf.ForImageClassification
    )
    model = cls.from_pretrained(fix.folder).double().eval()
    with torch.no_grad():
        for input_name, x in fixture_inputs().items():
            out = model(x)
            if fix.meta["cls"] == "DinatModel":
                got = {
                    "last_hidden_state": out.last_hidden_state,
                    "pooler_output": out.pooler_output,
                }
            elif fix.meta["cls"] == "DinatBackbone":
                got = {f"feature_maps.{i}": f for i, f in enumerate(out.feature_maps)}
            else:
                got = {"logits": out.logits}
            for key, value in got.items():
                torch.testing.assert_close(value, fix.output(input_name, key), **EXACT)


@pytest.fixture
def without_toolkit_attention():
    """transformers' own NeighborhoodAttention.forward for one test; ours again after."""
    dinat_module()
    restore_transformers_attention()
    yield sys.modules["transformers.models.dinat.modeling_dinat"]
    use_toolkit_attention()


def test_without_the_call_transformers_5_swaps_height_and_width(
    without_toolkit_attention, monkeypatch
):
    # The bug the call fixes: 5.x hands NATTEN [B, W, H, heads, D] for a 56x72 input's
    # 14x18 stage-1 map with 1 head of 8 channels, where 4.46.3 passed [B, heads, H, W, D].
    module = without_toolkit_attention
    shapes = []

    def record(query, *args):
        shapes.append(tuple(query.shape))
        raise RuntimeError("recorded")

    monkeypatch.setattr(module, "natten2dqkrpb", record)
    monkeypatch.setattr(module, "requires_backends", lambda *args: None)
    model = module.DinatModel.from_pretrained(fixture("dinat_model_ls").folder).eval()
    with pytest.raises(RuntimeError, match="recorded"):
        model(fixture_inputs()["x_56x72"].float())
    assert shapes == [(1, 18, 14, 1, 8)]


def test_output_attentions_are_natten_layout_softmax_weights():
    hf = dinat_classes()
    model = randomise(hf.Model(small_config(hf, "dinat", 1e-5))).double()
    x = fixture_inputs()["x_56x72"]
    with torch.no_grad():
        fused = model(x).last_hidden_state
        out = model(x, output_attentions=True)
    torch.testing.assert_close(out.last_hidden_state, fused, **EXACT)
    shapes = [list(a.shape) for a in out.attentions]
    assert shapes == ATTENTION_SHAPES_56X72
    for attn in out.attentions:
        torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn[..., 0]), **EXACT)


def test_fine_tuning_gradients_equal_4_46_3s():
    # The fp64 gradients 4.46.3's own code computed (on the NATTEN reference), for every
    # rpb and q/k/v weight: backward through transformers 5 on our operator matches.
    from safetensors.torch import load_file

    hf = dinat_classes()
    fix = fixture("dinat_model_ls")
    expected = load_file(str(fix.folder / "grads.safetensors"))
    model = hf.Model.from_pretrained(fix.folder).double().train()
    model(fixture_inputs()["x_56x72"]).last_hidden_state.square().sum().backward()
    params = dict(model.named_parameters())
    assert len(expected) == 4 * 6  # rpb, query, key, value of the 6 layers
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(params[name].grad, grad, atol=1e-10, rtol=1e-10)


def test_fine_tuning_gradients_equal_the_core_models():
    # Backward through HF's classes on our operator equals backward through our core
    # model with the same weights: HF's separate q/k/v grads are our qkv grad in thirds.
    hf = dinat_classes()
    model = randomise(hf.ForImageClassification(small_config(hf, "dinat", 1e-5, num_labels=5)))
    model = model.double().train()
    ours = small_model("dinat", 1e-5, num_classes=5).double().train()
    load_pretrained(ours, model.state_dict())
    x = fixture_inputs()["x_56x72"]
    torch.testing.assert_close(model(x).logits, ours(x), **EXACT)
    model(x).logits.square().sum().backward()
    ours(x).square().sum().backward()
    for level in range(4):
        theirs = model.dinat.encoder.levels[level].layers[0].attention.self
        mine = ours.levels[level].blocks[0].attn
        assert theirs.rpb.grad.abs().sum() > 0
        torch.testing.assert_close(theirs.rpb.grad, mine.rpb.grad, atol=1e-9, rtol=1e-9)
        qkv = torch.cat(
            [theirs.query.weight.grad, theirs.key.weight.grad, theirs.value.weight.grad]
        )
        torch.testing.assert_close(qkv, mine.qkv.weight.grad, atol=1e-9, rtol=1e-9)


def test_attention_dropout_trains_through_the_unfused_pair():
    hf = dinat_classes()
    config = small_config(hf, "dinat", None, num_labels=5, attention_probs_dropout_prob=0.5)
    model = randomise(hf.ForImageClassification(config)).train()
    x = fixture_inputs()["x"].float()
    torch.manual_seed(0)
    first = model(x).logits
    second = model(x).logits
    assert not torch.allclose(first, second)  # dropout on the attention weights is live
    first.sum().backward()
    rpb = model.dinat.encoder.levels[1].layers[1].attention.self.rpb
    assert torch.isfinite(rpb.grad).all() and rpb.grad.abs().sum() > 0


def test_autocast_bf16_forward_and_fp32_rpb_gradients():
    hf = dinat_classes()
    model = randomise(hf.Model(small_config(hf, "dinat", 1e-5))).train()
    x = fixture_inputs()["x"].float()
    with torch.no_grad():
        reference = model(x).last_hidden_state
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x).last_hidden_state
    error = (out.float() - reference).norm() / reference.norm()
    assert error < 0.05, error
    out.float().square().mean().backward()
    rpb = model.encoder.levels[2].layers[1].attention.self.rpb
    assert rpb.grad.dtype == torch.float32 and torch.isfinite(rpb.grad).all()
    assert rpb.grad.abs().sum() > 0


@pytest.mark.slow
def test_torch_compile_matches_eager_forward_and_backward():
    # One of HF's DinatStage modules (two layers, dilations 1 and 2, padding, the
    # downsampler) compiled whole; the model around it adds nothing to compile.
    hf = dinat_classes()
    model = randomise(hf.Model(small_config(hf, "dinat", 1e-5))).train()
    stage = model.encoder.levels[1]
    compiled = torch.compile(stage)
    x = torch.randn(1, 5, 7, 16)  # a 5x7 map: the dilation-2 layer pads it to 6x7
    eager = stage(x)[0]
    out = compiled(x)[0]
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    rpb = stage.layers[1].attention.self.rpb
    eager.sum().backward()
    expected, rpb.grad = rpb.grad.clone(), None
    out.sum().backward()
    torch.testing.assert_close(rpb.grad, expected, atol=1e-4, rtol=1e-4)


def test_hooks_and_wrapped_projections_are_honoured():
    # LoRA-style adapters and hooks on query/key/value must see every call: with a hook
    # the projections run as modules (same result), and what a hook changes counts.
    hf = dinat_classes()
    model = randomise(hf.Model(small_config(hf, "dinat", 1e-5))).double()
    x = fixture_inputs()["x_56x72"]
    with torch.no_grad():
        fused = model(x).last_hidden_state
    layers = [m for m in model.modules() if type(m).__name__ == "NeighborhoodAttention"]
    calls = []
    handles = [
        layer.value.register_forward_hook(lambda m, args, out: calls.append(1)) for layer in layers
    ]
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, fused, **EXACT)
    assert len(calls) == len(layers) == 6
    handles.append(layers[0].query.register_forward_hook(lambda m, args, out: out * 0))
    with torch.no_grad():
        assert not torch.allclose(model(x).last_hidden_state, fused)
    for handle in handles:
        handle.remove()


def test_the_call_is_idempotent_and_restorable():
    module = dinat_module()
    layer = module.NeighborhoodAttention
    use_toolkit_attention()
    use_toolkit_attention()
    assert layer.__init__.__wrapped__ is not None
    assert not hasattr(layer.__init__.__wrapped__, "__wrapped__")  # wrapped once
    restore_transformers_attention()
    try:
        assert layer.forward.__module__ == module.__name__
        assert not hasattr(layer.__init__, "__wrapped__")
        assert attention_status() is None
    finally:
        use_toolkit_attention()
    assert layer.forward.__module__ == "nattk.hf.attention"


def test_after_restoring_a_forward_says_what_to_do_without_natten_0_17(without_toolkit_attention):
    module = without_toolkit_attention
    if _legacy_natten_kernels() is not None:
        pytest.skip("NATTEN <= 0.17 is installed: transformers' own forward runs")
    if natten_version() is None:
        pytest.skip("no NATTEN: transformers refuses to build its Dinat model at all")
    config = module.DinatConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                kernel_size=3, dilations=[[1], [1], [1], [1]])  # fmt: skip
    model = module.DinatModel(config).eval()
    # An ImportError (an Exception: `except Exception` catches it), not transformers'
    # OptionalDependencyNotAvailable, a BaseException with an empty message.
    with pytest.raises(ImportError, match=r"natten2dqkrpb.*call nattk\.hf\.use_toolkit_attention"):
        model(torch.randn(1, 3, 64, 64))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "options, match",
    [
        (dict(kernel_size=4), r"kernel_size must be an odd positive int .*got 4"),
        (dict(dilations=[[1], [1, 0], [1, 2], [1]]), r"dilation must be a positive int, got 0"),
    ],
)
def test_unsupported_kernel_or_dilation_raises_our_error(options, match):
    hf = dinat_classes()
    config = small_config(hf, "dinat", None)
    for name, value in options.items():
        setattr(config, name, value)
    with pytest.raises(ValueError, match=match):
        hf.Model(config)


def test_an_untested_transformers_version_is_warned_about(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "9.0.0")
    with pytest.warns(UserWarning, match=r"tested with transformers 4\.46\.3, 5\.23\.0"):
        use_toolkit_attention()
    assert "5.23.0" in TESTED_TRANSFORMERS


def test_status_names_the_attention_that_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tested version: no warning
        status = use_toolkit_attention()
    assert status.attention == "nattk" and status.modules == ["modeling_dinat"]
    assert attention_status() is status
    installed = None
    if importlib.util.find_spec("natten") is not None:
        installed = importlib.metadata.version("natten")
    assert status.natten_version == installed
    assert "runs on nattk" in str(status)


# --------------------------------------------------------------------------- NATTEN's API
CASES = [(3, 1, 9, 11), (3, 2, 8, 13), (5, 3, 15, 16), (5, 1, 5, 7)]  # kernel, dilation, H, W


@pytest.mark.parametrize("kernel, dilation, height, width", CASES)
def test_natten_functional_api_equals_the_reference(kernel, dilation, height, width):
    generator = torch.Generator().manual_seed(kernel * 100 + dilation)
    shape = (2, 3, height, width, 4)  # NATTEN's [B, heads, H, W, D]
    q, k, v = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1, generator=generator, dtype=torch.float64)
    logits = natten_functional.natten2dqkrpb(q, k, rpb, kernel, dilation)
    expected = natten_reference.natten2dqkrpb(q, k, rpb, kernel, dilation)
    assert logits.is_contiguous() and logits.shape == (*shape[:4], kernel * kernel)
    torch.testing.assert_close(logits, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        natten_functional.na2d_qk(q, k, kernel, dilation, rpb=rpb), expected, atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        natten_functional.natten2dqk(q, k, kernel, dilation),
        natten_reference.natten2dqkrpb(q, k, None, kernel, dilation),
        atol=1e-12,
        rtol=0,
    )
    attn = logits.softmax(-1)
    out = natten_functional.natten2dav(attn, v, kernel, dilation)
    torch.testing.assert_close(
        out, natten_reference.natten2dav(attn, v, kernel, dilation), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        natten_functional.na2d_av(attn, v, kernel, dilation), out, atol=0, rtol=0
    )


def test_natten_functional_api_has_gradients():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, 6, 7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    rpb = torch.randn(2, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)

    def attention(q, k, v, rpb):
        attn = natten_functional.natten2dqkrpb(q, k, rpb, 3, 2).softmax(-1)
        return natten_functional.natten2dav(attn, v, 3, 2)

    assert torch.autograd.gradcheck(attention, (q, k, v, rpb))


def test_natten_functional_api_refuses_what_it_does_not_do():
    x = torch.randn(1, 1, 5, 5, 4)
    attn = torch.randn(1, 1, 5, 5, 9)
    with pytest.raises(NotImplementedError, match="additional_keys"):
        natten_functional.na2d_qk(x, x, 3, additional_keys=x)
    with pytest.raises(NotImplementedError, match="causal"):
        natten_functional.na2d_av(attn, x, 3, is_causal=True)
    with pytest.raises(ValueError, match=r"query must be laid out \[batch, heads, height"):
        natten_functional.natten2dqkrpb(x[0], x[0], None, 3, 1)


# --------------------------------------------------------------------------- situations
def run_scenario(*flags: str, pythonpath=()) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(TESTS)])
    result = subprocess.run(
        [sys.executable, str(TESTS / "hf_scenario.py"), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


def transformers_sources() -> dict:
    """sha256 of transformers' Dinat files and of the installed NATTEN's Python files."""
    import transformers

    roots = [Path(transformers.__file__).parent / "models" / "dinat"]
    spec = importlib.util.find_spec("natten")
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent)
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*.py"))
    }


@pytest.mark.slow
def test_without_natten_import_before_or_after_the_call():
    before = transformers_sources()
    report = run_scenario("--hide-natten", "--import-first")
    assert report["import_first"] == "ok"
    assert report["status"]["attention"] == "nattk"
    assert report["status"]["natten_version"] is None
    assert report["max_diff"] < 1e-10
    assert report["attention_shapes"] == ATTENTION_SHAPES_56X72
    assert run_scenario("--hide-natten")["max_diff"] < 1e-10
    assert transformers_sources() == before  # nothing was written to disk


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("natten") is None, reason="NATTEN is not installed")
def test_with_natten_0_20_or_later():
    version = importlib.metadata.version("natten")
    assert int(version.split(".")[1]) >= 20, f"this test is about NATTEN >= 0.20, not {version}"
    # Without the call, transformers' own import fails on NATTEN >= 0.20 ...
    report = run_scenario("--import-first")
    assert report["import_first"].startswith("ImportError")
    assert "natten2dav" in report["import_first"]
    # ... and the call, made afterwards or first, makes it work.
    assert report["status"] == dict(
        attention="nattk", natten_version=version, modules=["modeling_dinat"]
    )
    assert report["max_diff"] < 1e-10
    assert run_scenario()["max_diff"] < 1e-10


NATTEN_0_17 = '''"""A NATTEN 0.17.4 stand-in: its 2-D unfused API, counting calls."""
import natten_reference

CALLS = 0


def natten2dqkrpb(*args):
    global CALLS
    CALLS += 1
    return natten_reference.natten2dqkrpb(*args)


def natten2dav(*args):
    global CALLS
    CALLS += 1
    return natten_reference.natten2dav(*args)
'''


@pytest.mark.slow
def test_with_natten_0_17_it_stays_unless_forced(tmp_path):
    # NATTEN 0.17 has no build for current torch; a stand-in with its version metadata
    # and its natten2dqkrpb/natten2dav (the reference semantics) takes its place.
    (tmp_path / "natten").mkdir()
    (tmp_path / "natten" / "__init__.py").write_text('__version__ = "0.17.4"\n')
    (tmp_path / "natten" / "functional.py").write_text(NATTEN_0_17)
    (tmp_path / "natten-0.17.4.dist-info").mkdir()
    (tmp_path / "natten-0.17.4.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: natten\nVersion: 0.17.4\n"
    )
    kept = run_scenario("--import-first", pythonpath=[tmp_path])
    assert kept["import_first"] == "ok"
    assert kept["status"]["attention"] == "natten 0.17.4"
    assert kept["natten_calls"] > 0  # NATTEN computed it, in 4.x's layout on transformers 5
    assert kept["max_diff"] < 1e-10
    assert kept["attention_shapes"] == ATTENTION_SHAPES_56X72
    forced = run_scenario("--force", pythonpath=[tmp_path])
    assert forced["status"]["attention"] == "nattk"
    assert forced["natten_calls"] == 0
    assert forced["max_diff"] < 1e-10
