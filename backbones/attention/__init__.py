"""Neighborhood attention (NA / dilated NA) with relative position bias.

:func:`neighborhood_attention_2d` (fused) and :func:`na2d_qk` / :func:`na2d_av`
(unfused) check their inputs and dispatch to a backend of :mod:`.registry`;
:class:`NeighborhoodAttention2D` is the layer the backbones use.
"""

from .functional import (
    BACKENDS,
    backend_report,
    na2d_av,
    na2d_qk,
    neighborhood_attention_2d,
    resolve_backend,
)
from .module import NeighborhoodAttention2D

__all__ = [
    "BACKENDS",
    "NeighborhoodAttention2D",
    "backend_report",
    "na2d_av",
    "na2d_qk",
    "neighborhood_attention_2d",
    "resolve_backend",
]
