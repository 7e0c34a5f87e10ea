"""Evaluate a checkpoint on an MMDetection or MMSegmentation config (entry point of :mod:`nattk.test`)."""

from nattk.test import main

if __name__ == "__main__":
    main()
