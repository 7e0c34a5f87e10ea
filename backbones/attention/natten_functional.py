"""Deprecated: NATTEN's legacy functional API moved to :mod:`.legacy_natten`."""

import warnings

from .legacy_natten import na2d_av, na2d_qk, natten2dav, natten2dqk, natten2dqkrpb

warnings.warn(
    "nattk.backbones.attention.natten_functional moved to "
    "nattk.backbones.attention.legacy_natten",
    DeprecationWarning,
    stacklevel=2,
)
__all__ = ["na2d_av", "na2d_qk", "natten2dav", "natten2dqk", "natten2dqkrpb"]
