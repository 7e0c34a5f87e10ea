"""One NATTEN situation in a fresh interpreter, for ``tests/test_hf_attention.py``.

Prints a JSON report: what :func:`nattk.hf.use_toolkit_attention` said, whether
``from transformers import DinatModel`` worked before the call, and how far
transformers 5's ``DinatModel`` on a 4.46.3 fixture is from what 4.46.3 computed.

Usage: ``python tests/hf_scenario.py [--hide-natten] [--import-first] [--force]``
(``tests`` and, for a NATTEN stand-in, its folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hide-natten", action="store_true", help="as if NATTEN were absent")
    parser.add_argument("--import-first", action="store_true", help="import DinatModel first")
    parser.add_argument("--force", action="store_true", help="use_toolkit_attention(force=True)")
    args = parser.parse_args()
    if args.hide_natten:
        sys.modules["natten"] = None  # find_spec and import both say: not installed
    report = {}
    if args.import_first:
        try:
            from transformers import DinatModel  # noqa: F401
        except ImportError as error:
            report["import_first"] = f"ImportError: {str(error).strip()[:200]}"
        else:
            report["import_first"] = "ok"

    import torch
    from hf_helpers import fixture, fixture_inputs

    from nattk.hf import use_toolkit_attention

    status = use_toolkit_attention(force=args.force)
    report["status"] = dict(
        attention=status.attention, natten_version=status.natten_version, modules=status.modules
    )
    from transformers import DinatModel

    fix = fixture("dinat_model_ls")
    model = DinatModel.from_pretrained(fix.folder).double().eval()
    diffs = []
    with torch.no_grad():
        for name, x in fixture_inputs().items():
            out = model(x).last_hidden_state
            diffs.append((out - fix.output(name, "last_hidden_state")).abs().max().item())
        # The unfused path (attention weights returned): same output, NATTEN's layout.
        out = model(fixture_inputs()["x_56x72"], output_attentions=True)
        diffs.append(
            (out.last_hidden_state - fix.output("x_56x72", "last_hidden_state")).abs().max().item()
        )
    report["attention_shapes"] = [list(a.shape) for a in out.attentions]
    report["max_diff"] = max(diffs)
    functional = None
    if not args.hide_natten and importlib.util.find_spec("natten") is not None:
        functional = importlib.import_module("natten.functional")
    report["natten_calls"] = getattr(functional, "CALLS", None)
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
