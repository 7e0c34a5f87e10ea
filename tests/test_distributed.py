"""Multi-process (gloo) training and evaluation, and resume after SIGKILL, on CPU.

One tiny UperNet config serves every run: GroupNorm heads, no dropout, no random
augmentation and SGD, so that a 2-process run with 2 images per process follows the
same trajectory as a 1-process run with 4, and a resumed run the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nattk.openmmlab.runner import is_complete_checkpoint
from nattk.quickstart.toy_data import make_toy_ade20k

pytestmark = pytest.mark.slow  # every test trains in subprocesses

REPO = Path(__file__).resolve().parents[1]
ITERS = 6
CONFIG = """
_base_ = '{repo}/configs/quickstart/upernet_dinat-toy_toy-ade20k.py'
data_root = '{data}/'
gn = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(frozen_stages=1),
    decode_head=dict(norm_cfg=gn, dropout_ratio=0.0),
    auxiliary_head=dict(norm_cfg=gn, dropout_ratio=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(max_iters={iters}, val_interval={iters})
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end={iters})]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=2, max_keep_ckpts=10))
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    data = make_toy_ade20k(root / "data", num_train=8, num_val=4, size=(64, 64), cluttered=True)
    path = root / "tiny_upernet.py"
    path.write_text(CONFIG.format(repo=REPO, data=data, iters=ITERS))
    return path


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PORT=_free_port())
    env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}"
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # torchrun of this Python
    env.update(extra)
    return env


def _run(*command: str, env=None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(command), cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _train(config: Path, work_dir: Path, *args: str, env=None, check=True):
    tool = str(REPO / "tools" / "train.py")
    return _run(sys.executable, tool, str(config), "--work-dir", str(work_dir), *args, env=env,
                check=check)  # fmt: skip


def _losses(work_dir: Path) -> dict[int, float]:
    losses = {}
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if "loss" in record:
                losses[record["iter"]] = record["loss"]
    return losses


def _weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def _test_metric(output: str) -> float:
    line = next(line for line in output.splitlines() if "mIoU:" in line and "Iter(test)" in line)
    return float(line.split("mIoU:")[1].split()[0])


@pytest.fixture(scope="module")
def single(config, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("single")
    _train(config, work)
    return work


def test_two_gloo_processes_match_one_process_and_frozen_stages_need_no_unused_search(
    config, single, tmp_path
):
    # 2 processes x 2 images == 1 process x 4 images; frozen_stages=1 under DDP with
    # find_unused_parameters=False (the default) must train without a reducer error.
    work = tmp_path / "ddp"
    tool = str(REPO / "tools" / "dist_train.sh")
    _run("bash", tool, str(config), "2", "--work-dir", str(work),
         "--cfg-options", "train_dataloader.batch_size=2")  # fmt: skip
    # Rank 0 logs the loss of its half of each batch: close to, not equal to, the whole.
    half, whole = _losses(work), _losses(single)
    assert sorted(half) == sorted(whole) == list(range(1, ITERS + 1))
    assert all(half[i] == pytest.approx(whole[i], rel=0.03) for i in whole), (half, whole)
    final = f"iter_{ITERS}.pth"
    ddp, one = _weights(work / final), _weights(single / final)
    assert ddp.keys() == one.keys()
    worst = max((ddp[k].float() - one[k].float()).abs().max().item() for k in one)
    assert worst < 1e-4, worst
    before = _weights(single / "iter_2.pth")
    frozen = [k for k in one if k.startswith(("backbone.patch_embed.", "backbone.levels.0."))]
    assert frozen and all(torch.equal(one[k], before[k]) for k in frozen)
    assert not torch.equal(one["backbone.levels.1.blocks.0.attn.rpb"], before["backbone.levels.1.blocks.0.attn.rpb"])  # fmt: skip

    # Evaluation split over 2 processes gives the metric of 1 process.
    ckpt = str(single / final)
    alone = _run(sys.executable, str(REPO / "tools/test.py"), str(config), ckpt,
                 "--work-dir", str(tmp_path / "t1"))  # fmt: skip
    split = _run("bash", str(REPO / "tools/dist_test.sh"), str(config), ckpt, "2",
                 "--work-dir", str(tmp_path / "t2"))  # fmt: skip
    assert _test_metric(split.stdout + split.stderr) == _test_metric(alone.stdout + alone.stderr)


def test_sigkill_then_resume_continues_the_uninterrupted_trajectory(config, single, tmp_path):
    work = tmp_path / "killed"
    # 1. SIGKILL from outside, once iter_2.pth exists.
    tool = str(REPO / "tools" / "train.py")
    process = subprocess.Popen(
        [sys.executable, tool, str(config), "--work-dir", str(work)], cwd=REPO, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (work / "iter_2.pth").exists() and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # 2. Resume; the process is killed half-way through writing iter_4.pth (by
    # tests/crash_launcher.py, which runs tools/train.py).
    launcher = str(REPO / "tests" / "crash_launcher.py")
    crashed = _run(sys.executable, launcher, "iter_4.pth", str(config), "--work-dir", str(work),
                   "--resume", check=False)  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL
    assert not (work / "iter_4.pth").exists() and (work / "iter_4.pth.part").exists()
    # 3. Resume again: from iter_2 (the newest complete checkpoint) to the end.
    _train(config, work, "--resume")
    assert not list(work.glob("*.part"))
    checkpoints = sorted(work.glob("iter_*.pth"))
    assert [c.name for c in checkpoints] == ["iter_2.pth", "iter_4.pth", "iter_6.pth"]
    assert all(is_complete_checkpoint(c) for c in checkpoints)
    final = torch.load(work / "iter_6.pth", map_location="cpu", weights_only=False)
    assert final["meta"]["iter"] == ITERS
    # Same batches and state as the run that was never interrupted.
    resumed, reference = _losses(work), _losses(single)
    assert sorted(resumed) == list(range(1, ITERS + 1))
    for step in range(3, ITERS + 1):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4), step
    worst = max(
        (final["state_dict"][k] - v).abs().max().item()
        for k, v in _weights(single / "iter_6.pth").items()
    )
    assert worst < 1e-5
