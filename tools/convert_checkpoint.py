"""Convert NAT / DiNAT / DiNAT_s weights between layouts (entry point of :mod:`nattk.convert_checkpoint`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
