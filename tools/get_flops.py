"""Parameters and FLOPs of a NAT / DiNAT / DiNAT_s model or of a shipped config (entry point of :mod:`nattk.get_flops`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.get_flops import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
