"""Evaluate a checkpoint on an MMDetection or MMSegmentation config (entry point of :mod:`nattk.test`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.test import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
