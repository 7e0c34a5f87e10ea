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
    triton_aot,
    triton_backend,
)
from nattk.backbones.attention.triton_tiling import (  # noqa: E402
    published_layer_shapes,
    useful_work,
)

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


def test_map_sizes_and_dilations_are_never_specialised():
    """Only kernel size, head dim, dtype and rpb pick a compiled kernel."""
    from triton.runtime.jit import JITFunction

    from nattk.backbones.attention import triton_kernels

    for name in triton_aot.KERNEL_NAMES:
        fn = getattr(triton_kernels, name)
        if not isinstance(fn, JITFunction):  # the interpreter's wrapper keeps the options
            fn = JITFunction(fn.fn, do_not_specialize=fn.kwargs["do_not_specialize"])
        params = {p.name: p for p in fn.params}
        for arg in ("height", "width", "dil_r", "dil_c", "tiles_r", "tiles_c", "s_b", "s_r"):
            assert params[arg].do_not_specialize, (name, arg)
        constexprs = {p.name for p in fn.params if p.is_constexpr}
        assert constexprs == {"KH", "KW", "TH", "TW", "BN", "BD", "HAS_RPB", "IEEE"}


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
def test_every_published_specialisation_compiles_for_sm90_and_sm80(tmp_path):
    """Real compiles (PTX + cubin) for the GPU targets: shared memory within each limit."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    report = tmp_path / "aot.json"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "triton_compile_report.py"),
         "--jobs", "2", "--json", str(report)],
        check=True, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    rows = json.loads(report.read_text())
    assert len(rows) == 2 * len(triton_aot.published_specialisations()) == 72
    for row in rows:
        assert 0 < row["shared_bytes"] <= triton_aot.SHARED_MEMORY_LIMIT[row["arch"]], row
        assert 0 < row["registers"] <= 255, row


def test_unsupported_reason_without_a_gpu_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if DEVICE.type == "cpu":
        reason = triton_backend.unsupported_reason(torch.empty(1, 4, 4, 1, 32))
        assert "CUDA" in reason
