"""Bad values are refused where they are given, with the valid ones named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nattk.backbones import create_model


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("nat_mini", dict(dilations="cocoo"), r"unknown dilation preset 'cocoo' for nat_mini; choose from \['ade20k512'"),
        ("nat_mini", dict(dilations=[[1, 2, 1], [1] * 4, [1] * 6, [1] * 5]), r"NAT has dilation 1 everywhere.*dinat_\*"),
        ("dinat_mini", dict(dilations="cocoo"), r"unknown dilation preset 'cocoo' for dinat; choose from"),
        ("dinat_mini", dict(out_indices=(9,)), r"out_indices \(9,\) must be a non-empty subset of 0..3"),
        ("dinat_mini", dict(num_classes=0, out_indices=()), r"out_indices \(\) must be a non-empty"),
    ],
)  # fmt: skip
def test_create_model_refuses_at_once(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, **kwargs)


@pytest.mark.parametrize(
    "dilations", [None, "imagenet224", "imagenet384", "coco", [[1] * 3, [1] * 4, [1] * 6, [1] * 5]]
)
def test_nat_takes_every_preset_name_and_all_ones(dilations):
    model = create_model("nat_mini", num_classes=0, dilations=dilations)
    assert {b.attn.dilation for level in model.levels for b in level.blocks} == {(1, 1)}


def test_the_core_nat_class_refuses_dilations_naming_dinat():
    from nattk.backbones import NAT

    with pytest.raises(ValueError, match=r"NAT has dilation 1 everywhere.*a dinat_\* variant"):
        NAT(
            embed_dim=32,
            depths=[1, 1, 2, 1],
            num_heads=[1, 2, 4, 8],
            dilations=[[1], [2], [1, 1], [1]],
        )
    model = NAT(
        embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], dilations=[[1], [1], [1, 1], [1]]
    )
    assert {b.attn.dilation for level in model.levels for b in level.blocks} == {(1, 1)}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_an_integer_image_is_refused_with_what_to_do(dtype):
    model = create_model("dinat_mini", num_classes=0, depths=[1, 1, 2, 1], embed_dim=32)
    with pytest.raises(ValueError, match=rf"floating-point image batch, got {dtype}: convert it"):
        model(torch.zeros(1, 3, 64, 64, dtype=dtype))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dilations="cocoo"), r"unknown dilation preset 'cocoo' for dinat"),
        (dict(kernel_size=6), r"kernel_size must be odd and positive, got 6"),
        (
            dict(variant="nat_mini", dilations="cocoo"),
            r"unknown dilation preset 'cocoo' for nat_mini",
        ),
        (dict(dilations=[[1], [1], [1], [1]]), r"expected lengths \[3, 4, 18, 5\]"),
    ],
)
def test_hugging_face_config_refuses_in_its_constructor(kwargs, message):
    pytest.importorskip("transformers")
    from nattk.hf.backbone import NattkBackboneConfig

    with pytest.raises(ValueError, match=message):
        NattkBackboneConfig(**kwargs)


def _parse(*argv: str):
    import argparse

    from nattk.openmmlab.cli import add_common_args

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    add_common_args(parser)
    return parser.parse_args(argv)


QUICKSTART_SEG = str(
    Path(__file__).resolve().parents[1] / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py"
)


def test_cfg_options_refuse_a_top_level_key_the_config_lacks():
    pytest.importorskip("mmengine")
    from nattk.openmmlab.cli import load_config

    with pytest.raises(
        ValueError,
        match=r"totally_bogus_key: the config has no such top-level key .*--allow-new-keys",
    ):
        load_config(
            _parse(QUICKSTART_SEG, "--cfg-options", "totally_bogus_key=1", "train_cfg.max_iters=3")
        )
    cfg = load_config(_parse(QUICKSTART_SEG, "--cfg-options", "train_cfg.max_iters=3"))
    assert cfg.train_cfg.max_iters == 3
    cfg = load_config(_parse(QUICKSTART_SEG, "--allow-new-keys", "--cfg-options", "extra=1"))
    assert cfg.extra == 1


def test_cfg_options_item_without_equals_is_an_argparse_error(capsys):
    pytest.importorskip("mmengine")
    with pytest.raises(SystemExit) as end:
        _parse(QUICKSTART_SEG, "--cfg-options", "train_cfg.max_iters")
    assert end.value.code == 2
    assert (
        "--cfg-options takes KEY=VALUE items; got 'train_cfg.max_iters'" in capsys.readouterr().err
    )


def test_demo_refuses_a_truncated_image_before_building_the_model(tmp_path, monkeypatch):
    pytest.importorskip("mmcv")
    import cv2
    import numpy as np

    from nattk import demo

    image = tmp_path / "cut.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    image.write_bytes(image.read_bytes()[:300])
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"PK\x03\x04")

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the image was checked")

    monkeypatch.setattr(demo, "load_model", never)
    with pytest.raises(ValueError, match=r"not an image that can be decoded: .*cut\.jpg"):
        demo.main([str(image), QUICKSTART_SEG, str(checkpoint)])


@pytest.mark.slow  # a subprocess or an export: seconds
def test_resume_with_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    pytest.importorskip("mmengine")
    import subprocess
    import sys

    notes = tmp_path / "notes.txt"
    notes.write_text("epoch 3 looked good\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "tools/train.py", QUICKSTART_SEG, "--resume", str(notes),
         "--work-dir", str(tmp_path / "w")],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: not a checkpoint: {notes} is text (starts with b'epoch 3 looked good\\n')"
    ]
    assert "Traceback" not in done.stderr


def test_export_refuses_an_empty_shape_before_building(capsys):
    pytest.importorskip("mmseg")
    from nattk import export_onnx

    with pytest.raises(SystemExit) as end:
        export_onnx.main([QUICKSTART_SEG, "--shape", "0", "0", "--out", "x.onnx"])
    assert (
        end.value.code == 2 and "image sizes must be positive, got 0 0" in capsys.readouterr().err
    )


def test_to_hf_without_rpb_says_what_the_file_is(tmp_path):
    import torch as _torch

    from nattk import convert_checkpoint

    src = tmp_path / "resnet.pth"
    _torch.save({"conv1.weight": _torch.zeros(1), "fc.weight": _torch.zeros(1)}, src)
    with pytest.raises(
        ValueError, match=r"no rpb tables \(2 tensors: conv1.weight, fc.weight, ...\)"
    ):
        convert_checkpoint.main(
            [str(src), str(tmp_path / "out"), "--to", "hf", "--variant", "dinat_tiny"]
        )
