"""HF DinatModel (on this toolkit's attention) vs core DiNAT-T vs HF SwinModel on CPU (entry point of :mod:`nattk.benchmark_hf`)."""

import sys

from nattk.benchmark_hf import main

if __name__ == "__main__":
    sys.exit(main())
