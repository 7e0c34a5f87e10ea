"""Every shipped config resolves as recorded in ``tests/fixtures/resolved_configs.json``.

The record was written from the configs before they shared ``_base_`` files
(``python -m nattk.dev.config_equivalence --write``); a refactor of ``configs/`` must
leave each resolved config identical. The negative controls show the check notices a
changed value, a tuple become a list, and a config added or gone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mmengine")
pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from nattk.dev import config_equivalence as ce  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "resolved_configs.json"
RECORD = json.loads(FIXTURE.read_text())
#: One config per inheritance chain runs in the fast tier, the rest in the full suite.
FAST = (
    "mask-rcnn_dinat-t_",
    "cascade-mask-rcnn_nat-b_",
    "dinats-l-in22k-pre_upernet",
    "ade20k-instance-640x640",
    "mask2former_dinat-l-in22k-pre_8xb2-90k_cityscapes-512x1024",
    "upernet_dinat_large",
    "quickstart/upernet",
)
DERIVED = """\
_base_ = {base!r}
model = dict(backbone=dict(drop_path_rate=0.25, out_indices=[0, 1, 2, 3]))
"""


def test_record_names_every_config():
    names = {p.relative_to(REPO).as_posix() for p in ce.config_paths(REPO / "configs")}
    assert names == set(RECORD)


@pytest.mark.parametrize(
    "name",
    [n if any(k in n for k in FAST) else pytest.param(n, marks=pytest.mark.slow) for n in RECORD],
)
def test_config_resolves_as_recorded(name: str):
    assert ce.differences(ce.renamed(RECORD[name]), ce.resolve(REPO / name)) == []


def test_the_only_difference_without_renames_is_the_dinat_s_type_name():
    """``type='DiNATs'`` (recorded) became ``'DiNAT_s'``; both name one registered class."""
    name = "configs/mmseg/dinat_s/dinats-l-in22k-pre_upernet_8xb2-amp-160k_ade20k-512x512.py"
    current = ce.resolve(REPO / name)
    assert ce.differences(RECORD[name], current) == ["model.backbone.type"]
    assert (RECORD[name]["model"]["backbone"]["type"], current["model"]["backbone"]["type"]) == (
        "DiNATs",
        "DiNAT_s",
    )


def test_check_reports_a_changed_value(tmp_path: Path):
    """Negative control: a real config with one value changed and one tuple made a list."""
    name = "configs/mmseg/nat/nat-t_upernet_8xb2-amp-160k_ade20k-512x512.py"
    derived = tmp_path / "derived.py"
    derived.write_text(DERIVED.format(base=str(REPO / name)))
    assert ce.differences(RECORD[name], ce.resolve(derived)) == [
        "model.backbone.drop_path_rate",
        "model.backbone.out_indices (tuple vs list)",
    ]


def test_write_then_check(tmp_path: Path, capsys):
    configs = tmp_path / "configs"
    (configs / "_base_").mkdir(parents=True)
    (configs / "_base_" / "base.py").write_text("size = (1, 2)\n")  # not a config of its own
    (configs / "a.py").write_text("_base_ = './_base_/base.py'\nitems = dict(x=1, y=[2.0])\n")
    record = tmp_path / "record.json"
    assert ce.main(["--write", str(record), "--configs", str(configs)]) == 0
    assert set(json.loads(record.read_text())) == {"configs/a.py"}
    assert ce.main(["--check", str(record), "--configs", str(configs)]) == 0
    assert capsys.readouterr().out.endswith("1 configs compared, all identical\n")

    (configs / "a.py").write_text("size = [1, 2]\nitems = dict(x=1.0, z=None)\n")
    (configs / "b.py").write_text("items = 1\n")
    assert ce.main(["--check", str(record), "--configs", str(configs)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "configs/a.py: items.x",
        "configs/a.py: items.y (removed)",
        "configs/a.py: items.z (added)",
        "configs/a.py: size (tuple vs list)",
        "configs/b.py: added (found now, not recorded)",
        "2 configs compared, 2 differ",
    ]
    (configs / "a.py").unlink()
    assert ce.main(["--check", str(record), "--configs", str(configs)]) == 1
    assert "configs/a.py: missing (recorded, not found now)" in capsys.readouterr().out


def test_canonical_keeps_tuples_apart():
    assert ce.canonical({"b": (1, [2]), "a": None}) == {
        "a": None,
        "b": {"__tuple__": [1, [2]]},
    }
    assert ce.differences([1, True], [1, 1]) == ["1"]
