"""The tools end a refused input with one ``error: ...`` line and status 2; --debug shows more."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nattk.cli_errors import NattkError, run_tool

REPO = Path(__file__).resolve().parents[1]


def _raising(error: BaseException):
    def main(argv):
        main.argv = argv
        raise error

    return main


@pytest.mark.parametrize(
    "error, line",
    [
        (ValueError("unknown model 'dinat_huge'"), "error: unknown model 'dinat_huge'"),
        (FileNotFoundError(2, "No such file or directory", "a.py"), "error: No such file or directory: a.py"),
        (ValueError("map too small\n  for kernel 7"), "error: map too small for kernel 7"),
        (NattkError("does not fit:\n  missing: a.*"), "error: does not fit:\n  missing: a.*"),
        (KeyError("DiNATT is not in the mmdet::model registry"), "error: DiNATT is not in the mmdet::model registry"),
    ],
)  # fmt: skip
def test_a_user_error_is_one_line_and_status_2(capsys, error, line):
    assert run_tool(_raising(error), ["cfg.py"]) == 2
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("stage5"), TypeError("x")])
def test_anything_else_keeps_its_traceback(error):
    with pytest.raises(type(error)):
        run_tool(_raising(error), [])


def test_debug_shows_the_traceback_and_is_not_passed_on(monkeypatch):
    main = _raising(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        run_tool(main, ["cfg.py", "--debug"])
    assert main.argv == ["cfg.py"]
    monkeypatch.setenv("NATTK_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        run_tool(main, ["cfg.py"])


def test_status_of_main_is_returned():
    assert run_tool(lambda argv: 1, []) == 1
    assert run_tool(lambda argv: Path("x.png"), []) == 0


def _tool(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow  # a subprocess or an export: seconds
def test_converter_with_a_missing_checkpoint_says_so_in_one_line(tmp_path):
    done = _tool("tools/convert_checkpoint.py", str(tmp_path / "none.pth"), str(tmp_path / "o.pth"))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: no such checkpoint: {tmp_path / 'none.pth'}"]
    assert "Traceback" not in done.stderr
    debug = _tool("tools/convert_checkpoint.py", "--debug", str(tmp_path / "none.pth"), "o.pth")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.slow  # a subprocess or an export: seconds
def test_train_with_a_missing_config_says_so_in_one_line(tmp_path):
    pytest.importorskip("mmengine")
    done = _tool("tools/train.py", str(tmp_path / "no_such_config.py"))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no_such_config.py" in errors[0]
    assert "Traceback" not in done.stderr
