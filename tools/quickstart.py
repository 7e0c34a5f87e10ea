"""Train, evaluate and look at NAT/DiNAT models on generated toy data (entry point of :mod:`nattk.quickstart`)."""

import sys

from nattk.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
