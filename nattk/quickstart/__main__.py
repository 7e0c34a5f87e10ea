"""``python -m nattk.quickstart``: the multi-task quickstart runs each task this way."""

import sys

from nattk.quickstart.cli import main

if __name__ == "__main__":
    sys.exit(main())
