"""Print the versions and capabilities of the toolkit's environment.

Usage: ``python tools/collect_env.py``
"""

from __future__ import annotations

import importlib
import platform
import sys


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception as exc:  # not installed, or broken
        return (
            "not installed"
            if isinstance(exc, ModuleNotFoundError)
            else f"broken ({type(exc).__name__}: {exc})"
        )


def _mmcv_ops() -> str:
    try:
        import torch
        from mmcv.ops import nms

        boxes = torch.tensor(
            [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]]
        )
        _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
        return f"loadable (mmcv.ops.nms on CPU kept {keep.tolist()})"
    except Exception as exc:
        return f"NOT loadable ({type(exc).__name__}: {exc})"


def collect() -> dict[str, str]:
    """Environment facts as an ordered ``{name: value}`` dict."""
    import torch

    from nattk.backbones.attention import backend_report, cpu_extension, registry

    info = {
        "python": sys.version.split()[0] + f" ({platform.platform()})",
        "torch": torch.__version__,
        "nat-toolkit": _version("nattk"),
        "natten": _version("natten"),
        "mmcv": _version("mmcv"),
        "mmcv ops": _mmcv_ops(),
        "mmengine": _version("mmengine"),
        "mmdet": _version("mmdet"),
        "mmseg": _version("mmseg"),
        "detectron2": _version("detectron2"),
        "transformers": _version("transformers"),
        "CPU NA kernels": cpu_extension.status(),
    }
    info["NA auto order"] = " -> ".join(registry.active().auto_order)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        report = backend_report(device)
        usable = [name for name, reason in report.items() if reason is None]
        skipped = "; ".join(f"{name}: {reason}" for name, reason in report.items() if reason)
        info[f"NA backends ({device})"] = ", ".join(usable) + (
            f"  [not usable: {skipped}]" if skipped else ""
        )
    if torch.cuda.is_available():
        info["device"] = f"cuda: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        info["device"] = (
            f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (no CUDA)"
        )
    return info


def main() -> None:
    for key, value in collect().items():
        print(f"{key:>22}: {value}")
