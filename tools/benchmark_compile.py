"""Eager vs ``torch.compile`` (inductor) for a dense NAT / DiNAT backbone: forward + backward.

Reports the first compiled call (compile time included), the steady-state time of a
compiled forward+backward and of the eager one (medians); ``fullgraph=True`` is used,
so any graph break fails. ``--autocast bf16|fp16`` runs both under ``torch.autocast``
and also reports the features' relative error against an fp32 run.

Examples::

    python tools/benchmark_compile.py --model dinat_tiny --shape 224 224 --batch 2
    python tools/benchmark_compile.py --autocast bf16 --no-compile
"""

from __future__ import annotations

import argparse
import platform

import torch

from nattk.backbones import create_model
from nattk.timing import call_times_ms, median_ms


def _step(model, run, x, dtype=None) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        features = run(x)
    sum(f.float().square().mean() for f in features).backward()
    return [f.detach() for f in features]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dinat_tiny")
    parser.add_argument("--dilations", default="imagenet224", help="DiNAT dilation preset")
    parser.add_argument("--shape", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--no-compile", action="store_true", help="time eager only")
    args = parser.parse_args(argv)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.autocast]

    torch.manual_seed(0)
    kwargs = {} if args.model.startswith("nat_") else {"dilations": args.dilations}
    model = create_model(args.model, num_classes=0, drop_path_rate=0.0, **kwargs).to(args.device)
    x = torch.randn(args.batch, 3, *args.shape, device=args.device)
    print(
        f"{args.model} dense backbone, batch {args.batch} x {args.shape[0]}x{args.shape[1]}, "
        f"{args.device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, autocast {args.autocast}"
    )
    expected = _step(model, model, x, dtype)  # also the warm-up (index tables, allocator)
    eager = median_ms(lambda: _step(model, model, x, dtype), args.repeats, device=x.device)
    print(f"eager fwd+bwd              {eager:9.1f} ms")
    if dtype is not None:
        reference = _step(model, model, x)
        error = max(
            ((a.float() - b).abs().max() / b.abs().max()).item()
            for a, b in zip(expected, reference)
        )
        print(f"features vs fp32           {error:9.2e}   (max |diff| / max |fp32|, worst level)")
    if args.no_compile:
        return

    compiled = torch.compile(model, backend=args.backend, fullgraph=True)
    (first,) = call_times_ms(lambda: _step(model, compiled, x, dtype), 1, device=x.device)
    steady = median_ms(lambda: _step(model, compiled, x, dtype), args.repeats, device=x.device)

    features = _step(model, compiled, x, dtype)
    difference = max((a.float() - b.float()).abs().max().item() for a, b in zip(expected, features))
    print(f"compiled first call        {first / 1e3:9.1f} s   (compile + one fwd+bwd)")
    print(f"compiled fwd+bwd           {steady:9.1f} ms   ({eager / steady:.2f}x eager)")
    print(f"max |compiled - eager|     {difference:9.2e}   (forward features)")


if __name__ == "__main__":
    main()
