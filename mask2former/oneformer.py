"""OneFormer's DiNAT models on this toolkit's backbone; no OneFormer file is modified.

OneFormer (SHI-Labs, on Detectron2) keeps its own DiNAT in
``oneformer/modeling/backbone/dinat.py``. That file imports NATTEN 0.14's module API
(gone from current NATTEN) and registers a ``D2DiNAT`` of its own, which clashes with
ours. :func:`use_toolkit_backbone`, called before OneFormer is imported, puts a module
under that name in ``sys.modules`` whose ``D2DiNAT`` is this toolkit's
(:class:`nattk.mask2former.backbone.D2DiNAT`). Python's import system returns a module
found in ``sys.modules`` without executing its file, so OneFormer's ``dinat.py`` never
runs and ``D2DiNAT`` is registered once. Our backbone reads OneFormer's ``MODEL.DiNAT``
keys (:func:`nattk.mask2former.config.family_node`) and has OneFormer's parameter names,
so OneFormer's checkpoints load unchanged::

    from nattk.mask2former.oneformer import use_toolkit_backbone

    use_toolkit_backbone()
    import oneformer  # its D2DiNAT is the toolkit's

``tools/train_oneformer.py`` does this and then runs OneFormer's own ``setup`` and
``Trainer`` from a checkout (``--oneformer-root``, ``$ONEFORMER_ROOT`` or ``../OneFormer``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType

from .config import TOOLKIT_KEYS, add_toolkit_keys
from .launch import cli as launch_cli
from .launch import fall_back_to_cpu, run
from .upstream import ONEFORMER, import_train_net

logger = logging.getLogger(__name__)

#: OneFormer's backbone module that :func:`use_toolkit_backbone` stands in for.
BACKBONE_MODULE = "oneformer.modeling.backbone.dinat"
#: The node OneFormer's own ``add_dinat_config`` declares.
ONEFORMER_NODE = "MODEL.DiNAT"


def install_backbone_module(d2_dinat: type) -> ModuleType:
    """Makes ``d2_dinat`` what ``from oneformer.modeling.backbone.dinat import D2DiNAT`` gives.

    The part of :func:`use_toolkit_backbone` that needs no detectron2. A second call with
    the same class returns the module already installed.

    Raises:
        RuntimeError: OneFormer (or its own ``dinat`` module) was imported already.
    """
    existing = sys.modules.get(BACKBONE_MODULE)
    if existing is not None and getattr(existing, "D2DiNAT", None) is d2_dinat:
        return existing
    if existing is not None or "oneformer" in sys.modules:
        raise RuntimeError(
            "oneformer was imported before use_toolkit_backbone(): its own "
            f"{BACKBONE_MODULE} (NATTEN 0.14) is in use. Call "
            "nattk.mask2former.oneformer.use_toolkit_backbone() before importing oneformer."
        )
    module = ModuleType(BACKBONE_MODULE, "Stand-in installed by nattk: D2DiNAT is the toolkit's.")
    module.D2DiNAT = d2_dinat
    module.__all__ = ["D2DiNAT"]
    sys.modules[BACKBONE_MODULE] = module
    return module


def use_toolkit_backbone() -> type:
    """Makes OneFormer's ``D2DiNAT`` this toolkit's; call before importing ``oneformer``.

    Imports :mod:`nattk.mask2former.backbone` (registers ``D2NAT``, ``D2DiNAT`` and
    ``D2DiNAT_s`` in Detectron2's ``BACKBONE_REGISTRY``; needs detectron2) and installs
    :func:`install_backbone_module`.

    Returns:
        The toolkit's ``D2DiNAT``.

    Raises:
        RuntimeError: ``oneformer`` was imported first.
    """
    from .backbone import D2DiNAT

    install_backbone_module(D2DiNAT)
    return D2DiNAT


def split_toolkit_opts(opts: list) -> tuple[list, list]:
    """Splits ``KEY VALUE`` overrides into ``MODEL.DiNAT.<toolkit key>`` pairs and the rest.

    OneFormer's config does not declare :data:`~nattk.mask2former.config.TOOLKIT_KEYS`
    (``LAYER_SCALE``, ``FROZEN_STAGES``, ``WITH_CP``, ``ALLOW_MISSING_WEIGHTS``), so its
    ``merge_from_list`` would reject them; :func:`setup` applies them after OneFormer's.

    Raises:
        ValueError: An odd number of items.
    """
    if len(opts) % 2:
        raise ValueError(f"overrides come in KEY VALUE pairs, got {len(opts)} items: {opts}")
    ours = {f"{ONEFORMER_NODE}.{key}" for key in TOOLKIT_KEYS}
    toolkit, rest = [], []
    for key, value in zip(opts[::2], opts[1::2]):
        (toolkit if key in ours else rest).extend([key, value])
    return toolkit, rest


def setup(args, train_net):
    """OneFormer's own ``setup``, then the toolkit keys of ``MODEL.DiNAT`` and the CPU fallback.

    OneFormer's ``setup`` calls ``wandb.init`` when training; unless ``WANDB_MODE`` is
    set, it runs offline here (``WANDB_MODE=online`` logs to Weights & Biases).

    Args:
        args: Parsed launcher arguments (Detectron2's flags, ``opts`` overrides).
        train_net: OneFormer's ``train_net.py`` module (its ``setup``).

    Returns:
        The frozen config.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    toolkit, rest = split_toolkit_opts(list(args.opts))
    cfg = train_net.setup(argparse.Namespace(**{**vars(args), "opts": rest}))
    cfg.defrost()
    add_toolkit_keys(cfg.MODEL.DiNAT)
    cfg.merge_from_list(toolkit)
    fall_back_to_cpu(cfg)
    cfg.freeze()
    return cfg


def main(args):
    """One process's work: OneFormer's setup and ``Trainer`` with the toolkit's ``D2DiNAT``."""
    use_toolkit_backbone()
    train_net = import_train_net(args.upstream_root, ONEFORMER)
    return run(setup(args, train_net), train_net.Trainer, args)


def cli(argv=None):
    """``tools/train_oneformer.py``: Detectron2's flags plus ``--oneformer-root``."""
    return launch_cli(argv, project=ONEFORMER, main=main)
