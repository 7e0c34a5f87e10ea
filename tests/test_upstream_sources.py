"""Where the Detectron2 environment takes its upstream sources from, and the test runner's rules.

Runs in the main environment: ``nattk/dev/upstream_sources.py`` is standard library only,
``tests/d2/conftest.py``'s strict mode is checked on a throwaway test file, and
the launchers' lookup of the recorded checkout needs no detectron2.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from nattk.dev import run_tests, upstream_sources
from nattk.dev.upstream_sources import (
    EXIT_NOT_FOUND,
    MASK2FORMER,
    UPSTREAMS,
    PinnedUpstream,
    SourceError,
    resolve,
)
from nattk.mask2former import upstream as adapter_upstream

REPO = Path(__file__).resolve().parents[1]
FAKE = PinnedUpstream(
    name="Fake",
    env="NATTK_TEST_FAKE_ROOT",
    marker="fake/__init__.py",
    url="file:///nonexistent/fake",
    commit="0" * 40,
    sha256="0" * 64,
)


def _tree(root: Path, text: str = "x = 1\n") -> Path:
    (root / "fake").mkdir(parents=True)
    (root / "fake" / "__init__.py").write_text(text)
    return root


def _snapshot(tmp_path: Path, upstream: PinnedUpstream) -> PinnedUpstream:
    """A ``git archive``-style snapshot of a fake tree in tmp/vendor; the pin with its hash."""
    tree = _tree(tmp_path / "src" / upstream.name)
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    with tarfile.open(vendor / upstream.archive, "w:gz") as tar:
        tar.add(tree, arcname=upstream.name)
    digest = hashlib.sha256((vendor / upstream.archive).read_bytes()).hexdigest()
    return replace(upstream, sha256=digest)


def _git_repo(path: Path) -> str:
    _tree(path)
    run = lambda *a: subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No sibling clones or user paths leak in: the toolkit root is a folder of tmp."""
    monkeypatch.setattr(upstream_sources, "TOOLKIT_ROOT", tmp_path / "toolkit")
    for upstream in (*UPSTREAMS, FAKE):
        monkeypatch.delenv(upstream.env, raising=False)
    return tmp_path


def test_snapshot_is_checked_unpacked_outside_and_named(isolated):
    pin = _snapshot(isolated, FAKE)
    source = resolve(pin, isolated / "vendor", isolated / "build")
    assert source.origin == "vendor" and source.revision == pin.commit
    assert source.path == isolated / "build" / "Fake-000000000000"
    assert (source.path / "fake/__init__.py").read_text() == "x = 1\n"
    assert "vendor" in source.log_line() and "sha256 verified" in source.log_line()
    # No staging folder is left behind.
    assert [p.name for p in (isolated / "build").iterdir()] == ["Fake-000000000000"]


def test_snapshot_with_another_hash_is_refused_even_when_unpacked(isolated):
    pin = _snapshot(isolated, FAKE)
    resolve(pin, isolated / "vendor", isolated / "build")
    with pytest.raises(SourceError, match=r"Fake-0000000.tar.gz has sha256 .* expected 0{64}"):
        resolve(replace(pin, sha256="0" * 64), isolated / "vendor", isolated / "build")


def test_user_path_comes_first_and_a_wrong_one_is_an_error(isolated, monkeypatch):
    pin = _snapshot(isolated, FAKE)
    mine = _tree(isolated / "mine", "x = 2\n")
    monkeypatch.setenv(FAKE.env, str(mine))
    source = resolve(pin, isolated / "vendor", isolated / "build")
    assert (source.origin, source.path) == ("env", mine.resolve())
    assert source.revision.startswith("tree-")  # no git: keyed by its files
    monkeypatch.setenv(FAKE.env, str(isolated / "nowhere"))
    with pytest.raises(
        SourceError, match=r"\$NATTK_TEST_FAKE_ROOT=.*nowhere is not a Fake checkout"
    ):
        resolve(pin, isolated / "vendor", isolated / "build")


def test_sibling_clone_comes_before_the_snapshot(isolated):
    pin = _snapshot(isolated, FAKE)
    commit = _git_repo(isolated / "Fake")  # ../Fake next to tmp/toolkit
    source = resolve(pin, isolated / "vendor", isolated / "build")
    assert (source.origin, source.revision) == ("sibling", commit)
    (isolated / "Fake" / "fake" / "__init__.py").write_text("x = 3\n")
    dirty = resolve(pin, isolated / "vendor", isolated / "build").revision
    assert dirty.startswith(commit + "+dirty-")  # a changed checkout builds its own wheel


def test_clone_of_the_pinned_commit_when_nothing_else_exists(isolated):
    remote = isolated / "remote"
    pin = replace(FAKE, commit=_git_repo(remote))
    source = resolve(pin, isolated / "vendor", isolated / "build", clone_url=str(remote))
    assert source.origin == "clone" and source.revision == pin.commit
    assert (source.path / "fake/__init__.py").is_file()
    assert resolve(FAKE, isolated / "vendor", isolated / "build2") is None  # unreachable URL
    assert not (isolated / "build2").exists() or not any((isolated / "build2").iterdir())


def test_command_line_says_how_to_enable_what_is_missing(isolated, capsys):
    status = upstream_sources.main(
        ["--vendor-dir", str(isolated / "empty"), "--build-dir", str(isolated / "build")]
    )
    # detectron2's public URL cannot be reached from the test machines.
    if status == 0:
        pytest.skip("the network reached GitHub: the clone step succeeded")
    assert status == EXIT_NOT_FOUND
    err = capsys.readouterr().err
    for upstream in UPSTREAMS:
        assert f"{upstream.name} not found: set ${upstream.env}" in err


def test_pins_are_the_snapshots_of_shared_vendor():
    """The pinned commits and hashes are those of ../shared/vendor/README.md, when present."""
    readme = upstream_sources.default_vendor_dir() / "README.md"
    if not readme.is_file():
        pytest.skip(f"no {readme}")
    text = readme.read_text()
    for upstream in UPSTREAMS:
        assert f"{upstream.sha256}  {upstream.archive}" in text, upstream.name
        assert re.search(rf"`{re.escape(upstream.archive)}`.*{upstream.commit}", text)


def test_launchers_find_the_checkout_the_environment_recorded(tmp_path, monkeypatch):
    checkout = tmp_path / "M2F"
    (checkout / "mask2former").mkdir(parents=True)
    (checkout / "mask2former" / "__init__.py").write_text("")
    (checkout / "train_net.py").write_text("")
    (tmp_path / adapter_upstream.RECORD_NAME).write_text(
        json.dumps({"Mask2Former": {"path": str(checkout)}})
    )
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.delenv(MASK2FORMER.env, raising=False)
    if adapter_upstream.MASK2FORMER.default_root.exists():
        pytest.skip("a sibling ../Mask2Former exists and comes first")
    assert adapter_upstream.find_checkout() == checkout
    (tmp_path / adapter_upstream.RECORD_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="make env-d2"):
        adapter_upstream.find_checkout()


_SKIPS_AT_IMPORT = """
import pytest
pytest.importorskip("no_such_module_anywhere")
def test_never():
    pass
"""
_SKIPS_WHILE_RUNNING = """
import pytest
def test_runs():
    pass
def test_skips():
    pytest.skip("no checkout")
"""


def _run_with_detectron2_conftest(tmp_path: Path, test_text: str, strict: bool):
    shutil.copy(REPO / "tests" / "d2" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(test_text)
    report = tmp_path / "report.xml"
    env = {"NATTK_D2_STRICT": "1" if strict else "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
         f"--junit-xml={report}", f"--rootdir={tmp_path}"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    return done, run_tests.read_junit(report)


@pytest.mark.parametrize("strict", [False, True])
def test_detectron2_conftest_fails_a_module_skip_in_strict_mode(tmp_path, strict):
    done, (passed, failed, skipped) = _run_with_detectron2_conftest(
        tmp_path, _SKIPS_AT_IMPORT, strict
    )
    if strict:  # a collection error: pytest stops with status 2
        assert done.returncode == 2 and (failed, skipped) == (1, 0), done.stdout
        assert "NATTK_D2_STRICT=1 allows no skip here: Skipped: could not import" in done.stdout
    else:  # status 5: no test ran, the module skipped
        assert done.returncode == 5 and (failed, skipped) == (0, 1), done.stdout


@pytest.mark.parametrize("strict", [False, True])
def test_detectron2_conftest_fails_a_test_skip_in_strict_mode(tmp_path, strict):
    done, counts = _run_with_detectron2_conftest(tmp_path, _SKIPS_WHILE_RUNNING, strict)
    if strict:
        assert done.returncode == 1 and counts == (1, 1, 0), done.stdout
        assert "allows no skip here: Skipped: no checkout" in done.stdout
    else:
        assert done.returncode == 0 and counts == (1, 0, 1), done.stdout


def test_runner_is_strict_only_in_ci_with_the_snapshots(tmp_path, monkeypatch):
    monkeypatch.setenv("NATTK_VENDOR_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert not run_tests.strict_detectron2()
    (tmp_path / "detectron2-0123456.tar.gz").write_bytes(b"")  # not the pinned commit's
    assert run_tests.strict_detectron2()  # pins moved without their snapshots: fail, not skip
    monkeypatch.setenv("CI", "false")
    assert not run_tests.strict_detectron2()


def test_summary_lines_count_problems_as_failures(capsys, monkeypatch):
    main = run_tests.Outcome("main", label=".venv", passed=3, skipped=1, seconds=2)
    broken = run_tests.Outcome("detectron2", problems=["tools/setup_d2_env.sh failed (exit 1)"])
    monkeypatch.setattr(run_tests, "run_main", lambda args: main)
    monkeypatch.setattr(run_tests, "run_detectron2", lambda args, strict: broken)
    assert run_tests.main([]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3] == "main (.venv): 3 passed, 0 failed, 1 skipped in 2 s"
    assert lines[-2].startswith("detectron2: 0 passed, 0 failed") and "exit 1" in lines[-2]
    assert lines[-1] == "total: 3 passed, 1 failed, 1 skipped"


_STUB_PYTEST = """#!/bin/sh
# Stands in for `python -m pytest ...`: copies $STUB_REPORT to --junit-xml, exits $STUB_RC.
for arg in "$@"; do
  case "$arg" in --junit-xml=*) [ -n "$STUB_REPORT" ] && cp "$STUB_REPORT" "${arg#--junit-xml=}";; esac
done
exit "$STUB_RC"
"""


def _junit(tmp_path: Path, tests: int, failures: int = 0, errors: int = 0, skipped: int = 0):
    path = tmp_path / f"junit-{tests}-{failures}-{errors}-{skipped}.xml"
    path.write_text(
        f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" '
        f'errors="{errors}" skipped="{skipped}" time="1.0"/></testsuites>'
    )
    return path


@pytest.mark.parametrize(
    "returncode, counts, expected, problem",
    [
        (0, dict(tests=3), (3, 0, 0), None),
        (1, dict(tests=3, failures=1, errors=1), (1, 2, 0), None),
        (5, dict(tests=1, skipped=1), (0, 0, 1), None),  # every test of the file skipped
        (5, dict(tests=0), (0, 0, 0), "no test ran"),
        (5, dict(tests=0), (0, 0, 0), "-m"),  # every test deselected by a marker: fine
        (2, dict(tests=2), (2, 0, 0), "exited 2"),  # interrupted, nothing counted as failed
        (1, None, (0, 0, 0), "with no report"),  # crashed before writing its report
    ],
)  # fmt: skip
def test_runner_counts_and_flags_what_pytest_leaves(
    tmp_path, returncode, counts, expected, problem
):
    stub = tmp_path / "python"
    stub.write_text(_STUB_PYTEST)
    stub.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "STUB_RC": str(returncode)}
    env["STUB_REPORT"] = str(_junit(tmp_path, **counts)) if counts else ""
    outcome = run_tests.Outcome("detectron2")
    args = ["-m", "not slow"] if problem == "-m" else []
    run_tests.run_pytest(outcome, str(stub), ["tests/d2/x.py"], tmp_path / "r.xml", args, env)
    assert (outcome.passed, outcome.failed, outcome.skipped) == expected
    if problem == "-m":
        assert outcome.problems == [] and outcome.ok
    elif problem is None:
        assert outcome.problems == [] and outcome.ok == (expected[1] == 0)
    else:
        assert len(outcome.problems) == 1 and problem in outcome.problems[0]
        assert not outcome.ok


@pytest.mark.parametrize("strict", [False, True])
def test_missing_sources_skip_with_a_line_but_fail_in_ci(tmp_path, monkeypatch, strict):
    setup = tmp_path / "setup_d2_env.sh"
    setup.write_text("exit 3\n")  # what tools/setup_d2_env.sh says when a source is missing
    monkeypatch.setattr(run_tests, "SETUP_D2", setup)
    monkeypatch.delenv("NATTK_D2", raising=False)
    outcome = run_tests.run_detectron2([], strict)
    if strict:
        assert not outcome.ok and "setup_d2_env.sh failed (exit 3)" in outcome.problems[0]
    else:
        assert outcome.ok and "sources not found" in outcome.line()
        assert outcome.line().startswith("detectron2: skipped: ")
