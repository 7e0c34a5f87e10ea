"""Train or evaluate Mask2Former with a NAT / DiNAT / DiNAT_s backbone (Detectron2).

Runs upstream Mask2Former's own ``Trainer`` (from a checkout given by ``--m2f-root``,
``$MASK2FORMER_ROOT`` or ``../Mask2Former``) with this toolkit's backbones registered and
their ``MODEL.NAT/DINAT/DINAT_S`` keys declared; upstream code is used as is. Flags are
Detectron2's, followed by ``KEY VALUE`` overrides::

    python tools/train_m2f.py --num-gpus 8 \\
        --config-file mask2former/configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml
    python tools/train_m2f.py --config-file CFG --eval-only MODEL.WEIGHTS model.pth
    python tools/train_m2f.py --config-file CFG --eval-only TEST.AUG.ENABLED True MODEL.WEIGHTS model.pth

Without a GPU, ``MODEL.DEVICE`` falls back to ``cpu`` and, when Mask2Former's
MSDeformAttn op was not compiled, its PyTorch implementation is used.

``MODEL.WEIGHTS`` may be a Detectron2 ``.pkl``, a ``torch.save`` file or backbone
weights in ``.safetensors`` (e.g. a Hugging Face ``model.safetensors``), which are read
without pickle and matched onto the backbone as a converted ``.pkl`` would be
(:func:`nattk.mask2former.checkpoint.enable_safetensors_weights`).

:func:`build_parser`, :func:`run` and :func:`cli` serve the OneFormer launcher as well
(:mod:`nattk.mask2former.oneformer`, ``tools/train_oneformer.py``).
"""

from __future__ import annotations

import logging

from nattk.mask2former.upstream import MASK2FORMER, Upstream

logger = logging.getLogger(__name__)


def _require_detectron2() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"this launcher needs detectron2 ({error}); it is not on PyPI: build it from "
            "source as described in docs/detectron2_mask2former.md"
        ) from error


def build_parser(project: Upstream = MASK2FORMER):
    """Detectron2's ``default_argument_parser`` plus the checkout flag (``args.upstream_root``).

    ``--m2f-root`` for Mask2Former, ``--oneformer-root`` for OneFormer.
    """
    from detectron2.engine import default_argument_parser

    parser = default_argument_parser(
        f"Train or evaluate {project.name} with this toolkit's backbones"
    )
    parser.add_argument(
        project.root_flag,
        dest="upstream_root",
        metavar="DIR",
        default=None,
        help=f"{project.name} checkout (default: ${project.root_env}, else ../{project.name})",
    )
    return parser


def fall_back_to_cpu(cfg) -> None:
    """Sets ``MODEL.DEVICE`` to ``cpu`` when it names CUDA and there is none (unfrozen ``cfg``)."""
    import torch

    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("no CUDA device: running with MODEL.DEVICE cpu")
        cfg.MODEL.DEVICE = "cpu"


def merge_config_file(cfg, config_file: str, m2f_root=None) -> None:
    """Merges ``config_file`` into ``cfg``, finding an upstream ``_BASE_`` in the checkout."""
    import yaml

    from nattk.mask2former.upstream import resolve_base

    with open(config_file) as f:
        # Detectron2 itself reads yamls with unsafe_load (upstream bases use !!python tags).
        data = yaml.unsafe_load(f) or {}
    base = data.pop("_BASE_", None)
    if base is not None:
        cfg.merge_from_file(resolve_base(config_file, base, m2f_root))
    cfg.merge_from_other_cfg(type(cfg)(data))


def setup(args, train_net):
    """Builds the frozen config: deeplab + Mask2Former + nattk keys, yaml, then opts."""
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup
    from detectron2.projects.deeplab import add_deeplab_config
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from nattk.mask2former.config import add_nattk_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    train_net.add_maskformer2_config(cfg)
    add_nattk_config(cfg)
    merge_config_file(cfg, args.config_file, args.upstream_root)
    cfg.merge_from_list(args.opts)
    fall_back_to_cpu(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former")
    return cfg


def run(cfg, trainer_cls, args):
    """Trains (``--resume`` continues) or, with ``--eval-only``, evaluates ``MODEL.WEIGHTS``.

    ``trainer_cls`` is upstream's ``Trainer``; ``TEST.AUG.ENABLED`` adds its TTA results.
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.evaluation import verify_results
    from detectron2.utils import comm

    from nattk.mask2former.checkpoint import enable_safetensors_weights

    enable_safetensors_weights()  # MODEL.WEIGHTS=*.safetensors
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = trainer_cls.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(trainer_cls.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(args):
    """One process's work (Detectron2's ``launch`` calls it once per GPU)."""
    from nattk.mask2former.upstream import import_train_net

    train_net = import_train_net(args.upstream_root)
    import nattk.mask2former.backbone  # noqa: F401  (registers D2NAT, D2DiNAT, D2DiNAT_s)

    return run(setup(args, train_net), train_net.Trainer, args)


def cli(argv=None, project: Upstream = MASK2FORMER, main=main):
    """Parses Detectron2's flags and launches ``main`` on every process."""
    _require_detectron2()
    from detectron2.engine import launch

    args = build_parser(project).parse_args(argv)
    print("Command Line Args:", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
