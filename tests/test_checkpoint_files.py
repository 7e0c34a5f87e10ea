"""Files that are not checkpoints get their own message; the trust hint names what exists."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from nattk import convert_checkpoint
from nattk.backbones import create_model, load_pretrained
from nattk.backbones.weights import load_checkpoint_file, read_state_dict

TINY = dict(num_classes=0, depths=[1, 1, 2, 1], embed_dim=32)


@pytest.fixture
def good(tmp_path):
    model = create_model("dinat_mini", **TINY)
    path = tmp_path / "good.pth"
    torch.save({"model": model.state_dict()}, path)
    return path, model


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), r"not a checkpoint: .*bad\.pth is a directory"),
        (lambda p: p.write_bytes(b""), r"not a checkpoint: .*bad\.pth is empty"),
        (lambda p: p.write_text("my training notes\n"), r"not a checkpoint: .*bad\.pth is text"),
        (lambda p: p.write_bytes(bytes(range(7, 200))), r"is neither a zip archive nor a pickle"),
    ],
    ids=["directory", "empty", "text", "binary"],
)
def test_what_is_not_a_checkpoint_says_so(tmp_path, make, message):
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(ValueError, match=message) as raised:
        load_checkpoint_file(path)
    assert "trust" not in str(raised.value)


def test_a_truncated_checkpoint_is_named_damaged(good, tmp_path):
    data = good[0].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"not a checkpoint: .*cut\.pth is damaged or truncated"):
        read_state_dict(cut)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        read_state_dict(tmp_path / "absent.pth")


def test_a_pickle_with_objects_is_refused_with_a_hint_that_works(good, tmp_path):
    path, model = good
    state = torch.load(path, weights_only=True)
    state["args"] = argparse.Namespace(lr=0.1)  # what training scripts often save
    trusted = tmp_path / "with_args.pth"
    torch.save(state, trusted)
    target = create_model("dinat_mini", **TINY)
    with pytest.raises(
        ValueError, match=r"holds argparse\.Namespace objects, which .*trust=True \(load_pretrained"
    ) as e:
        load_pretrained(target, trusted)
    assert "--trust (tools/convert_checkpoint.py" in str(e.value)
    # Both options named in the hint exist and load the file.
    report = load_pretrained(target, trusted, trust=True)
    assert report.loaded == report.total and not report.missing
    out = tmp_path / "converted.pth"
    convert_checkpoint.main([str(trusted), str(out), "--trust"])
    converted = torch.load(out, weights_only=True)["state_dict"]
    assert converted.keys() == model.state_dict().keys()


def test_a_legacy_format_checkpoint_still_loads(good, tmp_path):
    path, model = good
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == pickle.PROTO
    assert read_state_dict(legacy).keys() == model.state_dict().keys()
