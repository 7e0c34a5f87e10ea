"""Hugging Face transformers on this toolkit's neighborhood attention.

* :func:`use_toolkit_attention` makes transformers' own Dinat (and 4.x Nat) classes run
  on ``torch.ops.nattk`` with transformers 4.x's attention semantics, whatever NATTEN
  is installed, and registers this toolkit's backbones;
* :class:`NattkBackboneConfig` / :class:`NattkBackbone` (``AutoBackbone``) bring every
  NAT / DiNAT / DiNAT_s variant to transformers' Mask2Former, OneFormer and UperNet.

Importing this package does not import transformers; the backbone classes do.
"""

from .attention import (
    TESTED_TRANSFORMERS,
    AttentionStatus,
    attention_status,
    restore_transformers_attention,
    use_toolkit_attention,
)

__all__ = [
    "TESTED_TRANSFORMERS",
    "AttentionStatus",
    "NattkBackbone",
    "NattkBackboneConfig",
    "attention_status",
    "register_backbones",
    "restore_transformers_attention",
    "use_toolkit_attention",
]

_BACKBONE_NAMES = ("NattkBackbone", "NattkBackboneConfig", "register_backbones")


def __getattr__(name: str):
    if name in _BACKBONE_NAMES:
        from . import backbone

        return getattr(backbone, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
