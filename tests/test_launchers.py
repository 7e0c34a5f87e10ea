"""dist_*.sh / slurm_*.sh build the right torchrun / srun command lines."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def fake_launchers(tmp_path):
    """``torchrun`` and ``srun`` stand-ins that print their arguments."""
    for name in ("torchrun", "srun"):
        script = tmp_path / name
        script.write_text('#!/bin/sh\necho "$@"\n')
        script.chmod(0o755)
    return dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")


def launch(script: str, *args: str, env: dict) -> list[str]:
    out = subprocess.run(
        ["bash", str(TOOLS / script), *args], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_dist_train_honours_node_settings(fake_launchers):
    env = dict(fake_launchers, NNODES="2", NODE_RANK="1", MASTER_ADDR="10.0.0.7", PORT="29999")
    argv = launch("dist_train.sh", "cfg.py", "4", "--amp", env=env)
    for flag in ("--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.7", "--master_port=29999"):
        assert flag in argv
    assert "--nproc_per_node=4" in argv
    assert argv[-4:] == ["cfg.py", "--amp", "--launcher", "pytorch"]
    assert argv[-5].endswith("tools/train.py")


def test_dist_test_passes_checkpoint_and_args(fake_launchers):
    argv = launch("dist_test.sh", "cfg.py", "ckpt.pth", "2", "--out", "p.pkl", env=fake_launchers)
    assert "--nproc_per_node=2" in argv and "--master_port=29500" in argv
    assert argv[-6:] == ["cfg.py", "ckpt.pth", "--out", "p.pkl", "--launcher", "pytorch"]
    assert argv[-7].endswith("tools/test.py")


def test_slurm_scripts(fake_launchers):
    env = dict(fake_launchers, GPUS="16", CPUS_PER_TASK="3")
    argv = launch("slurm_train.sh", "part", "job", "cfg.py", "wd", "--amp", env=env)
    assert argv[:2] == ["-p", "part"] and "--ntasks=16" in argv and "--cpus-per-task=3" in argv
    # Requeued jobs continue: --resume (auto) by default, AUTO_RESUME=0 turns it off.
    assert argv[-5:] == ["cfg.py", "--work-dir=wd", "--resume", "--amp", "--launcher=slurm"]
    argv = launch("slurm_train.sh", "part", "job", "cfg.py", "wd", env=dict(env, AUTO_RESUME="0"))
    assert argv[-3:] == ["cfg.py", "--work-dir=wd", "--launcher=slurm"]
    argv = launch("slurm_test.sh", "part", "job", "cfg.py", "ckpt.pth", env=fake_launchers)
    assert argv[-3:] == ["cfg.py", "ckpt.pth", "--launcher=slurm"]


@pytest.mark.parametrize("script", ["dist_train.sh", "dist_test.sh", "slurm_train.sh"])
def test_missing_arguments_print_usage(script):
    out = subprocess.run(["bash", str(TOOLS / script)], capture_output=True, text=True)
    assert out.returncode == 2 and "usage:" in out.stderr
