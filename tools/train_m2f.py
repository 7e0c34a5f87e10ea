"""Train / evaluate Mask2Former with NAT/DiNAT/DiNAT_s backbones on Detectron2 (entry point of :mod:`nattk.mask2former.launch`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.mask2former.launch import cli

if __name__ == "__main__":
    sys.exit(run_tool(cli))
