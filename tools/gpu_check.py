"""One command for the first GPU run of the Triton kernels: compile, correctness, then speed.

Runs on a bare CUDA machine with PyTorch, Triton (>= 3.3; 3.6 and 3.7.1 checked),
pytest and timm, and nothing of this project installed (no MMCV, no NATTEN, no
registry): where ``nattk`` is not importable it is made importable from this checkout
through a folder of links. Nothing builds the C++ CPU extension
(``NATTK_CPU_EXTENSION=0``). Everything goes to ``--out`` (default
``bench_out/gpu_check``), and ``summary.json`` is rewritten after every step, so a run
cut short still leaves what it measured:

1. ``compile``: every kernel compiled once up front, before anything is timed: DiNAT-T's
   attention layers, forward and backward, bf16, at three image sizes, through
   Triton's JIT without running (``compile_only``); the variants per kernel (one
   per kernel is the design) and the seconds it took (``compile.json``);
2. ``pytest.txt``: ``tests/test_triton_backend.py`` on CUDA (fp32, fp16, bf16; forward and
   the four gradients against the fp64 reference), except the tests that use Triton's
   compiler internals or its interpreter. The full file needs ``pytest-xdist`` (on the
   lent GPU machines) to fit its time; without it, the fast tier runs and the summary
   says so;
3. ``attention/``: every published layer shape: a correctness check of fp32/fp16/bf16
   first (``correctness.json``), then timings with ``triton.testing.do_bench``:
   Triton-rpb, the ``torch`` backend, Swin window attention (SDPA) and dense SDPA;
4. ``backbone_triton/``, ``backbone_torch/``: DiNAT-T/-L and NAT-T against timm's
   Swin-T/-L, forward+backward images/s and peak memory under bf16 autocast.

Two verdicts in ``summary.json``: ``correctness`` (pytest and the attention check, which
stands even when the timing after it runs out of time) and ``timing`` (every timing step
finished).

Usage::

    python tools/gpu_check.py                      # on the GPU machine, < 8 minutes
    TRITON_INTERPRET=1 python tools/gpu_check.py --shrink 8   # dry run on CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The checkout's folders that make up the package (pyproject's package-dir).
PACKAGE_DIRS = {"backbones": "backbones", "detection": "detection",
                "segmentation": "segmentation", "mask2former": "mask2former",
                "openmmlab": "openmmlab", "hf": "hf"}  # fmt: skip


def package_path(out: Path) -> str:
    """A ``sys.path`` entry where ``import nattk`` finds this checkout."""
    # Run from ``out``: in the checkout root, its own nattk/ folder would shadow the links.
    probe = subprocess.run(
        [sys.executable, "-c", "import nattk.backbones"], cwd=out, capture_output=True
    )
    if probe.returncode == 0:
        return ""
    shim = out / "_pkg" / "nattk"
    shim.mkdir(parents=True, exist_ok=True)
    for item in (ROOT / "nattk").iterdir():
        link = shim / item.name
        if not link.exists():
            link.symlink_to(item)
    for name, folder in PACKAGE_DIRS.items():
        link = shim / name
        if not link.exists():
            link.symlink_to(ROOT / folder)
    return str(shim.parent)


def run_step(name: str, command: list[str], out: Path, env: dict, timeout: float) -> dict:
    """Runs one step in ``out`` (not the checkout root, whose nattk/ folder would shadow
    the package), its output to ``out/<name>.txt``; returns its status."""
    start = time.perf_counter()
    log = out / f"{name}.txt"
    print(f"[gpu_check] {name}: {' '.join(command)}", flush=True)
    try:
        with log.open("w") as handle:
            code = subprocess.run(command, cwd=out, env=env, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    print(f"[gpu_check] {name}: {code} in {seconds} s", flush=True)
    return {"step": name, "returncode": code, "seconds": seconds, "log": str(log)}


def compile_command(device: str, sizes: list[list[int]]) -> list[str]:
    """Compiles DiNAT-T's kernels for ``sizes`` up front; prints, as JSON, the variants
    each size added (on a GPU: one per kernel for the first size, none after it; on CPU
    each size compiles into a fresh stand-in sm_90 cache) and the seconds."""
    code = f"""
import json, time, torch
from nattk.backbones.variants import create_model
from nattk.dev import triton_aot
model = create_model("dinat_tiny", num_classes=0, dilations="coco")
start = time.perf_counter()
per_size = []
for h, w in {sizes!r}:
    got = triton_aot.model_compiles(model, h, w, torch.bfloat16, batch=1, device={device!r})
    per_size.append({{"size": [h, w], "compiled": {{k: n for k, n in got.items() if n}}}})
print(json.dumps({{"per_size": per_size, "seconds": round(time.perf_counter() - start, 1)}}))
"""
    return [sys.executable, "-c", code]


def _write(path: Path, text: str) -> None:
    """Replaces ``path`` only once ``text`` is written in full (a run cut short mid-write
    leaves the previous summary, not half of one)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_summary(out: Path, steps: list[dict], dry: bool, pytest_scope: str) -> dict:
    """Writes ``summary.json`` as it stands (after every step) and returns it."""
    by_name = {s["step"]: s for s in steps}
    checks = out / "attention" / "correctness.json"
    checks_ok = checks.exists() and all(r["ok"] for r in json.loads(checks.read_text()))
    pytest_ok = by_name.get("pytest", {}).get("returncode") == 0
    timing_steps = [s for s in steps if s["step"] in ("attention", "backbone_triton",
                                                          "backbone_torch")]  # fmt: skip
    summary = {
        "device": _device_name(),
        "python": platform.python_version(),
        "versions": _versions(),
        "dry_run": dry,
        "pytest_scope": pytest_scope,
        "steps": steps,
        "correctness": "passed" if pytest_ok and checks_ok else "not passed",
        "timing": "finished" if len(timing_steps) == 3 and all(
            s["returncode"] == 0 for s in timing_steps) else "not finished",
    }  # fmt: skip
    _write(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_out/gpu_check")
    parser.add_argument("--shrink", type=int, default=1,
                        help="dry run: divide map sizes, fast tests only, CPU interpreter")  # fmt: skip
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dry = args.shrink > 1
    env = dict(os.environ, NATTK_CPU_EXTENSION="0")
    extra = package_path(out)
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
    if dry:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    device = "cpu" if dry else "cuda"
    py = sys.executable

    # Time limits per step: the real run stays under 8 minutes in all; the dry run, under
    # Triton's CPU interpreter, does far less work (one shape, tiny model) but slowly.
    limits = dict(compile=90, pytest=200, attention=120, backbone_triton=60, backbone_torch=45)
    if dry:
        limits = dict(compile=120, pytest=240, attention=240, backbone_triton=120,
                      backbone_torch=60)  # fmt: skip
    steps: list[dict] = []
    xdist = importlib.util.find_spec("xdist") is not None
    pytest_scope = "full file, pytest-xdist -n 8" if xdist and not dry else "fast tier"
    if not xdist and not dry:
        pytest_scope += " (pytest-xdist is not installed: pip install pytest-xdist for all)"

    def step(name, command, step_env=env):
        steps.append(run_step(name, command, out, step_env, limits[name]))
        write_summary(out, steps, dry, pytest_scope)
        return steps[-1]

    # 1. Compile once, up front. The dry run compiles for a stand-in sm_90 (no interpreter).
    compile_env = {k: v for k, v in env.items() if k != "TRITON_INTERPRET"}
    sizes = [[64, 64], [96, 128]] if dry else [[224, 224], [512, 512], [800, 1216]]
    compiled = step("compile", compile_command(device, sizes), compile_env)
    log = Path(compiled["log"]).read_text().strip().splitlines()
    if compiled["returncode"] == 0 and log:
        _write(out / "compile.json", log[-1] + "\n")
    # 2. Correctness.
    pytest_cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "-m", "not compiler" + ("" if xdist and not dry else " and not slow")]  # fmt: skip
    if xdist and not dry:
        pytest_cmd += ["-n", "8"]  # the many specialisations compile in parallel
    pytest_cmd.append(str(ROOT / "tests" / "test_triton_backend.py"))
    step("pytest", pytest_cmd)
    # 3. Attention: the correctness check first, then timings.
    attention = [py, str(ROOT / "tools" / "benchmark_attention.py"), "--device", device, "--suite", "gpu",
                 "--dtype", "bf16", "--check", "--out", str(out / "attention")]  # fmt: skip
    if dry:
        attention += ["--shrink", str(args.shrink), "--repeats", "1",
                      "--shapes", "det800x1344 stage3", "--dilations", "1"]  # fmt: skip
    step("attention", attention)
    # 4. Backbones.
    for backend in ("triton", "torch"):
        backbone = [py, str(ROOT / "tools" / "benchmark.py"), "--device", device, "--backend", backend,
                    "--out", str(out / f"backbone_{backend}")]  # fmt: skip
        if dry:
            backbone += ["--size", "32", "32", "--batch", "1", "--iters", "1", "--warmup", "0",
                         "--models", "nat_tiny"]  # fmt: skip
        step(f"backbone_{backend}", backbone)

    summary = write_summary(out, steps, dry, pytest_scope)
    print(json.dumps(summary, indent=1))
    return 0 if summary["correctness"] == "passed" and summary["timing"] == "finished" else 1


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def _versions() -> dict:
    import torch

    versions = {"torch": torch.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = None
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:
        versions["timm"] = None
    return versions


if __name__ == "__main__":
    sys.exit(main())
