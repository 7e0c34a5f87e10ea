"""Export a NAT / DiNAT backbone or a whole MMSegmentation segmentor to ONNX (entry point of :mod:`nattk.export_onnx`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.export_onnx import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
