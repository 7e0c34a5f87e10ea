""".safetensors checkpoints through every entry point (no pickle on this path).

Two real sources: a toolkit model's ``state_dict()`` written with
``safetensors.torch.save_file``, and transformers' ``DinatForImageClassification``
written by ``save_pretrained(safe_serialization=True)`` (the hub's ``model.safetensors``).
Each is read by :func:`read_state_dict` / :func:`load_pretrained`,
``tools/convert_checkpoint.py``, the MMDetection and MMSegmentation backbones'
``init_cfg`` and MMEngine's checkpoint loader (``load_from``), with ``torch.load``
made to fail: recent torch (2.13) reads ``.safetensors`` in ``torch.load`` itself, the
older ones the toolkit supports do not, so the toolkit must never rely on it.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
from pathlib import Path

import pytest
import torch
from hf_helpers import (
    HAVE_TRANSFORMERS,
    SKIP_REASON,
    SMALL,
    SMALL_DILATIONS,
    SMALL_MLP_RATIO,
    dinat_classes,
    randomise,
    small_config,
    small_model,
)
from safetensors.torch import save_file

from nattk import convert_checkpoint
from nattk.backbones.weights import load_pretrained, read_safetensors, read_state_dict

LAYER_SCALE = 1e-5
CLASSIFIER = ["head.bias", "head.weight", "norm.bias", "norm.weight"]


@pytest.fixture(params=["toolkit", "hugging_face"])
def source(request, tmp_path):
    """``(path, official-layout state dict it holds)`` of a DiNAT classifier file."""
    if request.param == "toolkit":
        state = small_model("dinat", LAYER_SCALE, num_classes=5).state_dict()
        path = tmp_path / "dinat_small.safetensors"
        save_file(state, path)
        return path, state
    if not HAVE_TRANSFORMERS:
        pytest.skip(SKIP_REASON)
    hf = dinat_classes()
    model = hf.ForImageClassification(small_config(hf, "dinat", LAYER_SCALE, num_labels=5))
    model = randomise(model)
    model.save_pretrained(tmp_path / "hub", safe_serialization=True)
    # The same weights in memory: the key mapping itself is tested in test_checkpoint_sources.
    return tmp_path / "hub" / "model.safetensors", read_state_dict(model.state_dict())


@pytest.fixture
def no_torch_load(monkeypatch):
    """A context in which ``torch.load`` (pickle) raises, except on files under
    ``outputs`` (a converter reads back what it wrote before it replaces the target)."""
    real_load = torch.load

    @contextlib.contextmanager
    def context(outputs=None):
        def refuse(*args, **kwargs):
            file = args[0] if args else kwargs.get("f")
            if outputs is not None and Path(file).resolve().is_relative_to(outputs.resolve()):
                return real_load(*args, **kwargs)
            raise AssertionError(f"torch.load called on {file}")

        with monkeypatch.context() as patch:
            patch.setattr(torch, "load", refuse)
            yield

    return context


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(torch.as_tensor(actual[key]), value), key


def test_read_state_dict_and_load_pretrained(source, no_torch_load):
    path, expected = source
    classifier = small_model("dinat", LAYER_SCALE, num_classes=5)
    dense = small_model("dinat", LAYER_SCALE, num_classes=0)
    with no_torch_load():
        assert_same_tensors(read_state_dict(path), expected)
        assert_same_tensors(read_state_dict(str(path)), expected)
        report = load_pretrained(classifier, path)
        dense_report = load_pretrained(dense, path)
    assert report.loaded == report.total and not (report.missing or report.unexpected)
    assert_same_tensors(classifier.state_dict(), expected)

    assert not (dense_report.missing or dense_report.unexpected)
    assert sorted(dense_report.expected_unexpected) == CLASSIFIER
    backbone = {k: v for k, v in expected.items() if k not in CLASSIFIER}
    assert_same_tensors({k: dense.state_dict()[k] for k in backbone}, backbone)


def test_convert_checkpoint_cli_reads_safetensors(source, tmp_path, no_torch_load):
    path, expected = source
    toolkit, d2 = tmp_path / "out" / "toolkit.pth", tmp_path / "out" / "d2.pkl"
    with no_torch_load(outputs=toolkit.parent):
        convert_checkpoint.main([str(path), str(toolkit)])
        convert_checkpoint.main([str(path), str(d2), "--to", "d2"])
    assert_same_tensors(torch.load(toolkit, weights_only=True)["state_dict"], expected)
    payload = pickle.loads(d2.read_bytes())
    assert payload["matching_heuristics"] is True
    backbone = {k: v for k, v in expected.items() if k not in CLASSIFIER}
    assert_same_tensors({k: torch.from_numpy(v) for k, v in payload["model"].items()}, backbone)


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_openmmlab_backbone_init_cfg_reads_safetensors(source, scope, no_torch_load):
    pytest.importorskip(scope)
    from mmengine.registry import init_default_scope

    importlib.import_module("nattk.detection" if scope == "mmdet" else "nattk.segmentation")
    registry = importlib.import_module(f"{scope}.registry").MODELS
    init_default_scope(scope)
    path, expected = source
    backbone = registry.build(
        dict(
            type="DiNAT",
            **SMALL,
            dilations=SMALL_DILATIONS,
            mlp_ratio=SMALL_MLP_RATIO,
            layer_scale=LAYER_SCALE,
            init_cfg=dict(type="Pretrained", checkpoint=str(path)),
        )
    )
    with no_torch_load():
        backbone.init_weights()
    report = backbone.load_report
    assert not (report.missing or report.unexpected)
    assert sorted(report.expected_unexpected) == CLASSIFIER
    assert report.loaded == report.total - len(report.expected_missing) > 0
    backbone_keys = [k for k in expected if k not in CLASSIFIER]
    assert_same_tensors(
        {k: backbone.state_dict()[k] for k in backbone_keys},
        {k: expected[k] for k in backbone_keys},
    )


class _Detector(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = small_model("nat", None, num_classes=0)
        self.neck = torch.nn.Linear(128, 4)


def test_mmengine_loads_local_safetensors_and_only_those(tmp_path, monkeypatch, no_torch_load):
    pytest.importorskip("mmengine", reason="MMEngine is not installed (mmdet/mmseg extras)")
    from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

    import nattk.openmmlab  # noqa: F401  (registers the loader, as the adapters do)

    source = _Detector()
    path = tmp_path / "detector.safetensors"
    save_file(source.state_dict(), path)
    target = _Detector()
    with no_torch_load():
        checkpoint = load_checkpoint(target, str(path), strict=True)  # what load_from runs
    assert checkpoint["meta"] == {} and sorted(checkpoint["state_dict"]) == sorted(
        source.state_dict()
    )
    assert_same_tensors(target.state_dict(), source.state_dict())

    monkeypatch.setenv("HOME", str(tmp_path))
    with no_torch_load():
        home = CheckpointLoader.load_checkpoint("~/detector.safetensors")
    assert sorted(home["state_dict"]) == sorted(source.state_dict())
    with pytest.raises(ValueError, match="read from local paths only; download it first"):
        CheckpointLoader.load_checkpoint("https://huggingface.co/org/repo/model.safetensors")
    loader = CheckpointLoader._get_checkpoint_loader
    assert loader("work_dirs/epoch_12.pth").__name__ == "load_from_local"
    assert loader("https://example.org/x.pth").__name__ == "load_from_http"
    assert loader(str(path)).__name__ == "load_from_safetensors"

    # A whole detector as init_cfg: its backbone.* part is used.
    report = load_pretrained(small_model("nat", None, num_classes=0), path)
    assert report.loaded == report.total and not report.unexpected


def test_bad_safetensors_files_raise_clear_errors(tmp_path, monkeypatch):
    renamed = tmp_path / "renamed.safetensors"
    torch.save({"a": torch.zeros(1)}, renamed)
    with pytest.raises(ValueError, match=r"renamed\.safetensors is not a valid \.safetensors"):
        read_state_dict(renamed)
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match="needs the 'safetensors' package"):
        read_safetensors(renamed)
