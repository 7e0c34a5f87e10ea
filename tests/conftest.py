"""Settings the whole test session needs before any test module is imported."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's CPU interpreter (tests/test_triton_backend.py) must be chosen before
    # `triton.language` is first imported, and test modules collected earlier import it:
    # transformers 5, which mmdet's BERT wrapper imports, pulls it in.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _restore_deterministic_algorithms():
    """Some framework runs (MMEngine's `randomness=dict(deterministic=True)`) turn on
    `torch.use_deterministic_algorithms` process-wide; later tests must not inherit it."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
