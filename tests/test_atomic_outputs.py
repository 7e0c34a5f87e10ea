"""A failed run never damages an existing output: every tool writes through ``atomic_output``.

Each case puts a file (or folder) where the tool writes, makes the run fail, and compares
the output's hash before and after; the successful runs replace it and leave no
temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

from nattk import convert_checkpoint, convert_legacy_checkpoint
from nattk.backbones import create_model
from nattk.backbones.weights import d2 as d2_layout
from nattk.backbones.weights.files import atomic_output

REPO = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _only(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_a_failing_block_leaves_the_file_as_it_was(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="halfway"):
        with atomic_output(out) as staging:
            staging.write_bytes(b"half")
            raise RuntimeError("halfway")
    assert out.read_bytes() == b"precious"
    _only(tmp_path, "out.bin")


def test_a_finished_block_replaces_it_with_the_usual_permissions(tmp_path):
    out = tmp_path / "sub" / "out.png"
    with atomic_output(out) as staging:
        assert staging.parent == out.parent and staging.suffix == ".png"
        staging.write_bytes(b"new")
    assert out.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    _only(out.parent, "out.png")


def test_a_folder_gets_the_finished_files_or_none_and_keeps_the_rest(tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "mine.txt").write_text("a user's file")
    with pytest.raises(KeyError):
        with atomic_output(out, folder=True) as staging:
            (staging / "config.json").write_text('{"new": 1}')
            raise KeyError("failed")
    assert (out / "config.json").read_text() == "{}"
    with atomic_output(out, folder=True) as staging:
        (staging / "config.json").write_text('{"new": 1}')
        (staging / "weights").write_text("w")
    _only(out, "config.json", "mine.txt", "weights")
    assert (out / "config.json").read_text() == '{"new": 1}'
    _only(tmp_path, "models")


def test_a_replaced_file_keeps_its_mode(tmp_path):
    out = tmp_path / "private.pth"
    out.write_bytes(b"old")
    out.chmod(0o600)
    with atomic_output(out) as staging:
        staging.write_bytes(b"new")
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_file_and_a_folder_are_not_mistaken_for_each_other(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory; give a file name"):
        with atomic_output(tmp_path):
            pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; give a folder name"):
        with atomic_output(tmp_path / "f", folder=True):
            pass


@pytest.fixture
def classifier_file(tmp_path):
    def make(dtype: torch.dtype) -> tuple[Path, dict]:
        model = create_model("dinat_mini", num_classes=10, depths=[1, 1, 2, 1], embed_dim=32)
        state = {k: v.to(dtype) for k, v in model.state_dict().items()}
        path = tmp_path / f"in1k_{dtype}.pth".replace("torch.", "")
        torch.save({"model": state}, path)
        return path, state

    return make


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoints_convert_to_d2(classifier_file, tmp_path, dtype):
    src, state = classifier_file(dtype)
    dst = tmp_path / "existing.pkl"
    dst.write_bytes(b"an older conversion")
    convert_checkpoint.main([str(src), str(dst), "--to", "d2"])
    model = pickle.loads(dst.read_bytes())["model"]
    key = "levels.0.blocks.0.attn.rpb"
    # bf16 has no NumPy dtype: stored as float32, which holds each value exactly.
    assert torch.equal(
        torch.from_numpy(model[key]), state[key].float() if dtype == torch.bfloat16 else state[key]
    )
    _only(tmp_path, src.name, "existing.pkl")


def test_a_failing_d2_conversion_leaves_the_existing_pkl(classifier_file, tmp_path, monkeypatch):
    src, _ = classifier_file(torch.float32)
    dst = tmp_path / "existing.pkl"
    dst.write_bytes(b"an older conversion")
    before = _digest(dst)

    def fail(state):
        raise TypeError("Got unsupported ScalarType")

    monkeypatch.setattr(d2_layout, "from_official", fail)
    with pytest.raises(TypeError):
        convert_checkpoint.main([str(src), str(dst), "--to", "d2"])
    assert _digest(dst) == before
    _only(tmp_path, src.name, "existing.pkl")


@pytest.mark.slow  # a subprocess or an export: seconds
def test_a_failing_hf_conversion_leaves_the_existing_folder(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    src = tmp_path / "dinat_mini.pth"
    torch.save({"model": create_model("dinat_mini").state_dict()}, src)
    dst = tmp_path / "hf_folder"
    dst.mkdir()
    (dst / "config.json").write_text('{"kept": true}')
    before = _digest(dst)

    real_read = convert_checkpoint.read_state_dict

    def fail(path, **kwargs):  # the read-back, after save_pretrained wrote the new folder
        if Path(path).name != "model.safetensors":
            return real_read(path, **kwargs)
        assert Path(path).is_file()
        raise OSError("read-back failed")

    monkeypatch.setattr(convert_checkpoint, "read_state_dict", fail)
    with pytest.raises(OSError, match="read-back failed"):
        convert_checkpoint.main([str(src), str(dst), "--to", "hf", "--variant", "dinat_mini"])
    assert _digest(dst) == before
    _only(tmp_path, src.name, "hf_folder")


def test_a_failing_legacy_conversion_leaves_the_existing_file(tmp_path, monkeypatch):
    src = tmp_path / "mmdet2.pth"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "meta": {}}, src)
    dst = tmp_path / "existing.pth"
    dst.write_bytes(b"an older conversion")
    before = _digest(dst)

    def fail(obj, file):  # a write that stops partway, as on a full disk
        Path(file).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)  # what write_checkpoint calls
    with pytest.raises(OSError, match="disk full"):
        convert_legacy_checkpoint.main([str(src), str(dst)])
    assert _digest(dst) == before
    _only(tmp_path, "mmdet2.pth", "existing.pth")


@pytest.mark.slow  # a subprocess or an export: seconds
def test_onnx_export_above_tolerance_leaves_the_existing_file(tmp_path, capsys):
    pytest.importorskip("mmseg")
    pytest.importorskip("onnxruntime")
    from nattk import export_onnx

    config = str(REPO / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py")
    out = tmp_path / "existing.onnx"
    out.write_bytes(b"an older export")
    before = _digest(out)
    argv = [config, "--shape", "64", "96", "--out", str(out), "--tolerance", "-1"]
    assert export_onnx.main(argv) == 1
    report = capsys.readouterr().out
    assert "FAILED: difference" in report and f"{out} not written" in report
    assert _digest(out) == before
    _only(tmp_path, "existing.onnx")
