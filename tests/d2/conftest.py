"""Tests that run in the Detectron2 environment (``.venv-d2``, ``tools/setup_d2_env.sh``).

``make test`` runs each file here in a pytest process of its own (Mask2Former and
OneFormer register the same builtin datasets, so one process can import only one of
them): ``python -m nattk.dev.run_tests``. Outside that environment every file skips with
the reason. (The folder is not called ``detectron2``: pytest puts ``tests/`` on
``sys.path``, where a folder of that name would shadow the package.)

With ``NATTK_D2_STRICT=1``, which the runner sets in CI whenever the upstream snapshots
exist, a skip is a failure: a missing detectron2 or checkout must never pass as green.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("NATTK_D2_STRICT") == "1"


def _refuse_skip(report) -> None:
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"skipped, and NATTK_D2_STRICT=1 allows no skip here: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped at import (no detectron2, no checkout) fails in strict mode."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped:
        _refuse_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped while it runs fails in strict mode."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        _refuse_skip(report)
