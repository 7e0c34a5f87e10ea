"""Shared logic of ``tools/train.py`` and ``tools/test.py``.

One pair of scripts serves MMDetection and MMSegmentation configs; the framework is
the config's ``default_scope``. Flags and their semantics follow MMDetection 3.3's
tools (``--resume [CKPT]``, ``--amp``, ``--auto-scale-lr``, ``--cfg-options``,
``--launcher``, ``--local-rank``; test: ``--out``, ``--show``, ``--show-dir``, ``--tta``).
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import warnings
from typing import Optional, Sequence

from mmengine.config import Config, DictAction

FRAMEWORKS = ("mmdet", "mmseg")


def ignore_pkg_resources_warning() -> None:
    """Ignores setuptools' ``pkg_resources is deprecated`` warning (call it when a CLI runs).

    Configs inheriting ``mmdet::``/``mmseg::`` bases make MMEngine import (and reload)
    ``pkg_resources``, whose deprecation warning would otherwise open every run.
    """
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


class KeyValueAction(DictAction):
    """MMEngine's ``DictAction`` that names an item without ``=`` instead of failing inside."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            if "=" not in item:
                parser.error(f"{option_string} takes KEY=VALUE items; got {item!r}")
        super().__call__(parser, namespace, values, option_string)


#: Top-level keys MMEngine's ``Runner.from_cfg`` reads, which a config may leave out.
RUNNER_KEYS = frozenset(
    "model work_dir train_dataloader val_dataloader test_dataloader train_cfg val_cfg "
    "test_cfg auto_scale_lr optim_wrapper param_scheduler val_evaluator test_evaluator "
    "default_hooks custom_hooks data_preprocessor load_from resume launcher env_cfg "
    "log_processor log_level visualizer default_scope randomness experiment_name compile "
    "model_wrapper_cfg".split()
)


def check_new_keys(cfg: Config, options: dict) -> None:
    """Refuses ``--cfg-options`` keys whose top level neither the config nor MMEngine's
    runner knows.

    MMEngine merges any key, so a typo (``totally_bogus_key=1``, ``trian_cfg.x=1``) would
    be added silently and ignored by the run.

    Raises:
        ValueError: Naming the keys, with the config's own top-level keys.
    """
    known = set(cfg.keys()) | RUNNER_KEYS
    unknown = [key for key in options if key.split(".", 1)[0] not in known]
    if unknown:
        raise ValueError(
            f"--cfg-options {', '.join(unknown)}: the config has no such top-level key "
            f"(it has {', '.join(sorted(cfg.keys()))}); pass --allow-new-keys to add it"
        )


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Adds ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local-rank``."""
    parser.add_argument("--work-dir", help="where logs and checkpoints go")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=KeyValueAction,
        help="override config keys, e.g. train_cfg.max_epochs=12 model.backbone.with_cp=True; "
        'lists as key="[a,b]"',
    )
    parser.add_argument(
        "--allow-new-keys",
        action="store_true",
        help="let --cfg-options add top-level keys the config does not have",
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm", "mpi"],
        default="none",
        help="job launcher",
    )
    # torch < 2.0's launcher passes --local_rank, torchrun sets LOCAL_RANK; accept both.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses ``argv`` and exports ``LOCAL_RANK`` for MMEngine when a launcher did not."""
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def load_config(args: argparse.Namespace) -> Config:
    """Reads the config, applies the common flags and returns it.

    Raises:
        FileNotFoundError: No such config file.
        ValueError: The config's ``default_scope`` is not a supported framework.
    """
    if not osp.isfile(args.config):
        raise FileNotFoundError(f"config file not found: {args.config}")
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        if not getattr(args, "allow_new_keys", False):
            check_new_keys(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    framework_of(cfg)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    return cfg


def framework_of(cfg: Config) -> str:
    """``'mmdet'`` or ``'mmseg'``, from the config's ``default_scope``."""
    scope = cfg.get("default_scope")
    if scope not in FRAMEWORKS:
        raise ValueError(
            f"config default_scope is {scope!r}; this script runs {FRAMEWORKS} configs "
            "(inherit mmdet::_base_/default_runtime.py or mmseg's)"
        )
    return scope


def build_runner(cfg: Config):
    """The runner of ``cfg``: :class:`~nattk.openmmlab.runner.CrashSafeRunner` unless it names one.

    Distributed runs without CUDA are prepared first (gloo; see
    :func:`~nattk.openmmlab.runner.setup_distributed`). Known-harmless framework
    warnings are ignored and noisy log records, such as MMEngine's per-parameter
    ``paramwise_options`` dump, are logged at DEBUG level (see :mod:`nattk.openmmlab.quiet`).
    """
    from mmengine.registry import RUNNERS

    from nattk.openmmlab.quiet import demote_noisy_records, ignore_harmless_warnings
    from nattk.openmmlab.runner import CrashSafeRunner, setup_distributed

    ignore_harmless_warnings()
    setup_distributed(cfg)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else CrashSafeRunner.from_cfg(cfg)
    demote_noisy_records(runner.logger)
    return runner


def end_distributed() -> None:
    """Destroys the default process group, if one is up, before the interpreter exits.

    MMEngine leaves it to interpreter teardown, where gloo's background threads can race
    their destructors: a rank then aborts ("terminate called without an active
    exception") after the run has finished, and the launcher reports a failed job.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
