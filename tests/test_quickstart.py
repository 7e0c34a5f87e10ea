"""The quickstart pipeline (toy data -> train -> evaluate -> pictures) and its pieces."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from mm_helpers import REPO, run_tool  # noqa: E402

from nattk.backbones.attention import NeighborhoodAttention2D  # noqa: E402
from nattk.quickstart import make_toy_dataset
from nattk.visualize import neighborhood_weights  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_side: int = 32) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = cv2.imread(str(path))
    assert image is not None and min(image.shape[:2]) >= min_side, path
    assert image.std() > 0, f"{path} is blank"
    return image


def test_toy_coco_is_deterministic_and_annotates_visible_parts(tmp_path):
    argv = ["coco", "--num-train", "3", "--num-val", "2", "--size", "96", "96"]
    make_toy_dataset.main([argv[0], str(tmp_path / "a"), *argv[1:]])
    make_toy_dataset.main([argv[0], str(tmp_path / "b"), *argv[1:]])
    for name in ("instances_train2017.json", "panoptic_val2017.json"):
        a = (tmp_path / "a" / "annotations" / name).read_bytes()
        assert a == (tmp_path / "b" / "annotations" / name).read_bytes()
    instances = json.loads((tmp_path / "a/annotations/instances_train2017.json").read_text())
    assert {c["name"] for c in instances["categories"]} == {"square", "disk"}
    for ann in instances["annotations"]:
        x, y, w, h = ann["bbox"]
        assert (
            0 < ann["area"] <= w * h
            and ann["segmentation"]
            and all(len(p) >= 6 for p in ann["segmentation"])
        )
    # Occlusion: a shape's visible area may be less than its full disk or square, and
    # the panoptic pngs give every pixel exactly one segment.
    pan = cv2.imread(str(next((tmp_path / "a/annotations/panoptic_train2017").glob("*.png"))))
    assert pan.shape[:2] == (96, 96)


def test_toy_dataset_cli_rejects_bad_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_toy_dataset.main(["ade20k", str(tmp_path), "--size", "8", "8"])
    assert "--size >= 32" in capsys.readouterr().err


@pytest.mark.parametrize("dilation", [1, 3])
def test_neighborhood_weights_cover_the_dilated_window(dilation):
    attn = NeighborhoodAttention2D(dim=8, num_heads=2, kernel_size=3, dilation=dilation).eval()
    tokens = torch.randn(1, 12, 12, 8)
    weights = neighborhood_weights(attn, tokens, (6, 6))
    rows, cols = np.nonzero(weights)
    assert len(rows) == 9 and abs(weights.sum() - 1) < 1e-5
    assert sorted(set(rows)) == [6 - dilation, 6, 6 + dilation]
    # A corner query's window is shifted inside the map, never clipped.
    corner = neighborhood_weights(attn, tokens, (0, 0))
    assert np.count_nonzero(corner) == 9


@pytest.mark.slow
def test_short_segmentation_quickstart_learns_and_writes_outputs(tmp_path):
    work, data = tmp_path / "work", tmp_path / "data"
    output = run_tool(
        "quickstart.py", "--task", "seg", "--iters", "80", "--num-train", "48", "--num-val",
        "8", "--work-dir", str(work), "--data-root", str(data),
    )  # fmt: skip
    metrics = json.loads((work / "seg" / "metrics.json").read_text())
    assert metrics["trained"]["score"] > metrics["untrained"]["score"], metrics
    assert "mIoU" in output and "untrained" in output
    _assert_png(work / "seg" / "curves.png", 200)
    _assert_png(work / "seg" / "neighborhoods.png", 200)
    overlays = sorted((work / "seg" / "predictions").glob("*.png"))
    assert len(overlays) == 6
    _assert_png(overlays[0])

    # The demo draws the same checkpoint on any image.
    image = next((data / "toy_ade20k" / "images" / "validation").glob("*.jpg"))
    out = tmp_path / "demo.png"
    run_tool(
        "demo.py", str(image), str(REPO / "configs/quickstart/upernet_dinat-toy_toy-ade20k.py"),
        metrics["checkpoint"], "--out", str(out),
    )  # fmt: skip
    height, width = _assert_png(out).shape[:2]  # image | prediction, enlarged for legibility
    assert height % cv2.imread(str(image)).shape[0] == 0 and width == 2 * height

    # The console is for a person: one line per phase, then the results table and the
    # paths of the pictures; everything the frameworks print goes to the log file.
    assert "paramwise_options" not in output and "Warning" not in output
    lines = output.rstrip().splitlines()
    assert len(lines) < 40, output
    for phase in ("data ", "setup ", "untrained ", "train ", "eval 20 ", "eval 80 ", "pictures "):
        assert any(line.strip().startswith(phase) for line in lines), (phase, output)
    assert any(line.strip().startswith("train ") and "ETA" in line for line in lines), output
    header = next(i for i, line in enumerate(lines) if line.startswith("quickstart results"))
    assert "untrained" in lines[header + 1] and lines[header + 2].split()[0] == "seg"
    assert lines[-1].strip() == f"{work / 'seg' / 'predictions'}/ (6 overlays)"
    assert [e["iter"] for e in metrics["evaluations"]] == [0, 20, 40, 60, 80]
    log = (work / "seg" / "quickstart.log").read_text()
    assert "Iter(train)" in log and "per class results" in log
    assert len(log.splitlines()) > 10 * len(lines)
