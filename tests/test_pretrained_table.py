"""Every ImageNet checkpoint named by a config or a document is in the core table."""

from __future__ import annotations

import re

import pytest
from mm_helpers import REPO
from mmengine.config import Config

from nattk.backbones.variants import FAMILIES, VARIANTS
from nattk.backbones.weights import PRETRAINED, pretrained_weights

CONFIGS = sorted(
    p
    for p in (REPO / "configs").rglob("*.py")
    if "_base_" not in p.parts and "quickstart" not in p.parts
)
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "configs").glob("*/README.md")),
    *sorted((REPO / "docs").glob("*.md")),
]
IMAGENET_URL = re.compile(
    r"https://shi-labs\.com/projects/\w+/checkpoints/(?:CLS|imagenet1k|imagenet22k)/[\w.]+\.pth"
)
FAMILY_OF_TYPE = {cls.__name__: family for family, cls in FAMILIES.items()}


def test_table_covers_every_variant_and_names_it_in_the_url():
    assert {w.variant for w in PRETRAINED.values()} == set(VARIANTS)
    for tag, weights in PRETRAINED.items():
        assert weights.variant in VARIANTS, tag
        assert weights.url.rsplit("/", 1)[-1].startswith(weights.variant), tag
        assert pretrained_weights(tag) is weights is pretrained_weights(weights.url)
    with pytest.raises(KeyError, match="not a published ImageNet checkpoint"):
        pretrained_weights("https://example.com/dinat_tiny.pth")


def _fast_tier_first_of_each_folder(paths):
    """Each config folder's first config runs in the fast tier; the others are ``slow``."""
    seen = set()
    for path in paths:
        if path.parent in seen:
            yield pytest.param(path, marks=pytest.mark.slow)
        else:
            seen.add(path.parent)
            yield path


@pytest.mark.parametrize(
    "path",
    _fast_tier_first_of_each_folder(CONFIGS),
    ids=lambda p: str(p.relative_to(REPO / "configs")),
)
def test_config_starts_from_a_table_checkpoint_of_its_own_variant(path):
    backbone = Config.fromfile(path).model.backbone
    url = backbone.init_cfg.checkpoint
    weights = pretrained_weights(url)
    family = FAMILY_OF_TYPE[backbone.type]
    assert weights.variant == f"{family}_{backbone.arch}", url
    assert weights.kernel_size == backbone.get("kernel_size", 7), url


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_documents_name_only_table_checkpoints(path):
    for url in IMAGENET_URL.findall(path.read_text()):
        pretrained_weights(url)
