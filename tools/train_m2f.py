"""Train / evaluate Mask2Former with NAT/DiNAT/DiNAT_s backbones on Detectron2 (entry point of :mod:`nattk.mask2former.launch`)."""

from nattk.mask2former.launch import cli

if __name__ == "__main__":
    cli()
