"""nattk.backbones.weights: every layout read, written and told apart; published weights by name.

The Hugging Face layout is checked against what transformers' own classes hold and what
transformers 4.46.3 saved (the committed fixtures), never against this package's own
mapping alone.
"""

from __future__ import annotations

import collections
import logging
import pickle

import pytest
import torch
from hf_helpers import HAVE_TRANSFORMERS, MANIFEST, SKIP_REASON, fixture

from nattk.backbones import VARIANTS, create_model
from nattk.backbones.weights import (
    LAYOUTS,
    PRETRAINED,
    detect_layout,
    find_pretrained,
    huggingface,
    load_checkpoint_file,
    official,
    openmmlab_legacy,
    read_checkpoint,
    read_state_dict,
    toolkit,
    write_checkpoint,
    write_layout,
)
from nattk.backbones.weights import d2 as detectron2
from nattk.backbones.weights.hub import cached_file

SMALL = dict(depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], embed_dim=32)


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def dinat_state():
    torch.manual_seed(0)
    model = create_model("dinat_mini", layer_scale=1e-5, **SMALL)
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- layouts ------------------------------------------------------------------------


def _written_in_every_layout(state: dict) -> dict:
    return {
        "official": official.from_official(state),
        "toolkit": toolkit.from_official(state, source="x.pth"),
        "detectron2": detectron2.from_official(state),
        "openmmlab_legacy": openmmlab_legacy.from_official(state, {"mmcv_version": "1.4.0"}),
        "huggingface": huggingface.from_official(state, "dinat."),
    }


def test_every_layout_is_detected_and_reads_back_to_the_same_tensors(dinat_state):
    written = _written_in_every_layout(dinat_state)
    assert set(written) == set(LAYOUTS)
    for name, obj in written.items():
        assert detect_layout(obj) == name
        layout, state = read_checkpoint(obj)
        assert layout == name
        assert _equal(state, dinat_state), name


def test_the_layouts_tell_each_other_apart(dinat_state):
    """Each detector accepts its own layout only (official is the fallback for all)."""
    written = _written_in_every_layout(dinat_state)
    for name, module in LAYOUTS.items():
        if name == "official":
            continue
        accepted = [other for other, obj in written.items() if module.detect(obj)]
        assert accepted == [name]


def test_a_non_checkpoint_is_refused_by_name():
    with pytest.raises(ValueError, match="checkpoint is a list, not a state dict"):
        detect_layout([1, 2])
    with pytest.raises(ValueError, match="contains no tensors"):
        read_state_dict({"meta": {"epoch": 3}})


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason=SKIP_REASON)
def test_hugging_face_keys_are_those_of_transformers_own_dinat_classes(dinat_state):
    from hf_helpers import dinat_classes

    classes = dinat_classes()
    config = classes.Config(
        embed_dim=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        mlp_ratio=3.0,
        kernel_size=7,
        dilations=[[1], [1], [1, 2], [1]],
        layer_scale_init_value=1e-5,
        num_labels=1000,
    )
    theirs = classes.ForImageClassification(config).state_dict()
    ours = huggingface.from_official(dinat_state, "dinat.")
    assert set(ours) == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    config.out_features = ["stage1", "stage2", "stage3", "stage4"]
    config.out_indices = [1, 2, 3, 4]
    backbone = classes.Backbone(config).state_dict()
    dense = {k: v for k, v in dinat_state.items() if not official.CLASSIFIER_KEY.match(k)}
    dense.update(
        {f"norm{i}.{p}": torch.ones(32 * 2**i) for i in range(4) for p in ("weight", "bias")}
    )
    assert set(huggingface.from_official(dense)) == set(backbone)


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_what_transformers_4_46_3_saved_maps_there_and_back_unchanged(name):
    from safetensors.torch import load_file

    saved = load_file(str(fixture(name).weights))
    prefix = huggingface._model_prefix(saved)
    assert detect_layout(saved) == "huggingface"
    assert _equal(huggingface.from_official(huggingface.to_official(saved), prefix), saved)


def test_dinat_s_has_no_hugging_face_layout():
    state = create_model("dinat_s_tiny", depths=[1, 1, 2, 1], num_classes=0).state_dict()
    with pytest.raises(ValueError, match=r"'layers\.0\..*' has no counterpart in the Hugging Face"):
        huggingface.from_official(state)


def test_the_legacy_openmmlab_wrapping_becomes_mmengine_meta():
    checkpoint = {
        "state_dict": {"module.backbone.x": torch.zeros(2, dtype=torch.half)},
        "meta": {"CLASSES": ["a", "b"], "PALETTE": [(1, 2, 3)], "mmcv_version": "1.4.0"},
        "optimizer": {"state": {}},
    }
    converted = openmmlab_legacy.to_mmengine(checkpoint, "test")
    assert converted["state_dict"]["backbone.x"].dtype == torch.float32
    assert converted["meta"] == {
        "mmcv_version": "1.4.0",
        "dataset_meta": {"classes": ("a", "b"), "palette": [[1, 2, 3]]},
        "converted_by": "test",
    }
    with pytest.raises(ValueError, match="not an mmdet 2.x / mmseg 0.x checkpoint"):
        openmmlab_legacy.check({"model": {}}, "x.pth")


# --- files ---------------------------------------------------------------------------


def test_a_detectron2_pkl_is_read_without_unpickling_objects(dinat_state, tmp_path):
    path = write_checkpoint(detectron2.from_official(dinat_state), tmp_path / "w.pkl", "pickle")
    assert _equal(read_state_dict(path), dinat_state)

    evil = tmp_path / "evil.pkl"  # anything but arrays and containers must be refused
    evil.write_bytes(pickle.dumps({"model": {}, "x": collections.Counter("ab")}))
    with pytest.raises(ValueError, match=r"holds collections.Counter objects.*trust=True"):
        load_checkpoint_file(evil)


@pytest.mark.parametrize("suffix", [".pth", ".pkl", ".safetensors"])
def test_a_write_that_fails_its_check_leaves_the_existing_file(dinat_state, tmp_path, suffix):
    dst = tmp_path / f"existing{suffix}"
    dst.write_bytes(b"an older conversion")
    obj = detectron2.from_official(dinat_state) if suffix == ".pkl" else dinat_state
    file_format = {".pth": "torch", ".pkl": "pickle", ".safetensors": "safetensors"}[suffix]

    def refuse(written):
        assert written  # what was read back from the temporary file
        raise RuntimeError("does not read back")

    with pytest.raises(RuntimeError, match="does not read back"):
        write_checkpoint(obj, dst, file_format, verify=refuse)
    assert dst.read_bytes() == b"an older conversion"
    assert [p.name for p in tmp_path.iterdir()] == [dst.name]


# --- published weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, pretrained, kernel, tag",
    [
        ("dinat_tiny", True, None, "dinat_tiny.in1k_224"),
        ("dinat_tiny", "in1k", None, "dinat_tiny.in1k_224"),
        ("dinat_large", True, None, "dinat_large.in22k-ft-in1k_224"),
        ("dinat_large", "in22k", 11, "dinat_large.in22k_224_k11"),
        ("dinat_large", "in22k-ft-in1k_384", 11, "dinat_large.in22k-ft-in1k_384_k11"),
        ("dinat_s_large", "in22k-ft-in1k_384", None, "dinat_s_large.in22k-ft-in1k_384"),
        ("nat_base", "nat_base.in1k_224", None, "nat_base.in1k_224"),
    ],
)
def test_find_pretrained_picks_the_published_file(variant, pretrained, kernel, tag):
    assert find_pretrained(variant, pretrained, kernel) is PRETRAINED[tag]
    assert PRETRAINED[tag].layout in LAYOUTS


def test_find_pretrained_lists_the_tags_when_nothing_matches():
    with pytest.raises(KeyError, match=r"none of its published weights match.*dinat_tiny.in1k_224"):
        find_pretrained("dinat_tiny", "in22k")


def test_create_model_loads_published_weights_from_the_torch_hub_cache(
    tmp_path, monkeypatch, caplog
):
    """Offline: the file is already in the cache, as after a first download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    entry = PRETRAINED["dinat_mini.in1k_224"]
    torch.manual_seed(1)
    published = create_model("dinat_mini").state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"model": published}, cache / entry.url.rsplit("/", 1)[-1])

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded although the file is in the cache")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert cached_file(entry) == cache / "dinat_mini_in1k_224.pth"
    with caplog.at_level(logging.INFO):
        model = create_model("dinat_mini", pretrained="in1k")
    assert _equal(model.state_dict(), published)
    assert f"loaded {len(published)}/{len(published)} tensors" in caplog.text
    dense = create_model("dinat_mini", num_classes=0, pretrained=True)  # norm0..3 start fresh
    assert torch.equal(dense.levels[0].blocks[0].attn.rpb, published["levels.0.blocks.0.attn.rpb"])


def test_a_failed_download_names_the_url_and_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match=r"could not download nat_mini.in1k_224 from https://"):
        create_model("nat_mini", pretrained=True)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("kernel", [None, 11])
def test_every_variant_has_one_default_published_file(name, kernel):
    weights = find_pretrained(name, True, kernel)
    assert weights.variant == name
    # An ImageNet-1k classifier when the variant has one, whatever the kernel.
    own = {w.pretraining for w in PRETRAINED.values() if w.variant == name}
    assert weights.pretraining == ("in1k" if "in1k" in own else "in22k-ft-in1k")


def test_a_tag_of_another_variant_is_refused_before_any_download():
    with pytest.raises(KeyError, match="holds dinat_large weights, not dinat_tiny"):
        find_pretrained("dinat_tiny", "dinat_large.in22k_224_k11")


# --- the layout through the real classes and readers --------------------------------


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason=SKIP_REASON)
@pytest.mark.parametrize("layer_scale", [None, 1e-5])
def test_official_weights_in_the_hugging_face_layout_compute_what_ours_do(layer_scale):
    """A swapped q/k/v or norm1/norm2 would load (same keys and shapes) and differ here."""
    from hf_helpers import INPUT_SHAPE, dinat_classes, randomise, small_config, small_model

    classes = dinat_classes()
    ours = randomise(small_model("dinat", layer_scale, num_classes=5))
    theirs = classes.ForImageClassification(
        small_config(classes, "dinat", layer_scale, num_labels=5)
    ).eval()
    theirs.load_state_dict(huggingface.from_official(ours.state_dict(), "dinat."), strict=True)
    x = torch.randn(INPUT_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x), atol=1e-5, rtol=1e-5)


def test_the_prefix_picks_the_keys_before_the_layout_is_told():
    """Keys outside the prefix (here HF-looking ``encoder.*`` ones) play no part."""
    state = create_model("dinat_mini", num_classes=0, **SMALL).state_dict()
    wrapped = {
        "model": {**{f"encoder.{k}": v for k, v in state.items()}, "decoder.x": torch.ones(1)}
    }
    assert detect_layout(wrapped, prefix="encoder") == "official"
    assert _equal(read_state_dict(wrapped, prefix="encoder"), state)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("suffix", [".pth", ".pkl", ".bin"])
def test_each_layout_written_reads_back_through_the_readers_users_get(
    dinat_state, tmp_path, layout, suffix
):
    options = {
        "huggingface": {"model_prefix": "dinat."},
        "openmmlab_legacy": {"meta": {"mmcv_version": "1.4.0"}},
    }.get(layout, {})
    path = write_layout(dinat_state, layout, tmp_path / f"w{suffix}", **options)
    assert detect_layout(load_checkpoint_file(path)) == layout
    assert _equal(read_state_dict(path), dinat_state)


def test_safetensors_take_flat_layouts_and_refuse_nested_ones(dinat_state, tmp_path):
    path = write_layout(dinat_state, "official", tmp_path / "w.safetensors", "safetensors")
    assert _equal(read_state_dict(path), dinat_state)
    with pytest.raises(ValueError, match="holds flat tensors only"):
        write_layout(dinat_state, "toolkit", tmp_path / "t.safetensors", "safetensors")
    assert not (tmp_path / "t.safetensors").exists()


def test_a_torch_file_named_pkl_still_loads(dinat_state, tmp_path):
    torch.save({"state_dict": dinat_state}, tmp_path / "converted.pkl")
    assert _equal(read_state_dict(tmp_path / "converted.pkl"), dinat_state)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pkl_files_of_every_pickle_protocol_are_read_without_trust(tmp_path, protocol):
    import numpy as np

    arrays = collections.OrderedDict(
        a=np.arange(6, dtype=np.float32).reshape(2, 3),
        b=np.ones(3, np.float16),
        c=np.arange(4, dtype=np.int64)[::2],  # not contiguous
    )
    path = tmp_path / "zoo.pkl"
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "x"}, protocol=protocol))
    state = read_state_dict(path)
    assert {k: v.dtype for k, v in state.items()} == {
        "a": torch.float32, "b": torch.float16, "c": torch.int64
    }  # fmt: skip
    assert torch.equal(state["c"], torch.tensor([0, 2]))
