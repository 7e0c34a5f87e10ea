"""Write a seeded synthetic dataset in a real on-disk format (COCO, ADE20K, Cityscapes) (entry point of :mod:`nattk.quickstart.make_toy_dataset`)."""

import sys

from nattk.cli_errors import run_tool
from nattk.quickstart.make_toy_dataset import main

if __name__ == "__main__":
    sys.exit(run_tool(main))
