"""Hugging Face checkpoints, from transformers' own NAT/DiNAT classes, load and match.

Every weight file here is written by transformers (``save_pretrained``, as on the hub:
``pytorch_model.bin`` or ``model.safetensors``) from ``NatModel``/``DinatModel``,
``*ForImageClassification`` and ``*Backbone``; loaded with :func:`load_pretrained`, our
models must report nothing missing or unexpected (beyond the documented classifier
cases), hold exactly HF's values and compute HF's outputs.

* DiNAT: transformers 5.x's classes, live, on our operator (:mod:`nattk.hf`).
* NAT (gone from transformers 5) and 4.46.3's DiNAT: the files 4.46.3's classes saved
  and the fp64 outputs they computed (``tests/fixtures/hf_4_46_3``).
"""

from __future__ import annotations

import pytest
import torch
from hf_helpers import (
    HAVE_TRANSFORMERS,
    INPUT_SHAPE,
    MANIFEST,
    SKIP_REASON,
    dinat_classes,
    fixture,
    fixture_inputs,
    randomise,
    small_config,
    small_model,
    sorted_values,
)
from safetensors.torch import load_file

from nattk.backbones.variants import VARIANTS, create_model
from nattk.backbones.weights import load_pretrained
from nattk.backbones.weights.huggingface import to_official as convert_hf_state_dict

pytestmark = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason=SKIP_REASON)

FAMILIES = ["dinat"]  # live: the families transformers 5 ships
LAYER_SCALES = [None, 1e-5]
FILES = {"bin": "pytorch_model.bin", "safetensors": "model.safetensors"}
DENSE_NORMS = sorted(f"norm{i}.{t}" for i in range(4) for t in ("weight", "bias"))
ATOL = 1e-5


def save(hf_model, tmp_path, fmt: str):
    """Writes ``hf_model`` as transformers does for the hub; returns the weight file.

    transformers 5 writes ``model.safetensors`` only; the hub's older
    ``pytorch_model.bin`` files are what 4.x wrote: ``torch.save`` of the state dict.
    """
    hf_model.save_pretrained(tmp_path)
    if fmt == "bin":
        torch.save(hf_model.state_dict(), tmp_path / FILES[fmt])
    path = tmp_path / FILES[fmt]
    assert path.is_file(), sorted(p.name for p in tmp_path.iterdir())
    return path


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=ATOL)


def loaded_values(model, report):
    """Values of ``model`` that came from the checkpoint (fresh dense norms left out)."""
    fresh = set(report.expected_missing) | set(report.missing)
    return sorted_values(v for k, v in model.state_dict().items() if k not in fresh)


@pytest.mark.parametrize("fmt", sorted(FILES))
@pytest.mark.parametrize("layer_scale", LAYER_SCALES)
@pytest.mark.parametrize("family", FAMILIES)
def test_image_classification_checkpoint(family, layer_scale, fmt, tmp_path):
    hf = dinat_classes()
    model = randomise(
        hf.ForImageClassification(small_config(hf, family, layer_scale, num_labels=5))
    )
    path = save(model, tmp_path, fmt)
    x = torch.randn(INPUT_SHAPE)
    with torch.no_grad():
        expected = model(x, output_hidden_states=True)

    ours = small_model(family, layer_scale, num_classes=5)
    report = load_pretrained(ours, path)
    assert (report.missing, report.unexpected) == ([], [])
    assert report.loaded == report.total and not report.expected_unexpected
    assert torch.equal(loaded_values(ours, report), sorted_values(model.state_dict().values()))
    with torch.no_grad():
        assert_close(ours(x), expected.logits)

    # A dense backbone takes the same file: the classifier (HF's layernorm and
    # classifier) is reported as expected extra tensors, the output norms start fresh.
    dense = small_model(family, layer_scale, num_classes=0)
    report = load_pretrained(dense, path)
    assert (report.missing, report.unexpected) == ([], [])
    assert sorted(report.expected_unexpected) == [
        "head.bias",
        "head.weight",
        "norm.bias",
        "norm.weight",
    ]
    assert sorted(report.expected_missing) == DENSE_NORMS
    assert report.loaded == report.total - len(DENSE_NORMS)
    without_classifier = (
        v
        for k, v in model.state_dict().items()
        if not k.startswith(("classifier.", family + ".layernorm."))
    )
    assert torch.equal(loaded_values(dense, report), sorted_values(without_classifier))
    with torch.no_grad():
        assert_close(dense.forward_levels(x)[-1], expected.hidden_states[-1])


@pytest.mark.parametrize("layer_scale", LAYER_SCALES)
@pytest.mark.parametrize("family", FAMILIES)
def test_base_model_checkpoint(family, layer_scale, tmp_path):
    hf = dinat_classes()
    model = randomise(hf.Model(small_config(hf, family, layer_scale)))
    path = save(model, tmp_path, "safetensors")
    x = torch.randn(INPUT_SHAPE)
    with torch.no_grad():
        expected = model(x, output_hidden_states=True)

    dense = small_model(family, layer_scale, num_classes=0)
    report = load_pretrained(dense, path)
    assert (report.missing, report.unexpected) == ([], [])
    assert sorted(report.expected_unexpected) == ["norm.bias", "norm.weight"]
    assert sorted(report.expected_missing) == DENSE_NORMS
    encoder = (v for k, v in model.state_dict().items() if not k.startswith("layernorm."))
    assert torch.equal(loaded_values(dense, report), sorted_values(encoder))
    with torch.no_grad():
        assert_close(dense.forward_levels(x)[-1], expected.hidden_states[-1])

    # HF's final layernorm is our classifier's norm: only the head is missing.
    classifier = small_model(family, layer_scale, num_classes=5)
    with pytest.raises(ValueError, match=r"lacks 2 of the model's tensors .*head\."):
        load_pretrained(classifier, path)
    report = load_pretrained(classifier, path, allow_missing=True)
    assert sorted(report.missing) == ["head.bias", "head.weight"] and not report.unexpected
    assert torch.equal(
        loaded_values(classifier, report), sorted_values(model.state_dict().values())
    )
    with torch.no_grad():
        last = classifier.norm(classifier.forward_levels(x)[-1])
    assert_close(last, expected.last_hidden_state)
    assert_close(last.flatten(1, 2).mean(1), expected.pooler_output)


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3)])
@pytest.mark.parametrize("layer_scale", LAYER_SCALES)
@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_checkpoint(family, layer_scale, out_indices, tmp_path):
    hf = dinat_classes()
    stages = [f"stage{i + 1}" for i in out_indices]
    model = randomise(hf.Backbone(small_config(hf, family, layer_scale, out_features=stages)))
    path = save(model, tmp_path, "bin")
    x = torch.randn(INPUT_SHAPE)
    with torch.no_grad():
        expected = model(x).feature_maps

    dense = small_model(family, layer_scale, num_classes=0, out_indices=out_indices)
    report = load_pretrained(dense, path)
    assert report.loaded == report.total
    assert not (report.missing or report.unexpected or report.expected_missing)
    assert torch.equal(loaded_values(dense, report), sorted_values(model.state_dict().values()))
    with torch.no_grad():
        features = dense(x)
    assert len(features) == len(expected) == len(out_indices)
    for ours, theirs in zip(features, expected):
        assert_close(ours, theirs)


@pytest.mark.parametrize("family", FAMILIES)
def test_published_mini_variants_equal_hf_default_configs(family):
    # HF's default DinatConfig describes dinat_mini (the shi-labs/dinat-mini-in1k-224
    # checkpoint): same weights, same logits at 224.
    hf = dinat_classes()
    model = randomise(hf.ForImageClassification(hf.Config(num_labels=1000)))
    ours = create_model(f"{family}_mini", num_classes=1000).eval()
    report = load_pretrained(ours, model.state_dict())
    assert report.loaded == report.total and not report.unexpected
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x).logits, atol=1e-4, rtol=1e-4)


def test_unknown_or_incomplete_hf_keys_are_named():
    hf = dinat_classes()
    state = hf.ForImageClassification(small_config(hf, "dinat", None, num_labels=5)).state_dict()
    assert convert_hf_state_dict(state)  # the real dict converts

    unknown = dict(
        state, **{"dinat.encoder.levels.0.layers.0.attention.self.mystery": torch.zeros(1)}
    )
    with pytest.raises(
        ValueError, match=r"'dinat\.encoder\.levels\.0\.layers\.0\.attention\.self\.mystery'"
    ):
        convert_hf_state_dict(unknown)

    no_key = {
        k: v
        for k, v in state.items()
        if k != "dinat.encoder.levels.1.layers.0.attention.self.key.weight"
    }
    with pytest.raises(ValueError, match=r"level 1 layer 0: incomplete query/key/value weight"):
        convert_hf_state_dict(no_key)

    mixed = dict(state, **{"nat.layernorm.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"mixes the Hugging Face prefixes \['dinat\.', 'nat\.'\]"):
        convert_hf_state_dict(mixed)

    duplicate = dict(state, **{"layernorm.weight": torch.zeros(1)})
    with pytest.raises(
        ValueError, match=r"'dinat\.layernorm\.weight' and 'layernorm\.weight' both map"
    ):
        convert_hf_state_dict(duplicate)


def test_hf_backbone_stem_norm_has_no_counterpart():
    # Our dense backbones return stages only; HF's optional "stem" output norm is refused.
    hf = dinat_classes()
    model = hf.Backbone(small_config(hf, "dinat", None, out_features=["stem", "stage4"]))
    with pytest.raises(ValueError, match=r"'hidden_states_norms\.stem\.weight' has no counterpart"):
        convert_hf_state_dict(model.state_dict())


@pytest.mark.parametrize("family", FAMILIES)
def test_maps_smaller_than_the_window_are_padded_like_hf(family):
    # 40x56 input: level maps 10x14, 5x7, 3x4, 2x2. DiNAT's dilation-2 windows (6 wide)
    # at levels 1-2 and every 3x3 window at level 3 exceed them: both models pad.
    hf = dinat_classes()
    model = randomise(hf.ForImageClassification(small_config(hf, family, 1e-5, num_labels=5)))
    ours = small_model(family, 1e-5, num_classes=5)
    load_pretrained(ours, model.state_dict())
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert_close(ours(x), model(x).logits)


# --------------------------------------------------------------------------- 4.46.3
FIXTURE_TOL = dict(atol=1e-10, rtol=0)
NAT_CLASSIFIERS = ["nat_cls", "nat_cls_ls", "dinat_cls"]
NAT_BACKBONES = ["nat_backbone", "nat_backbone_ls_24", "dinat_backbone"]


def fixture_model(fix, num_classes: int, **extra):
    """Our model for a fixture's family and layer scale, in fp64."""
    return small_model(fix.meta["family"], fix.meta["layer_scale"], num_classes, **extra).double()


@pytest.mark.parametrize("name", NAT_CLASSIFIERS)
def test_4_46_3_classifier_files_load_and_compute_the_same(name):
    # Includes NAT, which transformers 5 no longer has, and maps that need padding.
    fix = fixture(name)
    ours = fixture_model(fix, num_classes=fix.meta["num_labels"])
    report = load_pretrained(ours, fix.weights)
    assert (report.missing, report.unexpected, report.expected_unexpected) == ([], [], [])
    saved = load_file(str(fix.weights)).values()
    assert torch.equal(loaded_values(ours, report), sorted_values(saved))
    dense = fixture_model(fix, num_classes=0)
    dense_report = load_pretrained(dense, fix.weights)
    assert sorted(dense_report.expected_missing) == DENSE_NORMS and not dense_report.missing
    with torch.no_grad():
        for input_name, x in fixture_inputs().items():
            torch.testing.assert_close(ours(x), fix.output(input_name, "logits"), **FIXTURE_TOL)
            torch.testing.assert_close(
                dense.forward_levels(x)[-1],
                fix.output(input_name, "hidden_state_last"),
                **FIXTURE_TOL,
            )


@pytest.mark.parametrize("name", ["nat_model_ls", "dinat_model_ls"])
def test_4_46_3_base_model_files_load_and_compute_the_same(name):
    fix = fixture(name)
    ours = fixture_model(fix, num_classes=5)
    report = load_pretrained(ours, fix.weights, allow_missing=True)
    assert sorted(report.missing) == ["head.bias", "head.weight"] and not report.unexpected
    with torch.no_grad():
        for input_name, x in fixture_inputs().items():
            last = ours.norm(ours.forward_levels(x)[-1])
            expected = fix.output(input_name, "last_hidden_state")
            torch.testing.assert_close(last, expected, **FIXTURE_TOL)
            torch.testing.assert_close(
                last.flatten(1, 2).mean(1), fix.output(input_name, "pooler_output"), **FIXTURE_TOL
            )


@pytest.mark.parametrize("name", NAT_BACKBONES)
def test_4_46_3_backbone_files_load_and_compute_the_same(name):
    fix = fixture(name)
    out_indices = [int(stage[len("stage") :]) - 1 for stage in fix.meta["out_features"]]
    ours = fixture_model(fix, num_classes=0, out_indices=out_indices)
    report = load_pretrained(ours, fix.weights)
    assert report.loaded == report.total
    assert not (report.missing or report.unexpected or report.expected_missing)
    with torch.no_grad():
        for input_name, x in fixture_inputs().items():
            features = ours(x)
            assert len(features) == len(out_indices)
            for i, feature in enumerate(features):
                expected = fix.output(input_name, f"feature_maps.{i}")
                torch.testing.assert_close(feature, expected, **FIXTURE_TOL)


@pytest.mark.parametrize("family", ["nat", "dinat"])
def test_mini_variants_are_transformers_4_46_3_default_configs(family):
    # The shi-labs/{nat,dinat}-mini-in1k-224 hub checkpoints use these defaults.
    hf = MANIFEST["default_configs"][family]
    variant = VARIANTS[f"{family}_mini"]
    assert hf["embed_dim"] == variant.embed_dim
    assert tuple(hf["depths"]) == variant.depths
    assert tuple(hf["num_heads"]) == variant.num_heads
    assert hf["mlp_ratio"] == variant.mlp_ratio
    assert hf["kernel_size"] == 7
    assert (hf["layer_scale_init_value"] or None) == variant.layer_scale
