"""The tools refuse a model checkpoint that does not fit, in a summary that says what it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")

from nattk import demo  # noqa: E402
from nattk.cli_errors import run_tool  # noqa: E402
from nattk.inference import load_model  # noqa: E402
from nattk.openmmlab.strict_load import PartialCheckpointError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py"  # 3 classes


@pytest.fixture(scope="module")
def trained():
    """A checkpoint of the config's own model, as the runner saves it."""
    model = load_model(SEG)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _save(tmp_path: Path, name: str, state: dict) -> Path:
    path = tmp_path / name
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": ("a", "b", "c")}}}, path)
    return path


def test_the_models_own_checkpoint_loads(trained, tmp_path):
    model = load_model(SEG, _save(tmp_path, "own.pth", trained))
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_backbone_weights_are_named_as_such(trained, tmp_path):
    backbone = {k[len("backbone.") :]: v for k, v in trained.items() if k.startswith("backbone.")}
    path = tmp_path / "dinat_toy_in1k.pth"
    torch.save({"model": backbone}, path)
    with pytest.raises(PartialCheckpointError) as refused:
        load_model(SEG, path)
    text = str(refused.value)
    lines = text.splitlines()
    assert len(lines) <= 10, text
    assert lines[0].startswith(f"{path} does not fit the model: ")
    weights = [k for k in trained if not k.endswith("num_batches_tracked")]  # as MMEngine
    assert f"{len(weights)} of the model's {len(trained)} tensors missing" in lines[0]
    assert f"its {len(backbone)} tensors are under 'model', which is not read" in text
    assert "looks like ImageNet backbone weights: use it as the backbone's init_cfg" in text
    assert lines[-1] == "  (--allow-partial loads it anyway)"


def test_another_number_of_classes_is_named(trained, tmp_path):
    five = dict(trained)
    for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
                "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias"):  # fmt: skip
        if key in five:
            five[key] = torch.zeros(5, *five[key].shape[1:])
    with pytest.raises(
        PartialCheckpointError, match=r"another number of classes: the file has 5, the config 3"
    ):
        load_model(SEG, _save(tmp_path, "five.pth", five))


def test_allow_partial_loads_and_says_so(trained, tmp_path, capsys):
    partial = {k: v for k, v in trained.items() if not k.startswith("decode_head.")}
    model = load_model(SEG, _save(tmp_path, "partial.pth", partial), allow_partial=True)
    err = capsys.readouterr().err
    assert "--allow-partial: loading anyway. " in err and "missing: decode_head." in err
    key = next(k for k in partial if k.startswith("backbone."))
    assert torch.equal(model.state_dict()[key], trained[key])


def test_demo_refuses_with_an_error_and_writes_nothing(trained, tmp_path, capsys):
    import cv2
    import numpy as np

    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    backbone = {k[len("backbone.") :]: v for k, v in trained.items() if k.startswith("backbone.")}
    path = tmp_path / "backbone.pth"
    torch.save(backbone, path)
    out = tmp_path / "overlay.png"
    assert run_tool(demo.main, [str(image), str(SEG), str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert any(
        line.startswith(f"error: {path} does not fit the model") for line in err.splitlines()
    )
    assert not out.exists()
    assert "looks like ImageNet backbone weights" in err


def test_what_mmengine_itself_accepts_is_not_refused(trained, tmp_path):
    """A ``module.`` prefix (a DDP save) and absent BatchNorm counters, as MMEngine."""
    state = {f"module.{k}": v for k, v in trained.items() if not k.endswith("num_batches_tracked")}
    model = load_model(SEG, _save(tmp_path, "ddp.pth", state))
    key = next(k for k in trained if k.startswith("decode_head.") and k.endswith("weight"))
    assert torch.equal(model.state_dict()[key], trained[key])
