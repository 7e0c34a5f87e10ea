"""The attention operators as real PyTorch operators: opcheck, torch.compile, torch.export, ONNX."""

from __future__ import annotations

import pytest
import torch
from mm_helpers import REPO
from test_mixed_precision import tiny_dinat

from nattk.backbones.attention import flex_backend, indices, resolve_backend
from nattk.backbones.attention.decomposition import DECOMPOSITIONS
from nattk.backbones.export import export_program, smallest_unpadded_input, to_onnx
from nattk.dev.onnx_runtime import max_abs_difference, onnxruntime_outputs

BACKENDS = ["torch", "cpu"]


def _nattk_ops(program) -> set[str]:
    return {
        str(node.target)
        for node in program.graph.nodes
        if node.op == "call_function" and "nattk" in str(node.target)
    }


# --------------------------------------------------------------------------- opcheck
def _op_samples(backend: str, with_rpb: bool):
    gen = torch.Generator().manual_seed(0)
    shape = (2, 9, 8, 2, 4)
    q, k, v = (torch.randn(shape, dtype=torch.float64, generator=gen) for _ in range(3))
    rpb = torch.randn(2, 5, 5, dtype=torch.float64, generator=gen) if with_rpb else None
    attn = torch.randn(*shape[:4], 9, dtype=torch.float64, generator=gen).softmax(-1)
    for t in (q, k, v, attn, rpb):
        if t is not None:
            t.requires_grad_(True)
    kernel, dilation = [3, 3], [2, 2]
    return {
        torch.ops.nattk.na2d.default: (q, k, v, rpb, kernel, dilation, 0.5, backend),
        torch.ops.nattk.na2d_qk.default: (q, k, rpb, kernel, dilation, 0.5, backend),
        torch.ops.nattk.na2d_av.default: (attn, v, kernel, dilation, backend),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_rpb", [True, False])
def test_opcheck(backend, with_rpb):
    """Schema, fake kernel, autograd registration and AOT dispatch of every operator."""
    for op, args in _op_samples(backend, with_rpb).items():
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_backward_matches_unfused_composition(backend):
    args = _op_samples(backend, True)[torch.ops.nattk.na2d.default]
    q, k, v, rpb = args[:4]
    out, lse, probs = torch.ops.nattk.na2d(*args)
    logits = torch.ops.nattk.na2d_qk(q, k, rpb, *args[4:])
    assert torch.allclose(lse, torch.logsumexp(logits, -1), atol=1e-12)
    assert probs.numel() == (logits.numel() if backend == "cpu" else 0)
    ref = torch.ops.nattk.na2d_av(logits.softmax(-1), v, *args[4:6], backend)
    grad = torch.randn_like(out)
    fused = torch.autograd.grad(out, (q, k, v, rpb), grad)
    unfused = torch.autograd.grad(ref, (q, k, v, rpb), grad)
    assert torch.allclose(out, ref, atol=1e-12)
    for a, b in zip(fused, unfused):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_frozen_bias_gets_no_gradient_and_the_same_input_gradients(backend):
    """Through the operators' own autograd: a bias that needs no gradient gets none (the
    backward op is told so), and q/k/v get exactly what they get with a trainable bias."""
    args = _op_samples(backend, True)[torch.ops.nattk.na2d.default]
    q, k, v, rpb = args[:4]
    grad = torch.randn(q.shape, dtype=q.dtype)
    out = torch.ops.nattk.na2d(*args)[0]
    trained = torch.autograd.grad(out, (q, k, v, rpb), grad)
    frozen_rpb = rpb.detach()
    out = torch.ops.nattk.na2d(q, k, v, frozen_rpb, *args[4:])[0]
    frozen = torch.autograd.grad(out, (q, k, v), grad)
    for a, b in zip(frozen, trained[:3]):
        assert torch.equal(a, b)
    backward_args = (grad, q, k, v, frozen_rpb, out.detach(), *torch.ops.nattk.na2d(*args)[1:])
    _dq, _dk, _dv, drpb = torch.ops.nattk.na2d_backward(*backward_args, *args[4:], False)
    assert drpb.numel() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backward_call_without_rpb_grad_computes_the_bias_gradient(backend):
    """Graphs compiled before ``rpb_grad`` existed call ``na2d_backward`` without it
    (torch.compile keeps them on disk): it defaults to computing the bias gradient."""
    args = _op_samples(backend, True)[torch.ops.nattk.na2d.default]
    q, k, v, rpb = args[:4]
    out, lse, probs = torch.ops.nattk.na2d(*args)
    grad = torch.randn(out.shape, dtype=out.dtype)
    old_call = torch.ops.nattk.na2d_backward(grad, q, k, v, rpb, out, lse, probs, *args[4:])
    expected = torch.autograd.grad(out, (q, k, v, rpb), grad)
    for a, b in zip(old_call, expected):
        assert torch.allclose(a, b, atol=1e-12)


# --------------------------------------------------------------------------- torch.compile
def _forward_backward(model, x, run=None):
    model.zero_grad()
    features = (model if run is None else run)(x)
    sum(f.square().mean() for f in features).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return [f.detach() for f in features], grads


@pytest.mark.slow
def test_compile_fullgraph_equals_eager():
    """Dilations and small-map padding (levels 1-2 pad at 64x96) in one graph, fwd and bwd."""
    model = tiny_dinat()
    x = torch.randn(2, 3, 64, 96)
    expected, expected_grads = _forward_backward(model, x)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    features, grads = _forward_backward(model, x, run=compiled)
    assert max_abs_difference(expected, features) < 1e-5
    for name, grad in expected_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-6, rtol=1e-4), name


@pytest.mark.slow
def test_compile_fullgraph_under_autocast_equals_eager():
    model = tiny_dinat()
    x = torch.randn(1, 3, 64, 96)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x)
        features = compiled(x)
    assert all(f.dtype == torch.bfloat16 for f in features)
    assert max_abs_difference(expected, features) < 1e-2


# --------------------------------------------------------------------------- torch.export
@pytest.mark.slow
def test_export_keeps_operators_and_decomposes_them():
    model = tiny_dinat().eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
    program = export_program(model, x, decompose=False)
    assert _nattk_ops(program) == {"nattk.na2d.default"}
    assert max_abs_difference(expected, program.module()(x)) < 1e-5
    decomposed = program.run_decompositions(DECOMPOSITIONS)
    assert _nattk_ops(decomposed) == set()
    assert max_abs_difference(expected, decomposed.module()(x)) < 1e-5


@pytest.mark.slow
def test_dynamic_export_follows_the_input_size():
    model = tiny_dinat().eval()
    low = smallest_unpadded_input(model)
    assert low == (3 * 2 - 1) * 16 + 1  # level 2: kernel 3 x dilation 2 at stride 16
    program = export_program(model, torch.randn(1, 3, low, low + 7), dynamic=True)
    for size in [(low, low), (160, 224), (257, 161)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert max_abs_difference(model(x), program.module()(x)) < 1e-5
    with pytest.raises(ValueError, match="smallest size at which no attention layer pads"):
        export_program(model, torch.randn(1, 3, 64, 96), dynamic=True)


# --------------------------------------------------------------------------- ONNX
@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 96), (224, 160)], ids=["padded-small-maps", "unpadded"])
def test_onnx_backbone_matches_pytorch(size, tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_dinat().eval()
    x = torch.randn(1, 3, *size)
    path = to_onnx(export_program(model, x), x, tmp_path / "backbone.onnx")
    with torch.no_grad():
        assert max_abs_difference(model(x), onnxruntime_outputs(path, x)) < 1e-4


@pytest.mark.slow
def test_onnx_dynamic_backbone_runs_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_dinat().eval()
    x = torch.randn(1, 3, 160, 192)
    path = to_onnx(export_program(model, x, dynamic=True), x, tmp_path / "dynamic.onnx")
    for size in [(160, 192), (200, 137)]:
        image = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert max_abs_difference(model(image), onnxruntime_outputs(path, image)) < 1e-4


@pytest.mark.slow
def test_onnx_file_holds_only_standard_operators(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = tiny_dinat(depths=[1, 1, 1, 1], dilations=[[2], [1], [1], [1]]).eval()
    x = torch.randn(1, 3, 64, 64)
    path = to_onnx(export_program(model, x), x, tmp_path / "backbone.onnx")
    graph = onnx.load(str(path)).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert {"Gather", "MatMul", "Softmax"} <= {node.op_type for node in graph.node}


# --------------------------------------------------------------------------- backend choice
def _fake_cuda(shape=(1, 16, 16, 2, 32), dtype=torch.float32):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(shape, device="cuda", dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_auto_never_picks_flex_on_cuda(dtype, monkeypatch):
    monkeypatch.delenv("NATTK_NA_BACKEND", raising=False)
    q = _fake_cuda(dtype=dtype)
    assert resolve_backend("auto", q, torch.zeros(2, 13, 13)) == "torch"
    assert resolve_backend("flex", q, torch.zeros(2, 13, 13)) == "flex"  # only when forced


@pytest.mark.parametrize(
    "height, width, kernel, dilation",
    [
        (20, 30, (3, 3), (2, 3)),
        (33, 17, (5, 3), (3, 1)),
        (40, 90, (7, 7), (5, 8)),
        (14, 14, (7, 7), (2, 2)),
    ],
)
def test_flex_block_layout_covers_every_window(height, width, kernel, dilation):
    create_block_mask = pytest.importorskip("torch.nn.attention.flex_attention").create_block_mask
    mask_mod, _, _ = flex_backend._window_mods(height, width, kernel, dilation, torch.device("cpu"))
    for block in (16, 128):
        reference = (
            create_block_mask(
                mask_mod, None, None, height * width, height * width, device="cpu", BLOCK_SIZE=block
            )
            .to_dense()[0, 0]
            .bool()
        )
        counts, order = flex_backend.block_layout(height, width, kernel, dilation, block)
        ours = torch.zeros_like(reference)
        for row, (count, indices_) in enumerate(zip(counts, order)):
            ours[row, indices_[:count].long()] = True
        assert not (reference & ~ours).any()  # every block holding a key is visited
        assert (ours & ~reference).sum() <= reference.sum() // 10  # and hardly any other


def test_flex_block_mask_of_a_coco_stage0_map_is_cheap():
    """66,800 tokens: a dense N x N mask would take > 4 GB; the analytic one takes ~1 MB."""
    flex_backend.block_mask.cache_clear()
    mask = flex_backend.block_mask(200, 334, (7, 7), (28, 28), torch.device("cpu"))
    n = 200 * 334
    assert mask.shape[-2:] == (n, n)
    assert mask.kv_indices.numel() * mask.kv_indices.element_size() < 2 * 2**20
    assert 0 < mask.sparsity() < 100


def test_flex_raises_instead_of_running_eagerly_past_the_recompile_limit(monkeypatch):
    from torch.nn.attention.flex_attention import flex_attention

    # The eager compile backend keeps this CPU test fast; the guard is dynamo's.
    monkeypatch.setattr(
        flex_backend,
        "_compiled_flex",
        torch.compile(flex_attention, backend="eager", dynamic=False),
    )
    rpb = torch.randn(2, 5, 5)
    with torch._dynamo.config.patch(recompile_limit=2), torch.no_grad():
        for height in (8, 9):
            q = torch.randn(1, height, 9, 2, 16)
            flex_backend.attention(q, q, q, (3, 3), (2, 2), rpb, 0.25)
        q = torch.randn(1, 10, 9, 2, 16)
        with pytest.raises(RuntimeError, match="recompile limit"):
            flex_backend.attention(q, q, q, (3, 3), (2, 2), rpb, 0.25)


@pytest.mark.slow
def test_index_table_cache_is_bounded():
    cache = indices.AXIS_CACHE
    cache.clear()
    for length in range(64, 64 + 2 * cache.max_entries):
        indices.grid_indices(length, 16, (7, 7), (2, 1))
    assert len(cache) <= cache.max_entries
    assert cache.nbytes() <= cache.max_bytes
    # A map never seen before is rebuilt identically after eviction.
    keys, bias = indices.grid_indices(64, 16, (7, 7), (2, 1))
    cache.clear()
    keys2, bias2 = indices.grid_indices(64, 16, (7, 7), (2, 1))
    assert torch.equal(keys, keys2) and torch.equal(bias, bias2)


# --------------------------------------------------------------------------- the tool
@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 96), (128, 160)], ids=["padded-small-maps", "unpadded"])
def test_export_tool_writes_a_whole_upernet_segmentor(size, tmp_path, capsys):
    """UperNet + DiNAT (the quickstart's toy config), whole-image logits, checked by onnxruntime."""
    pytest.importorskip("mmseg")
    pytest.importorskip("onnxruntime")
    from nattk import export_onnx

    config = str(REPO / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py")
    out = tmp_path / "upernet.onnx"
    assert export_onnx.main([config, "--shape", *map(str, size), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "mmseg segmentor" in report and out.is_file()
    diff = float(report.split("max |onnxruntime - pytorch| = ")[1].split()[0])
    assert diff < 1e-4

    (logits,) = onnxruntime_outputs(out, torch.randn(1, 3, *size))
    assert logits.shape == (1, 3, *size)  # 3 toy classes at the input resolution


def test_export_tool_refuses_what_it_cannot_export(tmp_path):
    pytest.importorskip("mmdet")
    pytest.importorskip("mmseg")
    from nattk import export_onnx

    seg = str(REPO / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py")
    det = str(REPO / "configs/quickstart/mask-rcnn_dinat-toy_fpn_toy-coco.py")
    out = str(tmp_path / "x.onnx")
    with pytest.raises(SystemExit):
        export_onnx.main([seg, "--shape", "256", "256", "--dynamic", "--out", out])
    with pytest.raises(ValueError, match="pass --backbone"):
        export_onnx.main([det, "--shape", "128", "128", "--out", out])
    with pytest.raises(ValueError, match="smallest size at which no attention layer pads"):
        export_onnx.main([det, "--backbone", "--shape", "64", "64", "--dynamic", "--out", out])
