"""One command for the first GPU run of the Triton kernels: correctness, then speed.

Runs on a bare CUDA machine with PyTorch, Triton (3.6 or 3.7), pytest and timm, and
nothing of this project installed (no MMCV, no NATTEN, no registry): where ``nattk``
is not importable it is made importable from this checkout through a folder of links.
Everything goes to ``--out`` (default ``bench_out/gpu_check``):

1. ``pytest.txt``: ``tests/test_triton_backend.py`` on CUDA, every case (fp32, fp16,
   bf16; forward and the four gradients against the fp64 reference), except the tests
   that use Triton's compiler internals or its interpreter;
2. ``attention/``: every published layer shape, timed with ``triton.testing.do_bench``:
   Triton-rpb, the ``torch`` backend, Swin window attention (SDPA) and dense SDPA, as
   time, in-window TFLOP/s and percent of the measured bf16 matmul ceiling, after a
   correctness check of fp32/fp16/bf16 on those shapes (``correctness.md``);
3. ``backbone_triton/``, ``backbone_torch/``: DiNAT-T/-L and NAT-T against timm's
   Swin-T/-L, forward+backward images/s and peak memory under bf16 autocast;
4. ``variants.json``: how many kernels Triton compiled after DiNAT-T ran forward and
   backward at three image sizes (one per kernel is the design);
5. ``summary.json``: each step's status and time, the device and versions, and
   whether the correctness steps passed (``triton_validated``).

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
    probe = subprocess.run([sys.executable, "-c", "import nattk.backbones"], capture_output=True)
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
    """Runs one step, its output to ``out/<name>.txt``; returns its status."""
    start = time.perf_counter()
    log = out / f"{name}.txt"
    print(f"[gpu_check] {name}: {' '.join(command)}", flush=True)
    try:
        with log.open("w") as handle:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    print(f"[gpu_check] {name}: {code} in {seconds} s", flush=True)
    return {"step": name, "returncode": code, "seconds": seconds, "log": str(log)}


def variants_command(device: str, model: str, sizes: list[list[int]]) -> list[str]:
    code = f"""
import json, torch, sys
sys.path.insert(0, {str(ROOT / "tools")!r})
from benchmark_attention import compiled_variants
from nattk.backbones.attention import NeighborhoodAttention2D
from nattk.backbones.variants import create_model
device = torch.device({device!r})
kwargs = dict(dilations="coco") if {model!r}.startswith("dinat") else dict()
model = create_model({model!r}, num_classes=0, **kwargs).to(device)
for m in model.modules():
    if isinstance(m, NeighborhoodAttention2D):
        m.backend = "triton"
for h, w in {sizes!r}:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        feats = model(torch.randn(1, 3, h, w, device=device))
    sum(f.float().mean() for f in feats).backward()
print(json.dumps({{"sizes": {sizes!r}, "compiled": compiled_variants()}}))
"""
    return [sys.executable, "-c", code]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_out/gpu_check")
    parser.add_argument("--shrink", type=int, default=1,
                        help="dry run: divide map sizes, fast tests only, CPU interpreter")  # fmt: skip
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dry = args.shrink > 1
    env = dict(os.environ)
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
    limits = dict(pytest=200, attention=120, backbone_triton=60, backbone_torch=45, variants=45)
    if dry:
        limits = dict(pytest=300, attention=300, backbone_triton=300, backbone_torch=60,
                      variants=300)  # fmt: skip
    steps = []
    pytest_cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    pytest_cmd += ["-m", "not compiler" + (" and not slow" if dry else "")]
    if not dry and importlib.util.find_spec("xdist") is not None:
        pytest_cmd += ["-n", "8"]  # compiles of the many specialisations, in parallel
    pytest_cmd.append("tests/test_triton_backend.py")
    steps.append(run_step("pytest", pytest_cmd, out, env, limits["pytest"]))
    attention = [py, "tools/benchmark_attention.py", "--device", device, "--suite", "gpu",
                 "--dtype", "bf16", "--check", "--out", str(out / "attention")]  # fmt: skip
    if dry:
        attention += ["--shrink", str(args.shrink), "--repeats", "1",
                      "--shapes", "det800x1344 stage3", "--dilations", "1"]  # fmt: skip
    steps.append(run_step("attention", attention, out, env, limits["attention"]))
    for backend in ("triton", "torch"):
        backbone = [py, "tools/benchmark.py", "--device", device, "--backend", backend,
                    "--out", str(out / f"backbone_{backend}")]  # fmt: skip
        if dry:
            backbone += ["--size", "32", "32", "--batch", "1", "--iters", "1", "--warmup", "0",
                         "--models", "nat_tiny"]  # fmt: skip
        name = f"backbone_{backend}"
        steps.append(run_step(name, backbone, out, env, limits[name]))
    if dry:
        # NAT: no dilation, so tiny inputs stay tiny maps (DiNAT pads them to k x d).
        model, sizes = "nat_mini", [[32, 32], [32, 64], [64, 32]]
    else:
        model, sizes = "dinat_tiny", [[224, 224], [512, 512], [800, 1216]]
    variants = run_step("variants", variants_command(device, model, sizes), out, env,
                        limits["variants"])  # fmt: skip
    steps.append(variants)
    log = Path(variants["log"]).read_text().strip().splitlines()
    if variants["returncode"] == 0 and log:
        (out / "variants.json").write_text(log[-1] + "\n")

    correctness = [s for s in steps if s["step"] in ("pytest", "attention")]
    checks = out / "attention" / "correctness.json"
    checks_ok = checks.exists() and all(r["ok"] for r in json.loads(checks.read_text()))
    summary = {
        "device": _device_name(),
        "python": platform.python_version(),
        "versions": _versions(),
        "dry_run": dry,
        "steps": steps,
        "triton_validated": all(s["returncode"] == 0 for s in correctness) and checks_ok,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if all(s["returncode"] == 0 for s in steps) else 1


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
