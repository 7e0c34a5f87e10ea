"""Crash-safe checkpoints and CPU-capable distributed set-up for MMEngine runs.

:class:`CrashSafeRunner` is MMEngine's ``Runner`` with two changes:

* **Atomic checkpoints.** A checkpoint is written to ``<name>.part``, flushed to disk and
  renamed into place, so a crash (SIGKILL, node loss, full disk) while saving never
  leaves a truncated ``iter_N.pth`` behind.
* **Resume that checks.** ``--resume`` without a path takes the newest checkpoint of
  the work directory that is complete (a readable zip archive), whatever
  ``last_checkpoint`` says, drops leftover ``.part`` files and repairs the pointer.

What resume restores: weights, optimizer and parameter-scheduler state, the iteration or
epoch counter and the message hub (loss history). The data sampler is re-seeded with
the run's seed and, for iteration-based loops, advanced past the batches already seen,
so the remaining batches are those of the uninterrupted run; the global torch / numpy /
python random states are re-seeded rather than restored, so random augmentation and
dropout after a resume differ from an uninterrupted run.

:func:`setup_distributed` lets ``--launcher pytorch|slurm`` run on machines without
CUDA (gloo): MMEngine's launcher calls CUDA-only functions there.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.runner import Runner

logger = logging.getLogger(__name__)

_PART = ".part"


def is_complete_checkpoint(path: os.PathLike) -> bool:
    """``True`` if ``path`` is a whole ``torch.save`` archive (its zip directory is intact)."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def latest_complete_checkpoint(work_dir: os.PathLike) -> Optional[Path]:
    """The newest complete ``*.pth`` of ``work_dir`` (by iteration/epoch number, then time)."""
    work_dir = Path(work_dir)
    candidates = set(work_dir.glob("*.pth"))
    pointer = work_dir / "last_checkpoint"
    if pointer.is_file():  # CheckpointHook(out_dir=...) may save elsewhere
        named = Path(pointer.read_text().strip())
        if named.is_file():
            candidates.add(named)
    for candidate in sorted(candidates, key=_checkpoint_order, reverse=True):
        if is_complete_checkpoint(candidate):
            return candidate
        logger.warning("skipping the incomplete checkpoint %s", candidate)
    return None


def _checkpoint_order(path: Path):
    stem = path.stem
    number = stem.rsplit("_", 1)[-1]
    return (int(number) if number.isdigit() else -1, path.stat().st_mtime)


class CrashSafeRunner(Runner):
    """MMEngine ``Runner`` with atomic checkpoint writes and verified auto-resume."""

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """Saves like ``Runner.save_checkpoint``, through ``<filename>.part`` and a rename."""
        local = "://" not in str(out_dir) and not kwargs.get("backend_args")
        if not local or not is_main_process():  # only the main process writes
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        super().save_checkpoint(out_dir, filename + _PART, *args, **kwargs)
        part = Path(out_dir) / (filename + _PART)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, Path(out_dir) / filename)
        directory = os.open(out_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load_or_resume(self) -> None:
        """Auto-resume from the newest complete checkpoint; see the module docstring."""
        if self._resume and self._load_from is None and not self._has_loaded:
            # Every rank picks the same file (``*.part`` never matches ``*.pth``); only
            # the main process, the one that writes checkpoints, tidies the directory.
            latest = latest_complete_checkpoint(self.work_dir)
            if is_main_process():
                for stale in Path(self.work_dir).glob("*" + _PART):
                    self.logger.warning(f"removing the unfinished checkpoint {stale}")
                    stale.unlink()
                if latest is not None:
                    (Path(self.work_dir) / "last_checkpoint").write_text(str(latest))
            if latest is None:
                self.logger.info(f"no complete checkpoint in {self.work_dir}: starting afresh")
                self._resume = False
            else:
                self._load_from = str(latest)
        super().load_or_resume()


def setup_distributed(cfg) -> None:
    """Prepares ``cfg`` (and the process group) for a launcher on a machine without CUDA.

    With CUDA nothing changes. Without it, for ``launcher`` ``pytorch`` or ``slurm``:
    the process group is initialised here with gloo from the launcher's environment
    (torchrun's ``RANK``/``WORLD_SIZE``/``MASTER_*``, or Slurm's ``SLURM_*``), and DDP is
    built without ``device_ids``. MMEngine then finds the group initialised and skips its
    CUDA-only set-up.
    """
    launcher = cfg.get("launcher", "none")
    if launcher == "none" or torch.cuda.is_available():
        return
    if launcher not in ("pytorch", "slurm"):
        raise ValueError(f"launcher {launcher!r} needs CUDA; use pytorch or slurm on CPU")
    if launcher == "slurm":
        _export_slurm_environment(cfg.get("env_cfg", {}).get("dist_cfg", {}).get("port"))
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    wrapper = cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel",
        broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False),
    )
    wrapper["device_ids"] = None  # CPU modules: DDP takes no device ids
    cfg.model_wrapper_cfg = wrapper


def _export_slurm_environment(port: Optional[int]) -> None:
    import subprocess

    nodes = os.environ["SLURM_NODELIST"]
    host = subprocess.run(
        ["scontrol", "show", "hostname", nodes], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    os.environ.setdefault("MASTER_ADDR", host)
    os.environ.setdefault("MASTER_PORT", str(port or os.environ.get("MASTER_PORT", 29500)))
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ["SLURM_LOCALID"]
