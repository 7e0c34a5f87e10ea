"""Convert a published mmdet 2.x / mmseg 0.x NAT / DiNAT checkpoint for this toolkit (entry point of :mod:`nattk.convert_legacy_checkpoint`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.convert_legacy_checkpoint import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
