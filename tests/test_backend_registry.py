"""The backend registry, and the rules that keep ``backbones/`` a torch-only runtime core."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import torch

from nattk.backbones.attention import (
    BACKENDS,
    backend_report,
    na2d_qk,
    neighborhood_attention_2d,
    registry,
    resolve_backend,
    torch_backend,
)
from nattk.backbones.attention.backend_api import Call, check_backend

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ROOT / "backbones"


def test_every_registered_module_is_a_backend_and_auto_keeps_its_order():
    assert BACKENDS == ("auto", *registry.active().names)
    assert registry.active().names == ("natten", "triton", "flex", "cpu", "torch")
    assert registry.active().auto_order == ("natten", "cpu", "torch")
    assert registry.active().unfused == ("cpu", "torch")
    assert set(backend_report()) == set(registry.active().names)


def _toy_backend(calls: list) -> types.ModuleType:
    """A backend as a new file would define it: torch's kernels, counting its calls."""
    toy = types.ModuleType("toy_backend")
    toy.NAME, toy.AUTO, toy.FUSED, toy.UNFUSED = "toy", True, True, False
    toy.KEEPS_PROBS, toy.IN_OPERATOR = False, True

    def unsupported_reason(call: Call):
        return None if call.dtype == torch.float32 else f"toy runs float32 only, not {call.dtype}"

    def attention_forward(*args):
        calls.append("forward")
        return torch_backend.attention_forward(*args)

    def attention_backward(*args):
        calls.append("backward")
        return torch_backend.attention_backward(*args)

    toy.unsupported_reason = unsupported_reason
    toy.attention_forward, toy.attention_backward = attention_forward, attention_backward
    return toy


def test_a_new_backend_is_one_module_plus_one_registry_entry(monkeypatch):
    calls: list[str] = []
    toy = _toy_backend(calls)
    monkeypatch.setattr(registry, "_active", registry.Registry((toy, *registry.REGISTERED)))

    q, k, v = (torch.randn(1, 9, 9, 2, 8, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    assert resolve_backend("auto", q, rpb) == "toy"
    out = neighborhood_attention_2d(q, k, v, 3, 2, rpb)
    out.sum().backward()
    assert calls == ["forward", "backward"]  # through torch.ops.nattk, with autograd
    expected = neighborhood_attention_2d(q, k, v, 3, 2, rpb, backend="torch")
    torch.testing.assert_close(out, expected)

    # Its refusal reaches a user who forces it; auto moves on to the next backend.
    with pytest.raises(RuntimeError, match="toy runs float32 only"):
        neighborhood_attention_2d(q.double(), k.double(), v.double(), 3, 2, backend="toy")
    assert resolve_backend("auto", q.double(), None) in ("cpu", "torch")
    # It has no unfused ops, so QK alone never picks it.
    assert resolve_backend("auto", q, None, candidates=registry.active().unfused) != "toy"
    with pytest.raises(RuntimeError, match="cannot compute this op"):
        na2d_qk(q, k, 3, 2, backend="toy")
    assert backend_report()["toy"] is None

    from nattk.collect_env import collect

    assert "toy" in collect()["NA backends (cpu)"]


def test_a_module_that_is_not_a_backend_is_refused_by_name():
    broken = types.ModuleType("broken_backend")
    broken.NAME, broken.AUTO, broken.FUSED, broken.UNFUSED = "broken", True, True, False
    broken.KEEPS_PROBS, broken.IN_OPERATOR = False, True
    broken.unsupported_reason = lambda call: None
    with pytest.raises(TypeError, match=r"broken_backend .*attention_forward\(\)"):
        check_backend(broken)
    del broken.AUTO
    with pytest.raises(TypeError, match=r"AUTO \(bool\)"):
        check_backend(broken)
    twin = _toy_backend([])
    with pytest.raises(TypeError, match="share a name"):
        registry.Registry((twin, twin))


def test_unknown_backend_names_are_refused():
    q = torch.randn(1, 9, 9, 1, 8)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", q, None)
    with pytest.raises(ValueError, match="no implementation 'flex'"):
        registry.active().operator_backend("flex")


# ------------------------------------------------------------------ import rules
#: Third-party packages the runtime core may import (natten is loaded by name at run time).
CORE_THIRD_PARTY = {"torch", "safetensors", "triton"}
#: Modules of backbones/ that hold models; the operator layer must not reach up into them.
MODEL_LAYER = {
    "nat",
    "variants",
    "layers",
    "weights",
    "checkpoint",
    "pretrained",
    "flops",
    "export",
}


def _imports(path: Path):
    """``(line, module, level)`` for every import statement in ``path``, nested ones too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                module = node.module or ""
                # `from . import x` imports the module x
                yield node.lineno, (module + "." if module else "") + alias.name, node.level


def test_the_runtime_core_imports_only_torch_and_the_standard_library():
    offences = []
    for path in sorted(BACKBONES.rglob("*.py")):
        for line, module, level in _imports(path):
            top = module.split(".")[0]
            if level == 0 and top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offences, "\n".join(offences)


def test_the_operator_layer_does_not_import_the_model_layer():
    offences = []
    for path in sorted((BACKBONES / "attention").rglob("*.py")):
        for line, module, level in _imports(path):
            parent = level >= 2  # `from ..x import` leaves backbones/attention
            absolute = level == 0 and module.startswith("nattk.")
            if parent or absolute:
                name = module.split(".")[0] if parent else module
                if parent and name not in MODEL_LAYER:
                    continue
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {'.' * level}{module}")
    assert not offences, "\n".join(offences)


def test_the_import_rules_catch_an_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..nat import DiNAT\n    import mmdet\n")
    found = list(_imports(bad))
    assert (2, "nat.DiNAT", 2) in found and (3, "mmdet", 0) in found


def test_a_torch_without_the_private_dispatch_api_is_refused_by_name():
    from nattk.backbones.attention import ops

    ops._check_private_dispatch_api()  # this torch has it
    lacking = types.SimpleNamespace(_dispatch_key_for_device=None, DispatchKeySet=None)
    with pytest.raises(RuntimeError, match=r"lacks torch\._C\._ExcludeDispatchKeyGuard"):
        ops._check_private_dispatch_api(lacking)
