"""transformers' OneFormer, Mask2Former, UperNet and pipelines on NAT-family backbones.

Every model here is transformers' own class, built from its config with random weights
(the Hub is unreachable here), with either transformers' ``DinatBackbone`` on our
attention or this toolkit's :class:`~nattk.hf.NattkBackbone`.
"""

from __future__ import annotations

import pytest
import torch
from hf_helpers import (
    HAVE_TRANSFORMERS,
    SKIP_REASON,
    SKIP_REASON_5,
    TRANSFORMERS_5,
    hf_config_kwargs,
)

from nattk.backbones.variants import dilation_preset

pytestmark = [
    pytest.mark.skipif(not HAVE_TRANSFORMERS, reason=SKIP_REASON),
    pytest.mark.skipif(HAVE_TRANSFORMERS and not TRANSFORMERS_5, reason=SKIP_REASON_5),
]

STAGES = ["stage1", "stage2", "stage3", "stage4"]
NUM_LABELS = 5


@pytest.fixture(scope="module", autouse=True)
def toolkit_attention():
    from nattk.hf import use_toolkit_attention

    use_toolkit_attention()


def tiny_dinat_config():
    from transformers import DinatConfig

    return DinatConfig(**hf_config_kwargs("dinat", 1e-5, out_features=STAGES))


def tiny_nattk_config():
    from nattk.hf import NattkBackboneConfig

    return NattkBackboneConfig(
        variant="dinat_s_tiny",
        embed_dim=16,
        depths=[1, 2, 2, 1],
        num_heads=[1, 2, 2, 4],
        drop_path_rate=0.0,  # stochastic depth could drop a block's whole batch
        out_features=STAGES,
    )


def targets(batch: int, height: int, width: int, seed: int = 0):
    """Two instances per image: a random mask and its complement, classes 1 and 3."""
    generator = torch.Generator().manual_seed(seed)
    masks, classes = [], []
    for _ in range(batch):
        mask = (torch.rand(height, width, generator=generator) > 0.5).float()
        masks.append(torch.stack([mask, 1 - mask]))
        classes.append(torch.tensor([1, 3]))
    return masks, classes


def rpb_grads(model) -> list[torch.Tensor]:
    return [p.grad for n, p in model.named_parameters() if n.endswith("rpb")]


def train_steps(model, batch: dict, steps: int = 3) -> list[float]:
    """A few AdamW steps; checks every gradient is finite and the rpb tables learn."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                assert torch.isfinite(param.grad).all(), name
        grads = rpb_grads(model)
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    return losses


# --------------------------------------------------------------------------- training
def test_mask2former_with_a_nattk_backbone_trains():
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    from nattk.hf import NattkBackbone

    config = Mask2FormerConfig(
        backbone_config=tiny_nattk_config(),
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        num_queries=6,
        num_labels=NUM_LABELS,
        train_num_points=64,
    )
    model = Mask2FormerForUniversalSegmentation(config)
    assert isinstance(model.model.pixel_level_module.encoder, NattkBackbone)
    masks, classes = targets(2, 64, 96)
    batch = dict(pixel_values=torch.randn(2, 3, 64, 96), mask_labels=masks, class_labels=classes)
    train_steps(model, batch)


def test_oneformer_with_transformers_dinat_backbone_trains():
    from transformers import DinatBackbone, OneFormerConfig, OneFormerForUniversalSegmentation

    config = OneFormerConfig(
        backbone_config=tiny_dinat_config(),
        is_training=True,
        num_queries=6,
        num_labels=NUM_LABELS,
        hidden_dim=64,  # the text encoder's prompts are concatenated at this width
        conv_dim=64,
        mask_dim=64,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        query_dec_layers=1,
        task_seq_len=8,
        text_encoder_width=64,  # its heads are width // 64; equals hidden_dim
        text_encoder_context_length=8,
        text_encoder_num_layers=1,
        text_encoder_vocab_size=50,
        text_encoder_n_ctx=2,
        train_num_points=64,
    )
    model = OneFormerForUniversalSegmentation(config)
    assert isinstance(model.model.pixel_level_module.encoder, DinatBackbone)
    generator = torch.Generator().manual_seed(0)
    masks, classes = targets(2, 64, 96)
    batch = dict(
        pixel_values=torch.randn(2, 3, 64, 96, generator=generator),
        task_inputs=torch.randint(0, 50, (2, 8), generator=generator),
        text_inputs=torch.randint(0, 50, (2, 4, 8), generator=generator),  # queries - n_ctx
        mask_labels=masks,
        class_labels=classes,
    )
    train_steps(model, batch)


@pytest.mark.parametrize("backbone", ["dinat", "nattk"])
def test_upernet_trains(backbone):
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    backbone_config = tiny_dinat_config() if backbone == "dinat" else tiny_nattk_config()
    config = UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=32,
        auxiliary_channels=16,
        num_labels=NUM_LABELS,
    )
    model = UperNetForSemanticSegmentation(config)
    labels = torch.randint(0, NUM_LABELS, (2, 64, 96))
    train_steps(model, dict(pixel_values=torch.randn(2, 3, 64, 96), labels=labels), steps=2)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).logits.shape == (1, NUM_LABELS, 64, 96)


def test_mask2former_with_a_nattk_backbone_reloads_through_from_pretrained(tmp_path):
    # transformers builds the reloaded model on the meta device, then loads the weights.
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    config = Mask2FormerConfig(
        backbone_config=tiny_nattk_config(), num_queries=6, num_labels=NUM_LABELS
    )
    model = Mask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    loaded, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded.eval()(x)
    torch.testing.assert_close(a.masks_queries_logits, b.masks_queries_logits)


def test_backbone_weights_a_checkpoint_lacks_are_initialised_like_the_core(tmp_path):
    # A Mask2Former head saved without backbone weights (e.g. a backbone swapped in):
    # transformers' loader builds on the meta device and initialises what is missing
    # through _init_weights, which must give rpb noise and the variant's layer scale.
    from safetensors.torch import load_file, save_file
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    from nattk.hf import NattkBackboneConfig

    backbone = NattkBackboneConfig(
        variant="nat_small", embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
        out_features=STAGES,
    )  # fmt: skip
    config = Mask2FormerConfig(backbone_config=backbone, num_queries=6, num_labels=NUM_LABELS)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    state = load_file(str(path))
    save_file(
        {k: v for k, v in state.items() if ".backbone." not in k}, str(path), {"format": "pt"}
    )
    model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert any(k.endswith("gamma1") for k in info["missing_keys"])
    core = model.model.pixel_level_module.encoder.backbone
    for block in (core.levels[0].blocks[0], core.levels[2].blocks[1]):
        assert torch.equal(block.gamma1, torch.full_like(block.gamma1, 1e-5))
        assert torch.equal(block.gamma2, torch.full_like(block.gamma2, 1e-5))
        assert 0 < block.attn.rpb.std() < 0.1


# --------------------------------------------------------------------------- pipelines
def image(width: int = 96, height: int = 64):
    from PIL import Image

    pixels = torch.randint(0, 255, (height, width, 3), dtype=torch.uint8).numpy()
    return Image.fromarray(pixels)


def test_image_classification_pipeline_on_a_local_dinat_folder(tmp_path):
    from transformers import (
        DinatConfig,
        DinatForImageClassification,
        ViTImageProcessorPil,
        pipeline,
    )

    labels = {i: f"class_{i}" for i in range(NUM_LABELS)}
    config = DinatConfig(**hf_config_kwargs("dinat", None), id2label=labels)
    DinatForImageClassification(config).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={"height": 96, "width": 128}).save_pretrained(tmp_path)
    classify = pipeline("image-classification", model=str(tmp_path), device="cpu")
    results = classify(image(), top_k=3)
    assert len(results) == 3 and {r["label"] for r in results} <= set(labels.values())
    assert abs(sum(r["score"] for r in classify(image(), top_k=NUM_LABELS)) - 1) < 1e-4


def test_image_segmentation_pipeline_on_a_local_mask2former_folder(tmp_path):
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessorPil,
        pipeline,
    )

    labels = {i: f"class_{i}" for i in range(NUM_LABELS)}
    config = Mask2FormerConfig(backbone_config=tiny_nattk_config(), num_queries=6, id2label=labels)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path)
    Mask2FormerImageProcessorPil(size={"height": 64, "width": 96}).save_pretrained(tmp_path)
    segment = pipeline("image-segmentation", model=str(tmp_path), device="cpu")
    results = segment(image(width=80, height=60), subtask="semantic")
    assert results and all(r["mask"].size == (80, 60) for r in results)
    assert {r["label"] for r in results} <= set(labels.values())


# --------------------------------------------------------------------------- OneFormer-L
def oneformer_dinat_large_config():
    """The published ``shi-labs/oneformer_ade20k_dinat_large`` configuration.

    Backbone as in OneFormer's ``oneformer_dinat_large_bs16_160k.yaml`` (ADE20K, 640):
    embed 192, depths 3-4-18-5, heads 6-12-24-48, kernel 11, MLP ratio 2, drop path
    0.3, dilations ``[[1,20,1],[1,5,1,10],[1,2,1,3,1,4,1,5]*2+[1,5],[1,2,1,2,1]]``
    (the toolkit's ``ade20k640`` preset); 250 queries, 150 classes, inference config.
    """
    from transformers import DinatConfig, OneFormerConfig

    depths = [3, 4, 18, 5]
    backbone = DinatConfig(
        embed_dim=192,
        depths=depths,
        num_heads=[6, 12, 24, 48],
        kernel_size=11,
        mlp_ratio=2.0,
        drop_path_rate=0.3,
        dilations=dilation_preset("dinat", "ade20k640", depths),
        out_features=STAGES,
    )
    return OneFormerConfig(backbone_config=backbone, num_queries=250, num_labels=150)


@pytest.mark.slow
def test_oneformer_dinat_large_builds_reloads_and_segments(tmp_path):
    from transformers import OneFormerForUniversalSegmentation
    from transformers.models.oneformer.image_processing_pil_oneformer import (
        OneFormerImageProcessorPil,
    )

    config = oneformer_dinat_large_config()
    assert config.backbone_config.dilations[0] == [1, 20, 1]
    model = OneFormerForUniversalSegmentation(config).eval()
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 223e6 - 1) < 0.01, f"{params / 1e6:.2f}M parameters, published 223M"

    model.save_pretrained(tmp_path)
    del model
    model, info = OneFormerForUniversalSegmentation.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    model.eval()

    processor = OneFormerImageProcessorPil()
    for height, width in [(64, 96), (96, 64)]:
        with torch.no_grad():
            outputs = model(
                pixel_values=torch.randn(1, 3, height, width),
                task_inputs=torch.randint(0, 100, (1, config.task_seq_len)),
            )
        assert outputs.class_queries_logits.shape == (1, 250, 151)
        (semantic,) = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(height, width)]
        )
        assert semantic.shape == (height, width)
        assert 0 <= semantic.min() and semantic.max() < 150
