"""Settings the whole test session needs before any test module is imported."""

import os

import torch

if not torch.cuda.is_available():
    # Triton's CPU interpreter (tests/test_triton_backend.py) must be chosen before
    # `triton.language` is first imported, and test modules collected earlier import it:
    # transformers 5, which mmdet's BERT wrapper imports, pulls it in.
    os.environ.setdefault("TRITON_INTERPRET", "1")
