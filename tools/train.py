"""Train an MMDetection or MMSegmentation config (entry point of :mod:`nattk.train`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.train import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
