"""Hugging Face's own NAT/DiNAT classes for the tests: live (5.x Dinat) and saved (4.46.3).

* transformers 5.x (pinned in CI) ships ``Dinat``: :func:`dinat_classes` returns its
  classes after :func:`nattk.hf.use_toolkit_attention`, i.e. HF's own code on our operator.
* ``Nat`` exists only up to 4.x, and 4.46.3's Dinat is the layout published weights
  were trained for: ``tests/fixtures/hf_4_46_3`` holds what 4.46.3's classes saved and
  computed (see ``tests/fixtures/make_hf_4_46_3.py``); :func:`fixture` reads one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from hf_small import (  # noqa: F401 (re-exported for the tests)
    INPUT_SHAPE,
    SMALL,
    SMALL_DILATIONS,
    SMALL_MLP_RATIO,
    hf_config_kwargs,
    randomise,
)

from nattk.backbones.nat import NAT, DiNAT

try:
    import transformers
except ImportError:  # pragma: no cover - the dev extra installs it
    HAVE_TRANSFORMERS = False
    TRANSFORMERS_5 = False
else:
    HAVE_TRANSFORMERS = True
    TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
SKIP_REASON = "transformers (hf/dev extra, transformers==5.23.0) is not installed"
SKIP_REASON_5 = "nattk.hf's backbone classes need transformers >= 5 (CI pins 5.23.0)"

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf_4_46_3"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def dinat_classes() -> SimpleNamespace:
    """transformers' ``Dinat`` ``Model``, ``ForImageClassification``, ``Backbone``, ``Config``."""
    from nattk.hf import use_toolkit_attention

    use_toolkit_attention()
    from transformers import (
        DinatBackbone,
        DinatConfig,
        DinatForImageClassification,
        DinatModel,
    )

    return SimpleNamespace(
        Model=DinatModel,
        ForImageClassification=DinatForImageClassification,
        Backbone=DinatBackbone,
        Config=DinatConfig,
    )


def small_config(classes: SimpleNamespace, family: str, layer_scale, **extra):
    """HF config of the :data:`SMALL` model (``layer_scale`` ``None`` means off)."""
    return classes.Config(**hf_config_kwargs(family, layer_scale, **extra))


def small_model(family: str, layer_scale, num_classes: int, **extra):
    """Our :data:`SMALL` model (classifier when ``num_classes > 0``), in eval mode."""
    cls = DiNAT if family == "dinat" else NAT
    dilations = SMALL_DILATIONS if family == "dinat" else None
    return cls(
        **SMALL,
        dilations=dilations,
        mlp_ratio=SMALL_MLP_RATIO,
        layer_scale=layer_scale,
        num_classes=num_classes,
        drop_path_rate=0.0,
        **extra,
    ).eval()


@dataclass
class Fixture:
    """One model that transformers 4.46.3 saved, with its fp64 outputs."""

    name: str
    folder: Path
    meta: dict
    outputs: dict

    @property
    def weights(self) -> Path:
        return self.folder / "model.safetensors"

    def output(self, input_name: str, key: str) -> torch.Tensor:
        return self.outputs[f"{input_name}.{key}"]


def fixture(name: str) -> Fixture:
    """The fixture folder ``name`` of ``tests/fixtures/hf_4_46_3``."""
    from safetensors.torch import load_file

    folder = FIXTURES / name
    return Fixture(
        name, folder, MANIFEST["models"][name], load_file(str(folder / "outputs.safetensors"))
    )


def fixture_inputs() -> dict:
    """The fixtures' inputs (fp32 values, returned in fp64)."""
    from safetensors.torch import load_file

    return {k: v.double() for k, v in load_file(str(FIXTURES / "inputs.safetensors")).items()}


def sorted_values(tensors) -> torch.Tensor:
    """All values of ``tensors``, flattened and sorted (a key-free fingerprint)."""
    return torch.cat([t.detach().flatten().float() for t in tensors]).sort().values
