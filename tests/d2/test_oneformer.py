"""OneFormer's DiNAT models through OneFormer's own code: real detectron2 + a OneFormer checkout.

Runs in ``.venv-d2`` (``make env-d2``; ``make test`` runs it there, in a process of its
own). Elsewhere it skips where detectron2 is not installed (it is not on PyPI), no
OneFormer checkout is found (``$ONEFORMER_ROOT``, ``../OneFormer`` or the one the
environment was set up with) or OneFormer's own imports are missing; docs/oneformer.md,
section "Install". Nothing of OneFormer is modified or copied: its
``setup``, ``Trainer``, dataset registration and DiNAT class are imported from the checkout.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed (not on PyPI; build it from source)"
)
from nattk.mask2former.upstream import ONEFORMER, find_checkout, import_train_net  # noqa: E402

if "mask2former" in sys.modules:
    pytest.skip(
        "Mask2Former was imported in this process; OneFormer registers the same builtin "
        "datasets (ade20k_panoptic_train, ...), so run this file in a pytest process of its own",
        allow_module_level=True,
    )
try:
    CHECKOUT = find_checkout(None, ONEFORMER)
except FileNotFoundError as error:
    pytest.skip(f"no OneFormer checkout: {error}", allow_module_level=True)

from nattk.mask2former import oneformer as launcher  # noqa: E402

D2DINAT = launcher.use_toolkit_backbone()
try:
    TRAIN_NET = import_train_net(CHECKOUT, ONEFORMER)
except ImportError as error:
    pytest.skip(f"OneFormer's dependencies are missing: {error}", allow_module_level=True)

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from oneformer.data.datasets.register_ade20k_panoptic import (  # noqa: E402
    register_ade20k_panoptic,
)
from PIL import Image  # noqa: E402
from tool_runs import logged_results, run_tool  # noqa: E402

from nattk import convert_checkpoint  # noqa: E402
from nattk.backbones import create_model  # noqa: E402
from nattk.mask2former.launch import build_parser  # noqa: E402
from nattk.quickstart.toy_data import make_toy_coco  # noqa: E402

YAMLS = sorted((CHECKOUT / "configs").rglob("dinat/*.yaml"))
ADE20K_640 = CHECKOUT / "configs/ade20k/dinat/oneformer_dinat_large_bs16_160k.yaml"
#: OneFormer's model zoo: 223M parameters for every DiNAT-L model.
PUBLISHED_PARAMS = 223e6

TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.DiNAT.EMBED_DIM", "32",
    "MODEL.DiNAT.DEPTHS", "[1, 1, 2, 1]",
    "MODEL.DiNAT.NUM_HEADS", "[1, 2, 4, 8]",
    "MODEL.DiNAT.KERNEL_SIZE", "3",
    "MODEL.DiNAT.DILATIONS", "[[2], [2], [1, 2], [1]]",
    "MODEL.DiNAT.DROP_PATH_RATE", "0.1",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.ONE_FORMER.HIDDEN_DIM", "64",  # = TEXT_ENCODER.WIDTH
    "MODEL.ONE_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.ONE_FORMER.DEC_LAYERS", "4",  # one per pixel-decoder level, + 1 (every weight used)
    "MODEL.ONE_FORMER.NUM_OBJECT_QUERIES", "12",  # 8 text queries + N_CTX
    "MODEL.ONE_FORMER.TRAIN_NUM_POINTS", "256",
    "MODEL.TEXT_ENCODER.WIDTH", "64",  # heads: WIDTH // 64
    "MODEL.TEXT_ENCODER.NUM_LAYERS", "1",
    "MODEL.TEXT_ENCODER.N_CTX", "4",
]  # fmt: skip


def _args(config: Path, *opts: str, eval_only: bool = False, resume: bool = False):
    argv = ["--config-file", str(config), "--oneformer-root", str(CHECKOUT)]
    argv += ["--eval-only"] * eval_only + ["--resume"] * resume
    return build_parser(ONEFORMER).parse_args(argv + list(opts))


def _setup(config: Path, tmp_path: Path, *opts: str):
    # --eval-only: OneFormer's setup then skips wandb.init (building needs no run).
    args = _args(config, "OUTPUT_DIR", str(tmp_path), *opts, eval_only=True)
    return launcher.setup(args, TRAIN_NET)


def test_oneformer_dinat_yamls_are_the_seven_published_ones():
    assert len(YAMLS) == 7, YAMLS


@pytest.mark.parametrize(
    "config",
    [p if p == ADE20K_640 else pytest.param(p, marks=pytest.mark.slow) for p in YAMLS],
    ids=lambda p: p.relative_to(CHECKOUT / "configs").as_posix(),
)
def test_every_yaml_builds_through_oneformers_setup(config, tmp_path):
    # The published 223M count the inference model: OneFormer evaluates with
    # MODEL.IS_TRAIN False, which leaves out the text encoder used only in training.
    cfg = _setup(config, tmp_path, "MODEL.IS_TRAIN", "False")
    assert cfg.MODEL.BACKBONE.NAME == "D2DiNAT" and "DINAT" not in cfg.MODEL
    model = TRAIN_NET.Trainer.build_model(cfg)
    assert type(model.backbone) is D2DINAT and model.backbone.config_key == "MODEL.DiNAT"
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / PUBLISHED_PARAMS - 1) < 0.01, params
    kernel, dilations = cfg.MODEL.DiNAT.KERNEL_SIZE, cfg.MODEL.DiNAT.DILATIONS
    assert len(model.backbone.levels) == len(dilations) == 4
    for level, values in zip(model.backbone.levels, dilations):
        assert [b.attn.dilation[0] for b in level.blocks] == list(values)
        assert all(b.attn.kernel_size == (kernel, kernel) for b in level.blocks)
    print(f"{config.relative_to(CHECKOUT)}: {params / 1e6:.2f}M parameters")


def test_shrunk_model_runs_a_forward_pass_through_oneformers_own_model(tmp_path):
    cfg = _setup(ADE20K_640, tmp_path, *TINY, "MODEL.IS_TRAIN", "False")
    model = TRAIN_NET.Trainer.build_model(cfg).eval()
    assert type(model).__name__ == "OneFormer" and type(model.backbone) is D2DINAT
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8).float()
    inputs = [{"image": image, "height": 96, "width": 128, "task": "The task is panoptic"}]
    with torch.no_grad():
        (output,) = model(inputs)
    segments, info = output["panoptic_seg"]
    assert segments.shape == (96, 128) and output["sem_seg"].shape[-2:] == (96, 128)
    assert torch.isfinite(output["sem_seg"]).all()
    assert all(0 <= s["category_id"] < cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES for s in info)


def test_converted_imagenet_pkl_loads_with_every_rpb(tmp_path):
    cfg = _setup(ADE20K_640, tmp_path, *TINY, "MODEL.IS_TRAIN", "False")
    model = TRAIN_NET.Trainer.build_model(cfg)
    imagenet = create_model(
        "dinat_mini", num_classes=1000, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
        kernel_size=3, dilations=[[2], [2], [1, 2], [1]], layer_scale=None, mlp_ratio=2.0,
    )  # fmt: skip
    src, pkl = tmp_path / "in1k.pth", tmp_path / "in1k.pkl"
    torch.save({"model": imagenet.state_dict()}, src)
    convert_checkpoint.main([str(src), str(pkl), "--to", "d2"])
    DetectionCheckpointer(model).load(str(pkl))
    backbone = model.backbone.state_dict()
    rpbs = [key for key in imagenet.state_dict() if key.endswith(".rpb")]
    assert len(rpbs) == 5
    for key, value in imagenet.state_dict().items():
        if not key.startswith(("norm.", "head.")):
            assert torch.equal(backbone[key], value), key


# OneFormer's own DiNAT class, built in a fresh process (its module registers a D2DiNAT of
# its own). NATTEN 0.14 cannot be installed on this torch; its NeighborhoodAttention2D held
# exactly `rpb` (heads, 2k-1, 2k-1), `qkv` and `proj` (no buffers), which the module below
# declares, so the state dict is the one OneFormer's checkpoints have.
_REFERENCE = """
import importlib.util, sys, types
import torch
from torch import nn

class NeighborhoodAttention2D(nn.Module):
    def __init__(self, dim, kernel_size, num_heads, dilation=None, qkv_bias=True,
                 qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.rpb = nn.Parameter(torch.randn(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

sys.modules["natten"] = types.SimpleNamespace(NeighborhoodAttention2D=NeighborhoodAttention2D)
spec = importlib.util.spec_from_file_location("oneformer_dinat", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
torch.manual_seed(0)
model = module.DiNAT(embed_dim=32, mlp_ratio=2.0, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                     kernel_size=3, dilations=[[2], [2], [1, 2], [1]])
torch.save({"model": {"backbone." + k: v for k, v in model.state_dict().items()}}, sys.argv[2])
"""


@pytest.mark.slow
def test_checkpoint_of_oneformers_own_dinat_loads_with_nothing_missing(tmp_path):
    saved = tmp_path / "oneformer_layout.pth"
    dinat_py = CHECKOUT / "oneformer/modeling/backbone/dinat.py"
    subprocess.run([sys.executable, "-c", _REFERENCE, str(dinat_py), str(saved)], check=True)
    reference = torch.load(saved, weights_only=True)["model"]

    cfg = _setup(ADE20K_640, tmp_path, *TINY, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3")
    model = TRAIN_NET.Trainer.build_model(cfg)
    ours = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    assert set(ours) == set(reference)
    assert all(ours[k].shape == v.shape for k, v in reference.items())
    DetectionCheckpointer(model).load(str(saved))
    for key, value in reference.items():
        assert torch.equal(model.state_dict()[key], value), key

    # An rpb of another kernel size: Detectron2 would skip it with a warning; refused.
    reference["backbone.levels.0.blocks.0.attn.rpb"] = torch.zeros(1, 9, 9)
    torch.save({"model": reference}, saved)
    with pytest.raises(RuntimeError, match="rpb"):
        DetectionCheckpointer(model).load(str(saved))


def test_toolkit_keys_are_set_from_the_command_line_after_oneformers_setup(tmp_path):
    cfg = _setup(ADE20K_640, tmp_path, *TINY, "MODEL.DiNAT.FROZEN_STAGES", "1",
                 "MODEL.DiNAT.WITH_CP", "True")  # fmt: skip
    assert cfg.MODEL.DiNAT.FROZEN_STAGES == 1 and cfg.MODEL.DiNAT.WITH_CP is True
    assert cfg.is_frozen() and cfg.MODEL.DEVICE == "cpu"
    backbone = TRAIN_NET.Trainer.build_model(cfg).backbone
    assert backbone.with_cp and not backbone.patch_embed.proj[0].weight.requires_grad


@pytest.mark.parametrize(
    "opts, error, message",
    [
        (("MODEL.DiNAT.KERNEL_SIZE", "4"), ValueError, r"^MODEL\.DiNAT\.KERNEL_SIZE: .*odd"),
        (("MODEL.DiNAT.DILATIONS", "cocoo"), ValueError, r"MODEL\.DiNAT\.DILATIONS"),
        (("MODEL.DiNAT.KERNEL", "7"), AssertionError, r"Non-existent key: MODEL\.DiNAT\.KERNEL"),
    ],
)  # fmt: skip
def test_config_errors_through_oneformers_setup_name_their_key(tmp_path, opts, error, message):
    with pytest.raises(error, match=message):
        TRAIN_NET.Trainer.build_model(_setup(ADE20K_640, tmp_path, *TINY, *opts))


def _toy_ade20k_panoptic(root: Path) -> dict[str, str]:
    """A toy set in the ADE20K panoptic layout, registered with OneFormer's own function."""
    make_toy_coco(root, num_train=8, num_val=4, size=(128, 128), max_shapes=3)
    meta = dict(
        thing_classes=["square", "disk"],
        stuff_classes=["square", "disk", "background"],
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        # As OneFormer's ADE20K metadata: every category is a "stuff" one as well.
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
    )
    names = {}
    for split in ("train", "val"):
        panoptic_json = root / f"annotations/panoptic_{split}2017.json"
        panoptic_root = root / f"annotations/panoptic_{split}2017"
        semantic_root = root / f"annotations/semantic_{split}2017"
        semantic_root.mkdir()
        for ann in json.loads(panoptic_json.read_text())["annotations"]:
            rgb = np.asarray(Image.open(panoptic_root / ann["file_name"]), dtype=np.int64)
            ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
            labels = np.full(ids.shape, 255, np.uint8)
            for segment in ann["segments_info"]:
                labels[ids == segment["id"]] = meta["stuff_dataset_id_to_contiguous_id"][
                    segment["category_id"]
                ]
            Image.fromarray(labels).save(semantic_root / ann["file_name"])
        name = names[split] = f"nattk_toy_ade20k_panoptic_{split}_{root.name}"
        register_ade20k_panoptic(
            name, meta, str(root / f"{split}2017"), str(panoptic_root), str(semantic_root),
            str(panoptic_json), str(root / f"annotations/instances_{split}2017.json"),
        )  # fmt: skip
    return names


@pytest.mark.slow
def test_tools_train_oneformer_trains_then_evaluates_a_shrunk_ade20k_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # OneFormer's wandb.init (offline)
    names = _toy_ade20k_panoptic(tmp_path / "toyade")
    common = [
        "--config-file", str(ADE20K_640), *TINY,
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DATASETS.TEST_PANOPTIC", f"('{names['val']}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
        # OneFormer's ADE20K instance evaluator passes `use_fast_impl` to detectron2's
        # `_evaluate_predictions_on_coco`, which detectron2 HEAD no longer accepts.
        "MODEL.TEST.INSTANCE_ON", "False",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.CROP.SIZE", "(128, 128)", "INPUT.SIZE_DIVISIBILITY", "128",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
        "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0", "TEST.DETECTIONS_PER_IMAGE", "8",
        "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    out, evaluation = tmp_path / "out", tmp_path / "eval"
    try:
        run_tool("train_oneformer.py", [*common, "OUTPUT_DIR", str(out)], monkeypatch)
        final = out / "model_final.pth"
        assert torch.load(final, map_location="cpu", weights_only=False)["iteration"] == 2
        evaluate = ["--eval-only", *common, "MODEL.WEIGHTS", str(final)]
        run_tool("train_oneformer.py", [*evaluate, "OUTPUT_DIR", str(evaluation)], monkeypatch)
    finally:
        for name in names.values():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    results = logged_results(evaluation)
    for task, metric in (("panoptic_seg", "PQ"), ("sem_seg", "mIoU")):
        value = results[task][metric]
        assert math.isfinite(value) and 0 <= value <= 100, (task, metric, value)
