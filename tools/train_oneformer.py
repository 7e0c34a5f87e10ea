"""Train / evaluate OneFormer's DiNAT models with this toolkit's backbone on Detectron2 (entry point of :mod:`nattk.mask2former.oneformer`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.mask2former.oneformer import cli

if __name__ == "__main__":
    sys.exit(run_tool(cli))
