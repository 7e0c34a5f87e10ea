"""The fused Triton backend, run by Triton's interpreter on CPU tensors (no GPU needed).

``TRITON_INTERPRET=1`` must be set before ``triton.language`` is first imported;
``tests/conftest.py`` sets it for the session, and this file again for a run of its own
(on a machine with a GPU the same tests run on CUDA).
Reference: the fp64 ``torch`` backend, itself checked against a per-query loop in
``test_attention.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from nattk.backbones.attention import (  # noqa: E402  # noqa: E402
    NeighborhoodAttention2D,
    neighborhood_attention_2d,
    resolve_backend,
    triton_backend,
)
from nattk.backbones.attention.triton_tiling import useful_work  # noqa: E402
from nattk.dev import triton_aot  # noqa: E402
from nattk.dev.layer_shapes import published_layer_shapes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def case(b, h, w, heads, dim, kernel, dilation, rpb=True, seed=0):
    return dict(
        batch=b, height=h, width=w, heads=heads, dim=dim,
        kernel=(kernel, kernel) if isinstance(kernel, int) else kernel,
        dilation=(dilation, dilation) if isinstance(dilation, int) else dilation,
        rpb=rpb, seed=seed,
    )  # fmt: skip


# Kernel 3/7/11/13; maps exactly kernel x dilation; ragged dilation groups (length
# not a multiple of the dilation); the largest preset dilations (28, 20, 16, 14)
# with small kernels so that the maps stay small; non-square maps; batch/heads > 1;
# head dims 32 and 48 (plus the 16 and 128 ends of the supported range).
CASES = [
    case(1, 9, 11, 1, 32, 3, 1),
    case(2, 3, 3, 2, 32, 3, 1),  # exactly kernel
    case(1, 12, 7, 2, 48, 3, 2),
    case(2, 14, 17, 2, 32, 7, 1),
    case(1, 7, 7, 3, 32, 7, 1),  # exactly kernel
    case(1, 14, 14, 2, 32, 7, 2),  # exactly kernel x dilation
    case(1, 17, 15, 2, 32, 7, 2),  # ragged on both axes
    case(1, 23, 16, 1, 48, (5, 7), (3, 2)),
    case(1, 22, 26, 2, 48, 7, 3),  # ragged
    case(1, 21, 9, 2, 32, 7, (3, 1)),  # exactly kernel x dilation on one axis
    case(1, 11, 11, 2, 32, 11, 1),  # exactly kernel
    case(1, 13, 20, 2, 48, 11, 1),
    case(1, 22, 23, 1, 32, 11, 2),  # exactly kernel x dilation, ragged columns
    case(2, 15, 12, 1, 32, 11, 1),
    case(1, 13, 13, 2, 32, 13, 1),
    case(1, 16, 26, 1, 48, 13, (1, 2)),
    case(1, 86, 9, 1, 32, 3, (28, 1)),  # coco level-0 dilation: groups of 3 (two ragged)
    case(1, 45, 10, 2, 32, 3, (14, 2)),  # m2f level-0 dilation, ragged rows
    case(1, 7, 61, 1, 32, 3, (2, 20)),  # ade20k640 level-0 dilation, ragged
    case(1, 50, 8, 1, 48, 3, (16, 1)),  # ade20k512 level-0 dilation, ragged rows
    case(1, 35, 37, 1, 32, 7, 5),  # exactly kernel x dilation (rows), ragged columns
    case(1, 50, 52, 1, 32, 7, 7),  # coco level-2 dilation, ragged
    case(1, 22, 24, 2, 32, 5, 4),
    case(1, 10, 12, 2, 16, 5, 1),  # head dim 16
    case(1, 10, 9, 1, 128, 5, 1),  # head dim 128
    case(1, 12, 13, 2, 40, 3, (2, 3)),  # head dim not a power of two
    case(2, 16, 16, 2, 32, 7, 2, rpb=False),
    case(1, 19, 18, 2, 48, 11, 1, rpb=False),
    case(3, 9, 10, 2, 32, 3, 3, seed=1),  # exactly kernel x dilation (rows)
    case(1, 40, 12, 1, 32, (7, 3), (5, 4)),
    case(1, 26, 28, 1, 32, 13, 2),  # exactly kernel x dilation
    case(2, 8, 20, 1, 32, (1, 9), (1, 2)),
]
LOW_PRECISION_CASES = [CASES[i] for i in (3, 6, 8, 12, 14, 16, 21, 26)]
# Triton's CPU interpreter takes seconds a case: the fast tier keeps a few small ones.
FAST_CASES = [CASES[i] for i in (0, 1, 4, 24)]


def _tiered(cases):
    return [c if c in FAST_CASES else pytest.param(c, marks=pytest.mark.slow) for c in cases]


def _inputs(c, dtype, requires_grad=True):
    gen = torch.Generator().manual_seed(c["seed"])
    shape = (c["batch"], c["height"], c["width"], c["heads"], c["dim"])
    q, k, v, grad = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    kr, kc = c["kernel"]
    rpb = torch.randn(c["heads"], 2 * kr - 1, 2 * kc - 1, generator=gen, dtype=torch.float64)
    rpb = rpb if c["rpb"] else None
    return q, k, v, rpb, grad


def _grads(backend, q, k, v, rpb, grad, c):
    leaves = [t.requires_grad_(True) for t in (q, k, v, rpb) if t is not None]
    out = neighborhood_attention_2d(q, k, v, c["kernel"], c["dilation"], rpb, backend=backend)
    return out, torch.autograd.grad(out, leaves, grad)


def _rel_err(a, b):
    return ((a.double().cpu() - b).abs().max() / b.abs().max()).item()


def _check_case(c, dtype, tol):
    q, k, v, rpb, grad = _inputs(c, dtype)
    ref, ref_grads = _grads("torch", q, k, v, rpb, grad, c)
    tq, tk, tv, tg = (x.to(DEVICE, dtype) for x in (q, k, v, grad))
    trpb = None if rpb is None else rpb.to(DEVICE, torch.float32)  # the fp32 parameter
    out, grads = _grads("triton", tq, tk, tv, trpb, tg, c)
    assert out.dtype == dtype and out.shape == ref.shape
    names = ["dq", "dk", "dv", "drpb"]
    errors = {"out": _rel_err(out, ref)}
    errors.update({n: _rel_err(g, r) for n, g, r in zip(names, grads, ref_grads)})
    if rpb is not None:
        assert grads[3].dtype == torch.float32
    bad = {n: e for n, e in errors.items() if not e <= tol}
    assert not bad, f"{c}: relative errors above {tol}: {bad}"


@pytest.mark.parametrize("c", _tiered(CASES), ids=lambda c: f"k{c['kernel']}d{c['dilation']}"
                         f"{c['height']}x{c['width']}b{c['batch']}h{c['heads']}D{c['dim']}")  # fmt: skip
def test_fp32_forward_and_gradients_match_fp64_reference(c):
    _check_case(c, torch.float32, 1e-5)


@pytest.mark.parametrize(
    "c", _tiered(LOW_PRECISION_CASES), ids=lambda c: f"k{c['kernel']}d{c['dilation']}"
)
def test_fp16_forward_and_gradients_match_fp64_reference(c):
    _check_case(c, torch.float16, 2e-2)


@pytest.mark.parametrize(
    "c", _tiered(LOW_PRECISION_CASES), ids=lambda c: f"k{c['kernel']}d{c['dilation']}"
)
def test_bf16_forward_and_gradients_match_fp64_reference(c):
    if DEVICE.type == "cpu":
        pytest.skip("Triton's interpreter computes bf16 wrongly: bf16 runs on a GPU only")
    _check_case(c, torch.bfloat16, 5e-2)


def test_a_wrong_window_is_detected():
    """The tolerance is tight enough to see a one-position shift of the bias."""
    c = case(1, 14, 14, 2, 32, 7, 1)
    q, k, v, rpb, _ = _inputs(c, torch.float32)
    ref = neighborhood_attention_2d(q, k, v, 7, 1, rpb, backend="torch")
    shifted = torch.roll(rpb, 1, dims=2).float()
    out = neighborhood_attention_2d(
        q.float(), k.float(), v.float(), 7, 1, shifted, backend="triton"
    )
    assert _rel_err(out, ref) > 1e-3


def test_non_contiguous_qkv_from_one_projection():
    """q, k, v as views of one qkv tensor (what the module produces) need no copies."""
    torch.manual_seed(0)
    qkv = torch.randn(2, 15, 14, 3, 2, 32, device=DEVICE)
    q, k, v = qkv.unbind(3)
    assert not q.is_contiguous()
    rpb = torch.randn(2, 13, 13, device=DEVICE)
    out = neighborhood_attention_2d(q, k, v, 7, 2, rpb, backend="triton")
    ref = neighborhood_attention_2d(
        q.contiguous(), k.contiguous(), v.contiguous(), 7, 2, rpb, backend="torch"
    )
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.slow
def test_module_and_environment_variable_select_triton(monkeypatch):
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(64, 2, 7, dilation=2).to(DEVICE)
    x = torch.randn(1, 17, 19, 64, device=DEVICE)
    ref = layer(x)
    monkeypatch.setenv("NATTK_NA_BACKEND", "triton")
    assert resolve_backend("auto", x.new_empty(1, 1, 1, 1, 32), None) == "triton"
    out = layer(x)
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    assert layer.rpb.grad is not None and layer.rpb.grad.abs().sum() > 0


def test_module_pads_small_maps_on_triton():
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(64, 2, 7, dilation=3).to(DEVICE)
    x = torch.randn(1, 9, 12, 64, device=DEVICE)  # smaller than 7 x 3: padded
    ref = layer(x)
    layer.backend = "triton"
    assert torch.allclose(layer(x), ref, atol=1e-5)


def test_auto_does_not_choose_triton_until_validated_on_a_gpu():
    q = torch.empty(1, 8, 8, 2, 32)
    assert resolve_backend("auto", q, None) != "triton"


def test_triton_runs_inside_a_compiled_function():
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(32, 1, 5).to(DEVICE)
    layer.backend = "triton"
    x = torch.randn(1, 11, 12, 32, device=DEVICE)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    ref = layer(x)
    assert torch.allclose(out, ref, atol=1e-6)
    out.sum().backward()
    assert layer.rpb.grad is not None


def test_under_autocast_q_k_v_are_cast_and_rpb_grad_stays_fp32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 12, 12, 2, 32, device=DEVICE, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 13, 13, device=DEVICE, requires_grad=True)
    with torch.autocast(DEVICE.type, dtype=torch.float16):
        out = neighborhood_attention_2d(q, k, v, 7, 1, rpb, backend="triton")
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert rpb.grad.dtype == torch.float32 and q.grad.dtype == torch.float32
    ref = neighborhood_attention_2d(q, k, v, 7, 1, rpb, backend="torch")
    assert torch.allclose(out.float(), ref, atol=2e-2)


def test_unsupported_calls_say_why():
    q = torch.empty(1, 8, 8, 2, 256, device=DEVICE)
    with pytest.raises(RuntimeError, match="head_dim 256"):
        neighborhood_attention_2d(q, q, q, 3, 1, backend="triton")
    q = torch.empty(1, 8, 8, 2, 32, dtype=torch.float64, device=DEVICE)
    with pytest.raises(RuntimeError, match="float64"):
        neighborhood_attention_2d(q, q, q, 3, 1, backend="triton")


def _jit_compiles(heads, dim, dtype):
    """``{layout: {kernel: variants compiled}}`` over many calls, through Triton's JIT."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "triton_jit_keys.py"), str(heads), str(dim), dtype],
        env=env, cwd=ROOT / "tests", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _in_a_compiling_process(code: str) -> dict:
    """Runs ``code`` (which prints one JSON line) where Triton compiles (no interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.compiler
@pytest.mark.parametrize("heads, dim, dtype", [(2, 32, "float16"),
                                               pytest.param(6, 32, "bfloat16", marks=pytest.mark.slow),
                                               pytest.param(3, 48, "float32", marks=pytest.mark.slow),
                                               pytest.param(1, 32, "float16", marks=pytest.mark.slow)])  # fmt: skip
def test_a_new_image_size_dilation_or_batch_compiles_nothing_new(heads, dim, dtype):
    """One variant per kernel over 7 map sizes, 4 dilations, 3 batches, for contiguous
    q/k/v and for views of one qkv tensor, compiled by Triton's JIT for sm_90."""
    for layout, per_kernel in _jit_compiles(heads, dim, dtype).items():
        assert {n: c for n, c in per_kernel.items() if c} == {
            name: 1 for name in triton_aot.KERNEL_NAMES
        }, (layout, per_kernel)


@pytest.mark.compiler
def test_row_strides_that_are_not_multiples_of_16_take_the_unaligned_twins():
    """Head dim 40 and one head: the row stride 40 W is a multiple of 16 for some widths
    only, so the specialised kernel would recompile with the width; the twins leave row
    and batch strides unspecialised: at most one variant of each."""
    per_kernel = _jit_compiles(1, 40, "float16")["contiguous"]
    twins = {f"{name}_unaligned" for name in triton_aot.KERNEL_NAMES}
    assert all(per_kernel[t] == 1 for t in twins) and max(per_kernel.values()) == 1, per_kernel
    found = _in_a_compiling_process(
        "import json, torch\n"
        "from nattk.dev import triton_aot\n"
        "out = {}\n"
        "for width in (25, 24):\n"
        "    q = torch.zeros(1, 15, width, 1, 40)\n"
        "    got = triton_aot.compile_through_the_jit(\n"
        "        lambda: triton_aot.run_launcher(q, q, q, None, (5, 5), (2, 2)))\n"
        "    out[width] = sorted(n for n, v in got.items() if v)\n"
        "print(json.dumps(out))\n"
    )
    assert found["25"] == sorted(twins)
    assert found["24"] == sorted(triton_aot.KERNEL_NAMES)


#: The three published models of the issue that asked for one compile per kernel:
#: (name, create_model kwargs, input height, width). Their last stages have 16 and 48 heads.
PUBLISHED_MODELS = [
    ("dinat_tiny", dict(dilations="coco"), 800, 1216),
    ("dinat_large", dict(dilations="m2f", kernel_size=11), 1024, 1024),
    ("dinat_s_tiny", dict(dilations="coco"), 800, 1216),
]


@pytest.mark.compiler
@pytest.mark.parametrize("model", [PUBLISHED_MODELS[0],
                                   pytest.param(PUBLISHED_MODELS[1], marks=pytest.mark.slow),
                                   pytest.param(PUBLISHED_MODELS[2], marks=pytest.mark.slow)],
                         ids=[m[0] for m in PUBLISHED_MODELS])  # fmt: skip
def test_a_published_model_compiles_each_kernel_once_per_dtype(model):
    """Every attention layer of the model (its own q/k/v projection, a trainable bias),
    forward and backward through the real operator and launcher, compiled by Triton's
    JIT for sm_90: one variant per kernel and dtype, no unaligned twin."""
    name, kwargs, height, width = model
    dtypes = ["float16"] if name == "dinat_tiny" else ["float16", "bfloat16", "float32"]
    counts = _in_a_compiling_process(
        "import json, torch\n"
        "from nattk.backbones.variants import create_model\n"
        "from nattk.dev import triton_aot\n"
        f"model = create_model({name!r}, num_classes=0, **{kwargs!r})\n"
        f"print(json.dumps({{d: triton_aot.model_compiles(model, {height}, {width}, "
        f"getattr(torch, d)) for d in {dtypes!r}}}))\n"
    )
    expected = {n: 1 for n in triton_aot.KERNEL_NAMES}
    expected.update({f"{n}_unaligned": 0 for n in triton_aot.KERNEL_NAMES})
    assert counts == {d: expected for d in dtypes}


def test_model_layers_are_found_with_their_input_shapes():
    from nattk.backbones.variants import create_model
    from nattk.dev.layer_shapes import attention_inputs

    model = create_model("dinat_tiny", num_classes=0, dilations="coco")
    found = attention_inputs(model, 800, 1216, batch=2)
    assert len(found) == sum(model.depths) == 30
    shapes = {(attn.num_heads, shape) for attn, shape in found}
    assert shapes == {(2, (2, 200, 304, 64)), (4, (2, 100, 152, 128)),
                      (8, (2, 50, 76, 256)), (16, (2, 25, 38, 512))}  # fmt: skip
    assert next(model.parameters()).device.type == "cpu"  # the model itself is untouched


def test_the_unaligned_twins_compute_the_same():
    _check_case(case(1, 15, 25, 1, 40, 5, 2), torch.float32, 1e-5)


def test_map_sizes_dilations_and_grid_extents_are_never_specialised():
    from triton.runtime.jit import JITFunction

    from nattk.backbones.attention import triton_kernels

    for name in triton_aot.KERNEL_NAMES:
        fn = getattr(triton_kernels, name)
        if not isinstance(fn, JITFunction):  # the interpreter's wrapper keeps the options
            fn = JITFunction(fn.fn, do_not_specialize=fn.kwargs["do_not_specialize"])
        params = {p.name: p for p in fn.params}
        for arg in ("height", "width", "dil_r", "dil_c", "tiles_r", "tiles_c", "tiles", "heads"):
            assert params[arg].do_not_specialize, (name, arg)
        for arg in ("s_b", "s_r", "s_c", "s_h", "o_b", "o_r", "o_c", "o_h"):
            assert not params[arg].do_not_specialize, (name, arg)


# --------------------------------------------------------------------------- bias gradient
def _program_tiles(c, keys=False):
    """``(interior, valid points)`` of every dq program (or, with ``keys``, dk/dv program)
    of one (batch, head) of case ``c``, from the window definitions: a query tile is
    interior when all its windows are unclamped; a key tile when all the queries whose
    windows hold its keys are unclamped and no clamped query reaches it."""
    from nattk.backbones.attention.triton_tiling import cdiv, tile_shape, tiles_per_axis

    tile = tile_shape(c["kernel"])
    out = []
    axes = []
    for length, d, k, size in zip((c["height"], c["width"]), c["dilation"], c["kernel"],
                                  (tile.rows, tile.cols)):  # fmt: skip
        spans = []
        for group in range(d):
            group_len = cdiv(length - group, d)
            for first in range(0, tiles_per_axis(length, d, size) * size, size):
                valid = max(0, min(size, group_len - first))
                if keys:
                    inner = first >= k and first + size + k <= group_len
                else:
                    inner = first >= k // 2 and first + size - 1 + k // 2 < group_len
                spans.append((inner, valid))
        axes.append(spans)
    for inner_r, valid_r in axes[0]:
        for inner_c, valid_c in axes[1]:
            out.append((inner_r and inner_c, valid_r * valid_c))
    return out


@pytest.fixture
def atomic_counts(monkeypatch):
    """Active lanes of every ``tl.atomic_add`` the interpreter runs, in order."""
    if DEVICE.type != "cpu":
        pytest.skip("counts atomics in Triton's interpreter")
    from triton.runtime import interpreter

    counts = []
    original = interpreter.InterpreterBuilder.create_atomic_rmw

    def counting(self, rmw_op, ptr, val, mask, sem, scope):
        counts.append(int(mask.data.sum()))
        return original(self, rmw_op, ptr, val, mask, sem, scope)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_atomic_rmw", counting)
    return counts


@pytest.mark.parametrize("c", [case(1, 20, 32, 2, 32, 7, 1),
                               pytest.param(case(1, 26, 40, 1, 32, 5, 2), marks=pytest.mark.slow),
                               pytest.param(case(1, 26, 20, 1, 32, 11, 1), marks=pytest.mark.slow)],
                         ids=["k7d1", "k5d2", "k11"])  # fmt: skip
def test_drpb_is_reduced_per_program_before_the_atomics(c, atomic_counts):
    """Interior programs add one value per window offset (<= the table size), border
    programs one per query and offset; the gradients stay exact."""
    _check_case(c, torch.float32, 1e-5)
    window = c["kernel"][0] * c["kernel"][1]
    table = (2 * c["kernel"][0] - 1) * (2 * c["kernel"][1] - 1)
    programs = _program_tiles(c) * c["heads"] * c["batch"]
    expected = [window if inner else valid * window for inner, valid in programs if valid]
    assert sorted(n for n in atomic_counts if n) == sorted(expected)
    interior = [inner for inner, valid in programs if valid].count(True)
    assert interior > 0 and window <= table
    pairs = sum(valid for _, valid in programs) * window  # one atomic per pair before
    assert sum(atomic_counts) < pairs


@pytest.mark.slow
def test_a_wrong_interior_test_breaks_the_bias_gradient(monkeypatch):
    """Negative control: treating border tiles as interior (clamped windows read as
    centred ones) must break drpb, and only drpb."""
    if DEVICE.type != "cpu":
        pytest.skip("rebuilds the kernel for Triton's interpreter")
    import inspect

    import triton

    from nattk.backbones.attention import triton_kernels

    source = inspect.getsource(triton_kernels.na2d_bwd_dq_kernel.fn)
    assert source.count("        if interior:\n") == 1
    namespace = dict(vars(triton_kernels))
    exec(compile(source.replace("        if interior:\n", "        if True:\n"), "<wrong>", "exec"),
         namespace)  # fmt: skip
    monkeypatch.setattr(
        triton_kernels, "na2d_bwd_dq_kernel", triton.jit(namespace["na2d_bwd_dq_kernel"])
    )
    c = case(1, 20, 32, 2, 32, 7, 1)
    q, k, v, rpb, grad = _inputs(c, torch.float32)
    _, ref = _grads("torch", q, k, v, rpb, grad, c)
    _, wrong = _grads("triton", *(x.float() for x in (q, k, v, rpb, grad)), c)
    assert _rel_err(wrong[0], ref[0]) < 1e-5
    assert _rel_err(wrong[3], ref[3]) > 1e-2


def test_deterministic_mode_is_not_ignored():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 9, 9, 1, 32, device=DEVICE, requires_grad=True) for _ in range(3))
    rpb = torch.randn(1, 5, 5, device=DEVICE, requires_grad=True)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        out = neighborhood_attention_2d(q, k, v, 3, 1, rpb, backend="triton")
        with pytest.raises(RuntimeError, match="deterministic.*backend='torch'"):
            out.sum().backward()
        out = neighborhood_attention_2d(q, k, v, 3, 1, None, backend="triton")
        out.sum().backward()  # no bias: no atomics, nothing to refuse
        torch.use_deterministic_algorithms(True, warn_only=True)
        out = neighborhood_attention_2d(q, k, v, 3, 1, rpb, backend="triton")
        with pytest.warns(UserWarning, match="not deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(was)


@pytest.mark.slow
def test_many_images_and_heads_on_one_folded_grid_axis():
    _check_case(case(3, 16, 24, 3, 32, 7, 1), torch.float32, 1e-5)


# --------------------------------------------------------------------------- useful work
def test_useful_work_is_at_least_a_quarter_on_every_published_layer():
    fractions = {}
    for name, level, h, w, kernel, d in published_layer_shapes():
        useful, evaluated = useful_work(h, w, (kernel, kernel), (d, d))
        assert useful == h * w * kernel * kernel  # every window pair is evaluated once
        fractions[(name, level, d)] = useful / evaluated
    low = {key: round(f, 3) for key, f in fractions.items() if f < 0.25}
    assert not low, f"useful work below 25%: {low}"


# --------------------------------------------------------------------------- ahead of time
#: Non-MMA warp-instructions per in-window pair (COCO stage 1, sm_90, fp16, head dim 32,
#: trainable bias) of the kernels before the interior fast path (commit 2de3bf3), by
#: kernel and kernel size, recomputed with today's counter (one loop then:
#: ``loop_other x warps x blocks / pairs``); docs/benchmarks.md has the table.
NON_MMA_BEFORE = {
    ("na2d_fwd_kernel", 7): 2.67, ("na2d_fwd_kernel", 11): 1.93,
    ("na2d_bwd_dq_kernel", 7): 5.23, ("na2d_bwd_dq_kernel", 11): 6.04,
    ("na2d_bwd_dkdv_kernel", 7): 5.33, ("na2d_bwd_dkdv_kernel", 11): 3.86,
}  # fmt: skip
#: The goals of the interior fast path: the forward at most this many per pair; the
#: backward kernels at least 1.5x fewer than before.
FORWARD_NON_MMA_GOAL = {7: 1.3, 11: 1.0}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every specialisation compiled for sm_90/sm_80/sm_86 by the report tool, as rows."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    report = tmp_path_factory.mktemp("aot") / "aot.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "triton_compile_report.py"),
         "--jobs", "2", "--json", str(report)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.slow
@pytest.mark.compiler
def test_every_specialisation_compiles_within_shared_memory_and_the_bound(compiled):
    from nattk.backbones.attention.triton_tiling import shared_memory_bound

    assert len(compiled) == 3 * len(triton_aot.published_specialisations())
    for row in compiled:
        assert 0 < row["shared_bytes"] <= triton_aot.SHARED_MEMORY_LIMIT[row["arch"]], row
        bits = 32 if row["dtype"] == "fp32" else 16
        bound = shared_memory_bound(bits, triton_backend._block_dim(row["head_dim"]))
        assert row["shared_bytes"] <= bound, row
        if row["dtype"] == "fp32":
            assert row["local_bytes"] <= 64, row


@pytest.mark.slow
@pytest.mark.compiler
def test_sass_targets_on_sm90_fp16_bf16(compiled):
    """Kernel 7 and 11, head dim 32: no local memory, q/k/v/o moved in >= 64-bit
    accesses (no 16-bit global access left), no atomic inside a key loop, and the
    interior fast path's goals: forward non-MMA per window pair at most 1.3 (kernel 7)
    and 1.0 (kernel 11), dq and dk/dv at least 1.5x fewer than before it."""
    rows = [r for r in compiled if r["arch"] == 90 and r["dtype"] in ("fp16", "bf16")
            and r["kernel_size"] in (7, 11) and r["head_dim"] == 32 and r["rpb"]]  # fmt: skip
    assert len(rows) == 2 * 2 * 3 + 2 * 2  # + the frozen-bias dq kernels
    for row in rows:
        sass = row["sass"]
        assert row["local_bytes"] == 0, row
        assert (
            min(int(w) for w in sass["loads"]) >= 32 and min(int(w) for w in sass["stores"]) >= 32
        )
        assert sum(n for w, n in sass["loads"].items() if int(w) >= 64) >= 4, row  # q, k, v, (out)
        assert sass["loop_mma"] > 0 and sass["loop_atomics"] == 0, row
        assert sass["fast_loop_other"] < sass["loop_other"], row  # two loops: interior, border
        per_pair = row["non_mma_per_window_pair"]
        if row["kernel"] == "na2d_fwd_kernel":
            assert per_pair <= FORWARD_NON_MMA_GOAL[row["kernel_size"]], row
        else:
            before = NON_MMA_BEFORE[(row["kernel"], row["kernel_size"])]
            assert per_pair <= before / 1.5, row
        if row["kernel"] == "na2d_bwd_dq_kernel" and not row["rpb_grad"]:
            assert sass["atomics"] == 0, row  # a frozen bias: no bias gradient at all


def test_the_sass_counter_reads_loops_widths_and_atomics():
    from nattk.dev import triton_sass

    sass = """
        /*0000*/                   LDG.E.128 R4, desc[UR6][R2.64] ;
        /*0010*/              @P0 LDG.E.U16 R8, desc[UR6][R2.64] ;
        /*0020*/                   HMMA.16816.F32 R12, R4, R6, R12 ;
        /*0030*/                   FADD R1, R1, R2 ;
        /*0040*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR6][R2.64], R5 ;
        /*0050*/              @P1 BRA 0x20 ;
        /*0060*/                   STG.E.64 desc[UR6][R2.64], R4 ;
        /*0070*/                   EXIT ;
    """
    c = triton_sass.counters(sass)
    assert dict(c.loads) == {128: 1, 16: 1} and dict(c.stores) == {64: 1}
    assert (c.mma, c.loop_mma, c.loop_other, c.atomics, c.loop_atomics) == (1, 1, 3, 1, 1)
    assert c.fast_loop_other == 3
    two_loops = sass.replace(
        "/*0070*/                   EXIT ;",
        """/*0070*/                   HMMA.16816.F32 R12, R4, R6, R12 ;
        /*0080*/                   FADD R1, R1, R2 ;
        /*0090*/              @P1 BRA 0x70 ;
        /*00a0*/                   EXIT ;""",
    )
    c = triton_sass.counters(two_loops)
    assert (c.fast_loop_other, c.loop_other) == (2, 3)
    with pytest.raises(ValueError, match="no SASS"):
        triton_sass.counters("not sass")


def test_shared_memory_refusal_names_the_need_and_the_limit():
    from nattk.backbones.attention.triton_tiling import shared_memory_bound

    sm86 = triton_aot.SHARED_MEMORY_LIMIT[86]
    for dtype in triton_backend.SUPPORTED_DTYPES:
        for head_dim in (16, 32, 48, 64, 128):  # everything supported fits sm_86 (99 KiB)
            assert triton_backend.shared_memory_reason(dtype, head_dim, sm86) is None
    reason = triton_backend.shared_memory_reason(torch.float32, 128, 64 * 1024, "sm_75 GPU")
    need = shared_memory_bound(32, 128)
    assert reason == (f"torch.float32 with head_dim 128 needs up to {need} bytes of shared "
                      f"memory per block; sm_75 GPU allows {64 * 1024}")  # fmt: skip


def test_unsupported_reason_without_a_gpu_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if DEVICE.type == "cpu":
        reason = triton_backend.unsupported_reason(torch.empty(1, 4, 4, 1, 32))
        assert "CUDA" in reason


# --------------------------------------------------------------------------- refusals
def _fake_gpu(monkeypatch, name, capability, shared=227 * 1024):
    """Device facts of a GPU for CPU tensors (the refusals read nothing else of it)."""
    facts = triton_backend.DeviceFacts(name, capability, shared)
    monkeypatch.setattr(triton_backend, "device_facts", lambda device: facts)


def test_an_old_triton_is_refused_with_what_to_install(monkeypatch):
    monkeypatch.setattr(triton_backend, "_TRITON_VERSION", (3, 1))
    reason = triton_backend.unsupported_reason(torch.empty(1, 8, 8, 1, 32, device=DEVICE))
    assert reason == (
        "triton 3.1 is older than 3.3, the oldest the kernels compile with: "
        "pip install 'triton>=3.3' (or torch>=2.7)"
    )
    q = torch.randn(1, 8, 8, 1, 32, device=DEVICE)
    with pytest.raises(RuntimeError, match="triton 3.1 is older than 3.3"):
        neighborhood_attention_2d(q, q, q, 3, 1, backend="triton")


def test_the_installed_triton_version_is_read():
    import triton

    assert triton_backend.triton_version() == tuple(
        int(x) for x in triton.__version__.split(".")[:2]
    )
    assert triton_backend.triton_version() >= triton_backend.MIN_TRITON


@pytest.mark.parametrize("dtype, capability, refused", [
    (torch.bfloat16, (7, 5), True), (torch.bfloat16, (8, 0), False),
    (torch.float16, (7, 5), False), (torch.float16, (7, 0), True),
    (torch.float32, (6, 1), True), (torch.bfloat16, (9, 0), False),
])  # fmt: skip
def test_a_gpu_too_old_for_the_dtype_is_refused(monkeypatch, dtype, capability, refused):
    _fake_gpu(monkeypatch, "Tesla T4", capability)
    reason = triton_backend.unsupported_reason(torch.empty(1, 8, 8, 1, 32, dtype=dtype))
    if not refused:
        assert reason is None
        return
    need = triton_backend.MIN_CAPABILITY[dtype]
    instead = "float16 or backend='torch'" if dtype == torch.bfloat16 else "backend='torch'"
    assert reason == (
        f"{dtype} on Tesla T4 (sm_{capability[0]}{capability[1]}): the triton kernels need "
        f"sm_{need[0]}{need[1]} or newer for it; use {instead}"
    )


def test_too_little_shared_memory_is_refused_with_the_device_name(monkeypatch):
    _fake_gpu(monkeypatch, "Small GPU", (8, 6), shared=48 * 1024)
    reason = triton_backend.unsupported_reason(torch.empty(1, 8, 8, 1, 128))
    assert reason.startswith("torch.float32 with head_dim 128 needs up to") and reason.endswith(
        "Small GPU allows 49152"
    )


def test_offsets_beyond_32_bits_in_one_image_are_refused():
    # A qkv view of a 768x768 map with 3 x 24 heads of 64: one image spans > 2**31 elements
    # (shapes only: meta tensors).
    qkv = torch.empty(1, 768, 768, 3, 24, 64, device="meta")
    q = qkv.unbind(3)[0]
    reason = triton_backend.offset_reason(q)
    span = 767 * 768 * 4608 + 767 * 4608 + 23 * 64 + 64
    assert span > 2**31 - 1
    assert reason == (
        f"one image spans {span} elements (768x768 map, 24 heads of 64), beyond the triton "
        "kernels' 32-bit offsets (2147483647): use backend='torch'"
    )
    small = torch.empty(1, 256, 256, 3, 24, 64, device="meta").unbind(3)[0]
    assert triton_backend.offset_reason(small) is None


# --------------------------------------------------------------------------- frozen bias
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5),
                                        pytest.param(torch.float16, 2e-2, marks=pytest.mark.slow)])  # fmt: skip
def test_a_frozen_bias_gives_the_same_input_gradients_without_a_bias_gradient(
    dtype, tol, atomic_counts
):
    """rpb.requires_grad False: the dq kernel is built without the bias gradient (no
    atomics at all); dq/dk/dv equal those with a trainable bias and the torch backend's."""
    c = case(1, 20, 32, 2, 32, 7, 1)
    q, k, v, rpb, grad = _inputs(c, dtype)
    ref = neighborhood_attention_2d(
        *(t.requires_grad_() for t in (q, k, v)), 7, 1, rpb, backend="torch"
    )
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    tq, tk, tv, tg = (x.detach().to(DEVICE, dtype).requires_grad_() for x in (q, k, v, grad))
    frozen = rpb.to(DEVICE, torch.float32)
    out = neighborhood_attention_2d(tq, tk, tv, 7, 1, frozen, backend="triton")
    grads = torch.autograd.grad(out, (tq, tk, tv), tg)
    assert atomic_counts == []  # no bias gradient, no atomics
    trained = frozen.clone().requires_grad_()
    out2 = neighborhood_attention_2d(tq, tk, tv, 7, 1, trained, backend="triton")
    grads2 = torch.autograd.grad(out2, (tq, tk, tv, trained), tg)
    assert atomic_counts  # the trainable bias does use them
    for g, g2, r in zip(grads, grads2, ref_grads):
        assert torch.equal(g, g2)
        assert _rel_err(g, r) <= tol


def test_a_frozen_bias_is_not_refused_in_deterministic_mode():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 9, 9, 1, 32, device=DEVICE, requires_grad=True) for _ in range(3))
    rpb = torch.randn(1, 5, 5, device=DEVICE)  # frozen
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        out = neighborhood_attention_2d(q, k, v, 3, 1, rpb, backend="triton")
        out.sum().backward()
        assert q.grad is not None and rpb.grad is None
    finally:
        torch.use_deterministic_algorithms(was)


# --------------------------------------------------------------------------- interior path
# Maps where interior and border tiles mix, on both axes, with and without dilation:
# query tiles and key tiles (whose interior is smaller) of kernel 3, 7 and 11.
INTERIOR_CASES = [
    case(1, 20, 32, 2, 32, 7, 1),
    case(1, 40, 48, 1, 32, 7, 2),
    case(1, 36, 30, 1, 32, 11, 1),
    case(1, 22, 57, 1, 32, 3, (2, 3)),
    case(1, 24, 48, 1, 48, 5, (1, 2), rpb=False),
]


@pytest.mark.parametrize("c", [pytest.param(c, marks=pytest.mark.slow) if i else c
                               for i, c in enumerate(INTERIOR_CASES)],
                         ids=lambda c: f"k{c['kernel'][0]}d{c['dilation']}")  # fmt: skip
def test_interior_and_border_tiles_together_match_fp64(c):
    for keys in (False, True):
        kinds = {inner for inner, valid in _program_tiles(c, keys) if valid}
        assert kinds == {True, False}, (c, keys)  # interior and border tiles both
    _check_case(c, torch.float32, 1e-5)
    _check_case(c, torch.float16, 2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("broken_pattern, broken", [
    (False, {"out", "dq", "dk", "dv", "drpb"}),  # the forward's: out and lse, so all
    (True, {"dk", "dv"}),  # the dk/dv kernel's transposed one: only dk, dv
])  # fmt: skip
def test_a_wrong_interior_pattern_breaks_exactly_what_uses_it(monkeypatch, broken_pattern, broken):
    """Negative control: dropping the bias from one pattern (forward/dq, or dk/dv's
    transposed one) must break what depends on the kernels that read it, and only that."""
    original = triton_backend.interior_pattern

    def without_bias(rpb, kernel, heads, device, keys_first):
        dropped = keys_first == broken_pattern
        return original(None if dropped else rpb, kernel, heads, device, keys_first=keys_first)

    monkeypatch.setattr(triton_backend, "interior_pattern", without_bias)
    c = case(1, 20, 32, 2, 32, 7, 1)
    q, k, v, rpb, grad = _inputs(c, torch.float32)
    ref_out, ref = _grads("torch", q, k, v, rpb, grad, c)
    out, got = _grads("triton", *(x.detach().float() for x in (q, k, v, rpb, grad)), c)
    errors = {"out": _rel_err(out, ref_out)}
    errors.update({n: _rel_err(g, r) for n, g, r in zip(("dq", "dk", "dv", "drpb"), got, ref)})
    assert {n for n, e in errors.items() if e > 1e-3} == broken, errors


def test_the_interior_pattern_is_the_bias_inside_windows_and_minus_inf_outside():
    from nattk.backbones.attention.triton_tiling import tile_shape

    rpb = torch.randn(2, 13, 13)
    pattern = triton_backend.interior_pattern(rpb, (7, 7), 2, torch.device("cpu"), False)
    tile = tile_shape((7, 7))
    assert pattern.shape == (2, tile.interior_blocks((7, 7)), 32, tile.block)
    finite = torch.isfinite(pattern[0])
    assert int(finite.sum()) == 32 * 49  # every query sees its 7 x 7 window exactly once
    # Query 0 (tile row 0, col 0): its window's first key is halo slot (0, 0), bias (3, 3).
    assert pattern[1, 0, 0, 0] == pytest.approx(rpb[1, 3, 3].item() * triton_backend.LOG2E)
    transposed = triton_backend.interior_pattern(rpb, (7, 7), 2, torch.device("cpu"), True)
    assert int(torch.isfinite(transposed[0]).sum()) == 32 * 49
