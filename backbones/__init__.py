"""Framework-free NAT / DiNAT / DiNAT_s core (depends on torch only)."""

from .attention import NeighborhoodAttention2D, na2d_av, na2d_qk, neighborhood_attention_2d

__all__ = ["NeighborhoodAttention2D", "na2d_av", "na2d_qk", "neighborhood_attention_2d"]
