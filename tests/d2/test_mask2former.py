"""Detectron2 half of the Mask2Former adapter: real detectron2 + an upstream Mask2Former checkout.

Runs in ``.venv-d2`` (``make env-d2``; ``make test`` runs it there, in a process of its
own). Elsewhere it skips where detectron2 is not installed (it is not on PyPI) or no
Mask2Former checkout is found (``$MASK2FORMER_ROOT``, ``../Mask2Former`` or the one the
environment was set up with); docs/detectron2_mask2former.md, section "Install".
"""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed (not on PyPI; build it from source)"
)
from nattk.mask2former.upstream import find_checkout  # noqa: E402

if "oneformer" in sys.modules:
    pytest.skip(
        "OneFormer was imported in this process; Mask2Former registers the same builtin "
        "datasets, so run this file in a pytest process of its own",
        allow_module_level=True,
    )
try:
    CHECKOUT = find_checkout()
except FileNotFoundError as error:
    pytest.skip(f"no Mask2Former checkout: {error}", allow_module_level=True)

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_panoptic  # noqa: E402
from tool_runs import logged_results, run_tool  # noqa: E402

from nattk.backbones import create_model  # noqa: E402
from nattk.mask2former.upstream import import_train_net  # noqa: E402
from nattk.quickstart.toy_data import make_toy_coco  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: Mask2Former's model zoo: 220M parameters for every DiNAT-L model.
PUBLISHED_PARAMS = 220e6
from nattk import convert_checkpoint  # noqa: E402
from nattk.mask2former import launch as train_m2f  # noqa: E402

YAMLS = sorted((REPO / "mask2former" / "configs").rglob("*.yaml"))
COCO_PANOPTIC = next(p for p in YAMLS if "coco/panoptic" in p.as_posix())
TRAIN_NET = import_train_net(CHECKOUT)
import nattk.mask2former.backbone  # noqa: E402, F401

TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.DINAT.EMBED_DIM", "32",
    "MODEL.DINAT.DEPTHS", "[1, 1, 2, 1]",
    "MODEL.DINAT.NUM_HEADS", "[1, 2, 4, 8]",
    "MODEL.DINAT.KERNEL_SIZE", "3",
    "MODEL.DINAT.DILATIONS", "[[2], [2], [1, 2], [1]]",
    "MODEL.DINAT.DROP_PATH_RATE", "0.1",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
]  # fmt: skip


def _args(config: Path, *opts: str, eval_only: bool = False, resume: bool = False):
    argv = ["--config-file", str(config), "--m2f-root", str(CHECKOUT)]
    argv += ["--eval-only"] * eval_only + ["--resume"] * resume
    return train_m2f.build_parser().parse_args(argv + list(opts))


def test_our_mask2former_yamls_are_the_eight_published_ones():
    assert len(YAMLS) == 8, YAMLS


# Each build is a full-size DiNAT-L Mask2Former: the fast tier builds the COCO panoptic one.
@pytest.mark.parametrize(
    "config",
    [p if p == COCO_PANOPTIC else pytest.param(p, marks=pytest.mark.slow) for p in YAMLS],
    ids=lambda p: p.parent.parent.relative_to(REPO / "mask2former/configs").as_posix(),
)
def test_every_yaml_loads_and_builds_the_published_model(config, tmp_path):
    cfg = train_m2f.setup(
        _args(config, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)), TRAIN_NET
    )
    assert cfg.MODEL.BACKBONE.NAME == "D2DiNAT" and cfg.MODEL.DINAT.KERNEL_SIZE == 11
    model = TRAIN_NET.Trainer.build_model(cfg)
    assert type(model.backbone).__name__ == "D2DiNAT"
    shapes = model.backbone.output_shape()
    assert [(s.channels, s.stride) for s in shapes.values()] == [
        (192, 4),
        (384, 8),
        (768, 16),
        (1536, 32),
    ]
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / PUBLISHED_PARAMS - 1) < 0.01, params  # 219.86M to 219.95M here
    assert model.backbone.levels[0].blocks[1].attn.dilation == (14, 14)


def test_shrunk_model_runs_a_forward_pass_through_mask2formers_own_model(tmp_path):
    cfg = train_m2f.setup(_args(COCO_PANOPTIC, *TINY, "OUTPUT_DIR", str(tmp_path)), TRAIN_NET)
    model = TRAIN_NET.Trainer.build_model(cfg).eval()
    assert type(model).__name__ == "MaskFormer" and type(model.backbone).__name__ == "D2DiNAT"
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8).float()
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 96, "width": 128}])
    segments, info = output["panoptic_seg"]
    assert segments.shape == (96, 128) and output["sem_seg"].shape[-2:] == (96, 128)
    assert torch.isfinite(output["sem_seg"]).all()
    assert all(0 <= s["category_id"] < cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES for s in info)


def test_converted_imagenet_pkl_loads_through_detectron2_checkpointer(tmp_path):
    cfg = train_m2f.setup(_args(COCO_PANOPTIC, *TINY, "OUTPUT_DIR", str(tmp_path)), TRAIN_NET)
    model = TRAIN_NET.Trainer.build_model(cfg)
    imagenet = create_model(
        "dinat_mini", num_classes=1000, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
        kernel_size=3, dilations=[[2], [2], [1, 2], [1]], layer_scale=None, mlp_ratio=2.0,
    )  # fmt: skip
    src = tmp_path / "in1k.pth"
    torch.save({"model": imagenet.state_dict()}, src)
    pkl = tmp_path / "in1k.pkl"
    convert_checkpoint.main([str(src), str(pkl), "--to", "d2"])
    DetectionCheckpointer(model).load(str(pkl))
    for key, value in imagenet.state_dict().items():
        if not key.startswith(("norm.", "head.")):
            assert torch.equal(model.backbone.state_dict()[key], value), key

    # A kernel-5 checkpoint: Detectron2 drops every rpb as a shape mismatch; we refuse.
    wrong = {k: v for k, v in pickle.loads(pkl.read_bytes())["model"].items()}
    wrong.update(
        {k: np.zeros((v.shape[0], 9, 9), v.dtype) for k, v in wrong.items() if k.endswith(".rpb")}
    )
    pkl.write_bytes(
        pickle.dumps({"model": wrong, "__author__": "test", "matching_heuristics": True})
    )
    with pytest.raises(RuntimeError, match="rpb.*--kernel-size"):
        DetectionCheckpointer(model).load(str(pkl))


@pytest.mark.parametrize(
    "opts, error, message",
    [
        (("MODEL.DINAT.KERNEL_SIZE", "4"), ValueError, r"^MODEL\.DINAT\.KERNEL_SIZE: .*odd"),
        (("MODEL.DINAT.DILATIONS", "cocoo"), ValueError, r"MODEL\.DINAT\.DILATIONS"),
        (("MODEL.DINAT.DEPTHS", "[1, 1, 2]"), ValueError, r"^MODEL\.DINAT\.NUM_HEADS, MODEL\.DINAT\.DEPTHS"),
        (("MODEL.DINAT.KERNEL", "7"), AssertionError, r"Non-existent key: MODEL\.DINAT\.KERNEL"),
    ],
)  # fmt: skip
def test_config_errors_through_the_launcher_name_their_key(tmp_path, opts, error, message):
    with pytest.raises(error, match=message):
        args = _args(COCO_PANOPTIC, *TINY, *opts, "OUTPUT_DIR", str(tmp_path))
        TRAIN_NET.Trainer.build_model(train_m2f.setup(args, TRAIN_NET))


def _small_node(name: str, dilations: str) -> list[str]:
    """Launcher options of a small backbone under ``MODEL.<name>``."""
    values = {"EMBED_DIM": "32", "DEPTHS": "[1, 1, 2, 1]", "NUM_HEADS": "[1, 2, 4, 8]"}
    values["DILATIONS"] = dilations
    return [x for key, value in values.items() for x in (f"MODEL.{name}.{key}", value)]


@pytest.mark.parametrize(
    "backbone, node", [("D2DiNAT_s", "DINAT_S"), ("D2DiNATs", "DINATS"), ("D2NAT", "NAT")]
)
def test_each_backbone_name_reads_its_own_node_through_the_launcher(tmp_path, backbone, node):
    """``D2DiNATs``/``MODEL.DINATS`` (the names before 0.2) still build DiNAT_s."""
    dilations = "[[1], [1], [1, 1], [1]]" if node == "NAT" else "[[1], [1], [1, 2], [1]]"
    opts = [*_small_node(node, dilations), "MODEL.BACKBONE.NAME", backbone]
    args = _args(COCO_PANOPTIC, *TINY, *opts, "OUTPUT_DIR", str(tmp_path))
    model = TRAIN_NET.Trainer.build_model(train_m2f.setup(args, TRAIN_NET))
    assert (
        type(model.backbone).__name__ == backbone and model.backbone.config_key == f"MODEL.{node}"
    )
    assert model.backbone.out_channels == [32, 64, 128, 256]


def test_a_dilated_nat_is_refused_by_the_nat_class_naming_the_key(tmp_path):
    opts = [*_small_node("NAT", "[[1], [1], [1, 2], [1]]"), "MODEL.BACKBONE.NAME", "D2NAT"]
    args = _args(COCO_PANOPTIC, *TINY, *opts, "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"^MODEL\.NAT\.DILATIONS: NAT has dilation 1.*dinat_\*"):
        TRAIN_NET.Trainer.build_model(train_m2f.setup(args, TRAIN_NET))


def _register_toy_panoptic(root: Path) -> list[str]:
    make_toy_coco(root, num_train=8, num_val=4, size=(128, 128), max_shapes=3)
    meta = dict(
        thing_classes=["square", "disk", "background"],
        stuff_classes=["square", "disk", "background"],
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        stuff_dataset_id_to_contiguous_id={3: 2},
    )
    names = []
    for split in ("train", "val"):
        name = f"nattk_toy_{split}_{root.name}"
        register_coco_panoptic(
            name, meta, str(root / f"{split}2017"), str(root / f"annotations/panoptic_{split}2017"),
            str(root / f"annotations/panoptic_{split}2017.json"),
            str(root / f"annotations/instances_{split}2017.json"),
        )  # fmt: skip
        names.append(name)
    return names


def _iteration(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["iteration"]


@pytest.mark.slow
def test_tools_train_m2f_trains_resumes_then_evaluates_a_shrunk_model(tmp_path, monkeypatch):
    train, val = _register_toy_panoptic(tmp_path / "toycoco")
    common = [
        "--config-file", str(COCO_PANOPTIC), *TINY,
        "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False",
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "False",
        "INPUT.IMAGE_SIZE", "128", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0",
        "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    out, evaluation = tmp_path / "out", tmp_path / "eval"
    try:
        run_tool("train_m2f.py", [*common, "OUTPUT_DIR", str(out)], monkeypatch)
        final = out / "model_final.pth"
        assert _iteration(final) == 2
        # --resume continues from the last checkpoint (optimizer and scheduler included).
        resumed = ["--resume", *common, "SOLVER.MAX_ITER", "5", "OUTPUT_DIR", str(out)]
        run_tool("train_m2f.py", resumed, monkeypatch)
        assert _iteration(final) == 4
        evaluate = ["--eval-only", *common, "MODEL.WEIGHTS", str(final)]
        run_tool("train_m2f.py", [*evaluate, "OUTPUT_DIR", str(evaluation)], monkeypatch)
    finally:
        for name in (train, val):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    pq = logged_results(evaluation)["panoptic_seg"]["PQ"]
    assert math.isfinite(pq) and 0 <= pq <= 100


def test_adapter_and_upstream_mask2former_import_together():
    import mask2former
    import nattk.mask2former

    assert Path(mask2former.__file__).resolve().is_relative_to(CHECKOUT)
    assert Path(nattk.mask2former.__file__).resolve().is_relative_to(REPO)
    assert hasattr(mask2former, "add_maskformer2_config")
