"""Neighborhood attention (NA / dilated NA) with relative position bias."""

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
