"""The quickstart: train, evaluate and look at NAT/DiNAT models on generated toy data.

``tools/quickstart.py`` (and ``python -m nattk.quickstart``) runs :func:`main`. The
modules, one job each:

* :mod:`.cli`: the command line, one process per task, the results table;
* :mod:`.task`: one task in this process (data, evaluations, training, pictures);
* :mod:`.config`: the two tasks and how their configs are prepared for a run;
* :mod:`.display`: the progress bars of evaluation and training;
* :mod:`.progress`: plain-text progress bars with elapsed time and ETA;
* :mod:`.capture`: everything a process prints sent to a log file;
* :mod:`.toy_data`: seeded synthetic datasets in the real COCO / ADE20K / Cityscapes
  layouts (the tests train on them too);
* :mod:`.make_toy_dataset`: the command line of ``tools/make_toy_dataset.py``.

Importing this package imports neither MMEngine nor torch: :mod:`.toy_data` (NumPy and
OpenCV only) is also used where MMEngine is not installed (the Detectron2 tests).
"""

from __future__ import annotations


def main(argv=None) -> int:
    """Runs the quickstart (see :func:`nattk.quickstart.cli.main`)."""
    from nattk.quickstart.cli import main as run

    return run(argv)
