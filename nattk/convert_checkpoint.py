"""Convert NAT / DiNAT / DiNAT_s weights between layouts.

Reads an official ``.pth`` (flat, ``model``/``state_dict`` wrapped, ``module.`` or
``backbone.`` prefixed, or a whole detector/segmentor checkpoint) or Hugging Face
weights of ``Nat``/``Dinat`` ``Model``, ``ForImageClassification`` or ``Backbone``
(``pytorch_model.bin`` or ``model.safetensors``). Any file ending in ``.safetensors`` is
read with the ``safetensors`` package (no pickle); every other file with
``torch.load(weights_only=True)``. It writes either

* ``--to toolkit`` (default): ``{"state_dict": <official key layout>, "meta": ...}``,
  loadable by every adapter of this toolkit (``init_cfg``/``pretrained``), or
* ``--to d2``: a Detectron2 ``.pkl`` (``{"model": numpy arrays, "__author__": ...,
  "matching_heuristics": True}``) for the Mask2Former adapter, or
* ``--to hf``: a Hugging Face model folder (``config.json`` + ``model.safetensors``) of
  :class:`nattk.hf.NattkBackbone`, read by ``NattkBackbone.from_pretrained`` (needs
  ``--variant``; transformers >= 5 installed).

Examples::

    python tools/convert_checkpoint.py dinat_large_in22k_224.pth dinat_large_in22k_224.pkl --to d2
    python tools/convert_checkpoint.py hf_dinat_mini/pytorch_model.bin dinat_mini.pth
    python tools/convert_checkpoint.py hf_dinat_mini/model.safetensors dinat_mini.pkl --to d2
    python tools/convert_checkpoint.py dinat_large_in22k_224.pth dinat_large_11x11.pth --kernel-size 11
    python tools/convert_checkpoint.py dinat_large_in22k_224.pth hf_dinat_large/ --to hf \
        --variant dinat_large --dilations ade20k640 --kernel-size 11
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nattk.backbones.weights import (
    checkpoint_kernel_size,
    drop_classifier,
    read_state_dict,
    resize_rpb_tables,
    write_layout,
)
from nattk.backbones.weights.files import atomic_output


def convert(
    src: str, kernel_size: int | None = None, keep_classifier: bool = True, trust: bool = False
) -> dict:
    """Returns the official-layout state dict of ``src``, optionally with resized rpb.

    ``trust`` unpickles arbitrary objects (only for files from a trusted source).
    """
    state = read_state_dict(src, trust=trust)
    if not keep_classifier:
        state = drop_classifier(state)
    return state if kernel_size is None else resize_rpb_tables(state, kernel_size)


def _write(args, state: dict, dst: Path) -> dict:
    """Writes ``state`` in the ``--to`` format; returns what reads back from ``dst``.

    An existing ``dst`` is replaced only once the new output was written and read back.
    """
    if args.to == "hf":  # a transformers model folder: the Hugging Face adapter writes it
        from nattk.hf.backbone import NattkBackboneConfig, save_backbone_folder

        config = NattkBackboneConfig(
            variant=args.variant,
            dilations=args.dilations,
            kernel_size=args.kernel_size or checkpoint_kernel_size(state),
            out_features=args.out_features,
        )
        with atomic_output(dst, folder=True) as staging:
            folder = save_backbone_folder(state, staging, config)
            return read_state_dict(folder / "model.safetensors")
    options = {"source": str(args.src)} if args.to == "toolkit" else {}
    write_layout(state, "detectron2" if args.to == "d2" else args.to, dst, **options)
    return state


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "src", help="input checkpoint (.pth, .bin, or .safetensors read without pickle)"
    )
    parser.add_argument("dst", help="output file")
    parser.add_argument("--to", choices=["toolkit", "d2", "hf"], default="toolkit")
    parser.add_argument(
        "--kernel-size", type=int, default=None, help="resize rpb for this kernel (e.g. 11)"
    )
    parser.add_argument(
        "--drop-classifier", action="store_true", help="drop norm.*/head.* (default for --to d2)"
    )
    parser.add_argument(
        "--trust", action="store_true", help="load with weights_only=False (trusted files only)"
    )
    parser.add_argument("--variant", help="--to hf: published variant, e.g. dinat_large")
    parser.add_argument(
        "--dilations", default="imagenet224", help="--to hf: dilation preset (DiNAT, DiNAT_s)"
    )
    parser.add_argument(
        "--out-features",
        nargs="+",
        default=["stage1", "stage2", "stage3", "stage4"],
        help="--to hf: the stages the backbone returns",
    )
    args = parser.parse_args(argv)
    if args.to == "hf" and not args.variant:
        parser.error("--to hf needs --variant (e.g. --variant dinat_large)")

    keep = not (args.drop_classifier or args.to == "d2")
    state = convert(args.src, args.kernel_size, keep_classifier=keep, trust=args.trust)
    dst = Path(args.dst)
    state = _write(args, state, dst)
    print(
        f"wrote {len(state)} tensors ({sum(v.numel() for v in state.values()):,} values) to {dst}",
        file=sys.stderr,
    )
