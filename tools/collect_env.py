"""Print the versions and capabilities of the toolkit's environment (entry point of :mod:`nattk.collect_env`)."""

import sys

from nattk.collect_env import main

if __name__ == "__main__":
    sys.exit(main())
