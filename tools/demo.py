"""Draw a model's predictions on one image (entry point of :mod:`nattk.demo`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.demo import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
