"""Proof that a refactor of ``configs/`` left every resolved config as it was.

Every config under ``configs/`` (the ``_base_`` folders aside) is loaded with
``mmengine.Config.fromfile``, so that its bases, ``{{_base_.x}}`` references and
``_delete_`` keys are all applied, and turned into a canonical JSON structure: dict
keys sorted, tuples kept apart from lists as ``{"__tuple__": [...]}``, anything JSON
cannot hold as ``{"__repr__": "..."}``. ``--write FILE`` records every config so;
``--check FILE`` resolves them again and prints, for each config that differs, the
dotted key paths that differ (and the configs missing or added).

Usage: ``python -m nattk.dev.config_equivalence (--write | --check) FILE [--configs DIR]``.
Exit status 0 when every config is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TUPLE = "__tuple__"
REPR = "__repr__"
#: Stands for a config that did not load: ``{"__error__": "KeyError: ..."}``.
ERROR = "__error__"
#: Registry names renamed since a record was written (old -> new). Both stay registered
#: to the same class, so a recorded ``type='DiNATs'`` builds what ``type='DiNAT_s'`` does;
#: ``--strict`` compares without them.
RENAMED_TYPES = {"DiNATs": "DiNAT_s"}


def config_paths(configs: Path = CONFIGS) -> list[Path]:
    """Every ``*.py`` config below ``configs``, but those inside a ``_base_`` folder."""
    return sorted(
        path for path in configs.rglob("*.py") if "_base_" not in path.relative_to(configs).parts
    )


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data that still tells a tuple from a list.

    Args:
        value: A resolved config value (dicts, lists, tuples and scalars).

    Returns:
        Dicts with sorted string keys, lists, ``{"__tuple__": [...]}`` for tuples,
        JSON scalars, and ``{"__repr__": repr(value)}`` for anything else.
    """
    if isinstance(value, dict):
        items = {_key(key): canonical(item) for key, item in value.items()}
        return {key: items[key] for key in sorted(items)}
    if isinstance(value, tuple):
        return {TUPLE: [canonical(item) for item in value]}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {REPR: repr(value)}


def _key(key: Any) -> str:
    return key if isinstance(key, str) else f"{REPR}{key!r}"


def resolve(path: Path) -> Any:
    """The canonical form of the config at ``path``, fully resolved by MMEngine."""
    from mmengine.config import Config

    resolved = canonical(Config.fromfile(str(path)).to_dict())
    # Through JSON once, so that a fresh resolution compares equal to a stored one.
    return json.loads(json.dumps(resolved))


def resolve_all(configs: Path = CONFIGS) -> dict[str, Any]:
    """``{path relative to the repository: canonical config}`` for every config.

    A config that fails to load stands as ``{"__error__": "<exception>"}``.
    """
    base = configs.resolve().parent
    resolved = {}
    for path in config_paths(configs):
        try:
            value = resolve(path)
        except Exception as error:  # noqa: BLE001  (reported, not raised)
            value = {ERROR: f"{type(error).__name__}: {error}"}
        resolved[path.resolve().relative_to(base).as_posix()] = value
    return resolved


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted key paths (list items by index) at which ``old`` and ``new`` differ.

    A value that changed type (a tuple become a list, ``1`` become ``1.0``) differs.
    """
    here = prefix or "<root>"
    old_tuple, new_tuple = _is_tuple(old), _is_tuple(new)
    if old_tuple != new_tuple:
        return [f"{here} (tuple vs list)" if old_tuple else f"{here} (list vs tuple)"]
    if old_tuple:
        return differences(old[TUPLE], new[TUPLE], prefix)
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(old.keys() | new.keys()):
            path = f"{prefix}.{key}" if prefix else key
            if key not in new:
                found.append(f"{path} (removed)")
            elif key not in old:
                found.append(f"{path} (added)")
            else:
                found += differences(old[key], new[key], path)
        return found
    if isinstance(old, list) and isinstance(new, list):
        found = []
        for index in range(max(len(old), len(new))):
            path = f"{prefix}.{index}" if prefix else str(index)
            if index >= len(new):
                found.append(f"{path} (removed)")
            elif index >= len(old):
                found.append(f"{path} (added)")
            else:
                found += differences(old[index], new[index], path)
        return found
    if type(old) is not type(new) or old != new:
        return [here]
    return []


def _is_tuple(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {TUPLE}


def renamed(value: Any) -> Any:
    """``value`` (canonical) with every ``type`` of :data:`RENAMED_TYPES` under its new name."""
    if isinstance(value, dict):
        return {
            key: RENAMED_TYPES.get(item, item) if key == "type" and isinstance(item, str)
            else renamed(item)
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [renamed(item) for item in value]
    return value


def compare(expected: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per difference between two ``{config: canonical config}`` records."""
    lines = []
    for name in sorted(expected.keys() | current.keys()):
        if name not in current:
            lines.append(f"{name}: missing (recorded, not found now)")
        elif name not in expected:
            lines.append(f"{name}: added (found now, not recorded)")
        elif ERROR in current[name]:
            lines.append(f"{name}: does not load ({current[name][ERROR]})")
        else:
            lines += [f"{name}: {path}" for path in differences(expected[name], current[name])]
    return lines


def dumps(resolved: dict[str, Any]) -> str:
    """The record as JSON text: one compact line per config, so that a diff names it."""
    rows = [
        f"{json.dumps(name)}: {json.dumps(resolved[name], sort_keys=True, separators=(',', ':'))}"
        for name in sorted(resolved)
    ]
    return "{\n" + ",\n".join(rows) + "\n}\n"


def write(record: Path, configs: Path = CONFIGS) -> int:
    """Resolve every config and write them all to ``record`` (JSON).

    Returns:
        0, or 1 (and nothing written) when a config does not load.
    """
    resolved = resolve_all(configs)
    failed = [
        f"{name}: does not load ({value[ERROR]})"
        for name, value in resolved.items()
        if ERROR in value
    ]
    if failed:
        print("\n".join(failed + ["nothing written"]))
        return 1
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(dumps(resolved))
    print(f"{len(resolved)} configs written to {record}")
    return 0


def check(record: Path, configs: Path = CONFIGS, strict: bool = False) -> int:
    """Compare the configs as they resolve now with ``record``; 0 when all identical.

    Unless ``strict``, the record's registry names are first renamed (:data:`RENAMED_TYPES`).
    """
    expected = json.loads(record.read_text())
    if not strict:
        expected = renamed(expected)
    current = resolve_all(configs)
    lines = compare(expected, current)
    for line in lines:
        print(line)
    names = expected.keys() | current.keys()
    if not lines:
        print(f"{len(names)} configs compared, all identical")
        return 0
    changed = {line.split(": ", 1)[0] for line in lines}
    print(f"{len(names)} configs compared, {len(changed)} differ")
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    # setuptools' own, once per config MMEngine reads with mmdet::/mmseg:: bases.
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="FILE", help="record every config")
    action.add_argument("--check", type=Path, metavar="FILE", help="compare with a record")
    parser.add_argument("--configs", type=Path, default=CONFIGS, help="default: configs/")
    parser.add_argument(
        "--strict", action="store_true", help="--check without RENAMED_TYPES (old type names)"
    )
    args = parser.parse_args(argv)
    if args.write:
        return write(args.write, args.configs)
    return check(args.check, args.configs, args.strict)


if __name__ == "__main__":
    sys.exit(main())
