"""The test suite in both environments: what ``make test`` and ``make test-fast`` run.

1. The main suite in ``.venv`` (this interpreter): ``tests/`` but ``tests/d2/``.
2. The Detectron2 suite in ``.venv-d2``: ``tools/setup_d2_env.sh`` makes or checks the
   environment, then each ``tests/d2/test_*.py`` runs in a pytest process of its
   own (Mask2Former and OneFormer register the same builtin datasets).

Then one summary line per environment and a last ``total:`` line. When no upstream
source of detectron2 / Mask2Former / OneFormer can be found, the Detectron2 part is
skipped with one line saying how to enable it, except in CI: with ``CI=true`` and the
snapshots present, the environment must build and every Detectron2 test must run
(``NATTK_D2_STRICT=1``: a skip there is a failure, ``tests/d2/conftest.py``).

Usage: ``python -m nattk.dev.run_tests [--fast] [--only main|detectron2] [PYTEST_ARGS...]``.
``NATTK_D2=0`` leaves the Detectron2 part out (said in its line; refused in CI).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from nattk.dev.upstream_sources import UPSTREAMS, default_vendor_dir

ROOT = Path(__file__).resolve().parents[2]
D2_TESTS = ROOT / "tests" / "d2"
REPORTS = ROOT / "build" / "test-reports"
SETUP_D2 = ROOT / "tools" / "setup_d2_env.sh"
#: ``tools/setup_d2_env.sh``'s exit status when an upstream source was found nowhere.
SOURCES_MISSING = 3


@dataclass
class Outcome:
    """What one environment's run came to.

    Attributes:
        name: ``main`` or ``detectron2``.
        label: The environment, for the summary line.
        passed, failed, skipped: Test counts (errors count as failed).
        seconds: Wall time of its test processes.
        problems: Why the environment failed beyond its tests (a crash, no test run,
            a skip where none is allowed).
        skipped_because: Set when the whole environment did not run.
    """

    name: str
    label: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    problems: list = field(default_factory=list)
    skipped_because: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems

    def line(self) -> str:
        if self.skipped_because:
            return f"{self.name}: skipped: {self.skipped_because}"
        head = f"{self.name} ({self.label})" if self.label else self.name
        text = (
            f"{head}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped "
            f"in {self.seconds:.0f} s"
        )
        return text + "".join(f"; {problem}" for problem in self.problems)


def read_junit(path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) from a pytest JUnit XML report; errors count as failed."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failed = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def run_pytest(
    outcome: Outcome,
    python: str,
    targets: Sequence[str],
    report: Path,
    pytest_args: Sequence[str],
    env: Optional[dict] = None,
) -> None:
    """Runs one pytest process and adds its counts to ``outcome``."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    command = [python, "-m", "pytest", "-q", *targets, f"--junit-xml={report}", *pytest_args]
    start = time.monotonic()
    returncode = subprocess.run(command, cwd=ROOT, env=env).returncode
    outcome.seconds += time.monotonic() - start
    if not report.is_file():
        outcome.problems.append(f"pytest {' '.join(targets)} exited {returncode} with no report")
        return
    passed, failed, skipped = read_junit(report)
    outcome.passed, outcome.failed, outcome.skipped = (
        outcome.passed + passed,
        outcome.failed + failed,
        outcome.skipped + skipped,
    )
    deselecting = "-m" in pytest_args or "-k" in pytest_args
    if passed + failed + skipped == 0 and not deselecting:  # a marker may select none
        outcome.problems.append(f"no test ran in {' '.join(targets)}")
    elif returncode != 0 and not failed and not (returncode == 5 and (skipped or deselecting)):
        # 5 with skips: every test of the file skipped, which the counts show.
        outcome.problems.append(f"pytest {' '.join(targets)} exited {returncode}")


def torch_version(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "torch not installed"


def vendor_snapshots_present() -> bool:
    """Whether a snapshot folder is where CI has it (or at ``$NATTK_VENDOR_DIR``).

    Any snapshot counts: a folder holding another commit's archives than the pins name
    must fail in CI (the pins moved without their snapshots), not skip.
    """
    vendor = default_vendor_dir()
    names = {upstream.name for upstream in UPSTREAMS}
    return vendor.is_dir() and any(
        path.name.split("-", 1)[0] in names for path in vendor.glob("*.tar.gz")
    )


def strict_detectron2() -> bool:
    """CI with snapshots at hand: the Detectron2 suite must run whole."""
    return os.environ.get("CI", "").lower() == "true" and vendor_snapshots_present()


def run_main(pytest_args: Sequence[str]) -> Outcome:
    outcome = Outcome("main", label=f".venv, torch {torch_version(sys.executable)}")
    targets = ["tests", f"--ignore={D2_TESTS.relative_to(ROOT)}"]
    run_pytest(outcome, sys.executable, targets, REPORTS / "main.xml", pytest_args)
    return outcome


def run_detectron2(pytest_args: Sequence[str], strict: bool) -> Outcome:
    outcome = Outcome("detectron2")
    if os.environ.get("NATTK_D2") == "0":
        if strict:
            outcome.problems.append("NATTK_D2=0 is refused in CI: the snapshots are present")
            return outcome
        outcome.skipped_because = "NATTK_D2=0 (unset it to run the Detectron2 suite)"
        return outcome
    print("[run_tests] Detectron2 environment: tools/setup_d2_env.sh", flush=True)
    setup = subprocess.run(["bash", str(SETUP_D2)], cwd=ROOT)
    if setup.returncode == SOURCES_MISSING and not strict:
        outcome.skipped_because = (
            "detectron2 / Mask2Former / OneFormer sources not found (lines above); set "
            "DETECTRON2_SRC, MASK2FORMER_ROOT, ONEFORMER_ROOT, clone them next to the "
            "toolkit, or run once with network access (docs/detectron2_mask2former.md#install)"
        )
        return outcome
    if setup.returncode != 0:
        outcome.problems.append(f"tools/setup_d2_env.sh failed (exit {setup.returncode})")
        return outcome
    venv = Path(os.environ.get("NATTK_D2_VENV", ".venv-d2"))
    python = str(venv if venv.is_absolute() else ROOT / venv) + "/bin/python"
    outcome.label = f"{venv}, torch {torch_version(python)}"
    env = dict(os.environ, NATTK_D2_STRICT="1" if strict else "0")
    env.pop("VIRTUAL_ENV", None)
    files = sorted(D2_TESTS.glob("test_*.py"))
    if not files:
        outcome.problems.append(f"no test file in {D2_TESTS.relative_to(ROOT)}")
    for file in files:
        report = REPORTS / f"detectron2-{file.stem}.xml"
        run_pytest(outcome, python, [str(file.relative_to(ROOT))], report, pytest_args, env)
    if strict and outcome.skipped:
        outcome.problems.append(f"{outcome.skipped} skipped where CI allows none")
    return outcome


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument("--fast", action="store_true", help="only the tests not marked slow")
    parser.add_argument("--only", choices=["main", "detectron2"], default=None)
    args, pytest_args = parser.parse_known_args(argv)
    if args.fast:
        pytest_args = ["-m", "not slow", *pytest_args]
    strict = strict_detectron2()
    outcomes = []
    if args.only in (None, "main"):
        outcomes.append(run_main(pytest_args))
    if args.only in (None, "detectron2"):
        outcomes.append(run_detectron2(pytest_args, strict))
    print()
    for outcome in outcomes:
        print(outcome.line())
    passed = sum(outcome.passed for outcome in outcomes)
    # A problem beyond the tests (a setup that failed, a crash, a forbidden skip) counts
    # as one failure, so that the last line never reads green while the run is not.
    failed = sum(outcome.failed + len(outcome.problems) for outcome in outcomes)
    skipped = sum(outcome.skipped for outcome in outcomes)
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if all(outcome.ok for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
