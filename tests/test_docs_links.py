"""The documentation points only at things that exist, and the front page stays short.

For README.md, docs/*.md and the model zoos (configs/*/README.md):

* every relative Markdown link (``[text](path)``, images included) names an existing
  file or folder, resolved from the document's folder; a ``#anchor`` into a Markdown
  file names one of its headings;
* every repository path quoted in backticks or in a fenced code block (a word that
  starts with a top-level folder such as ``backbones/`` or ``tools/``, or a top-level
  file such as ``Makefile``) exists, relative to the repository root; ``*`` globs and
  ``{a,b}`` alternatives are expanded, placeholders (``<...>``, ``{x}``, ``$VAR``,
  ``...``) are skipped;
* no line narrates the project's history ("issue 18", "earlier sessions", ...);
* README.md has at most 220 lines.

Plain text parsing: no torch, no framework imports.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "configs").glob("*/README.md")),
]
README_MAX_LINES = 220

TOP_FOLDERS = (
    "backbones",
    "detection",
    "segmentation",
    "mask2former",
    "openmmlab",
    "hf",
    "nattk",
    "configs",
    "tools",
    "tests",
    "docs",
    "requirements",
    ".ci",
)
TOP_FILES = ("Makefile", "pyproject.toml", "README.md")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A repository path: a top-level folder and what follows it (``{a,b}`` groups included),
# or a top-level file; not preceded by a path character (``../OneFormer/configs/`` is not ours).
_FOLDER = "(?:" + "|".join(re.escape(f) for f in TOP_FOLDERS) + ")"
_FILE = "(?:" + "|".join(re.escape(f) for f in TOP_FILES) + ")"
REPO_PATH = re.compile(
    rf"(?<![\w.\-/~$])(?:{_FOLDER}/(?:\{{[^{{}}\s`]*\}}|[^\s`'\"()\[\]{{}},;:|])*|{_FILE}(?![\w.\-/]))"
)
PLACEHOLDER = re.compile(r"[<>$]|\.\.\.|\{[^{},]*\}")
HISTORY = re.compile(
    r"\bissue \d+|\b(?:earlier|previous|this|that) sessions?\b|\bpreviously\b"
    r"|\bbefore this change\b",
    re.IGNORECASE,
)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _split_fences(text: str) -> tuple[str, str]:
    """``(prose, code)``: the text outside and inside fenced blocks, each with the lines
    of the other part left empty, so that both keep ``text``'s line numbers."""
    prose, code, inside = [], [], False
    for line in text.splitlines(keepends=True):
        blank = "\n" if line.endswith("\n") else ""
        if FENCE.match(line):
            inside = not inside
            prose.append(blank)
            code.append(blank)
        elif inside:
            prose.append(blank)
            code.append(line)
        else:
            prose.append(line)
            code.append(blank)
    return "".join(prose), "".join(code)


def _expand_braces(path: str) -> list[str]:
    """``a/{b,c}/d`` -> ``["a/b/d", "a/c/d"]`` (every group, all combinations)."""
    parts = re.split(r"\{([^{}]*,[^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def _path_exists(path: str) -> bool:
    for candidate in _expand_braces(path):
        if "*" in candidate or "?" in candidate:
            if not any(REPO.glob(candidate.rstrip("/"))):
                return False
        elif not (REPO / candidate).exists():
            return False
    return True


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"[`*]", "", text)  # code and emphasis marks
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose, _ = _split_fences(path.read_text(encoding="utf-8"))
    anchors, seen = set(), {}
    for line in prose.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _quoted_paths(text: str):
    """``(line, path)`` for every repository path in inline code and fenced blocks."""
    prose, code = _split_fences(text)
    spans = [(prose, m.start(2), m.group(2)) for m in INLINE_CODE.finditer(prose)]
    spans.append((code, 0, code))
    for source, start, span in spans:
        for match in REPO_PATH.finditer(span):
            path = match.group(0).rstrip(".")
            if PLACEHOLDER.search(path):
                continue
            yield _line_of(source, start + match.start()), path


def _links(text: str):
    """``(line, target)`` for every Markdown link outside code."""
    prose, _ = _split_fences(text)
    prose = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
    for match in LINK.finditer(prose):
        yield _line_of(prose, match.start()), match.group(1)


def _ids(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_documents_are_found():
    names = {_ids(p) for p in DOCUMENTS}
    assert {"README.md", "docs/README.md", "configs/mmdet/README.md"} <= names, names


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_ids)
def test_relative_links_exist(doc):
    text = doc.read_text(encoding="utf-8")
    missing = []
    for line, target in _links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            missing.append(f"{_ids(doc)}:{line}: link to missing {target}")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            missing.append(f"{_ids(doc)}:{line}: no heading #{anchor} in {path or _ids(doc)}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_ids)
def test_quoted_repository_paths_exist(doc):
    text = doc.read_text(encoding="utf-8")
    missing = [
        f"{_ids(doc)}:{line}: {path} does not exist"
        for line, path in _quoted_paths(text)
        if not _path_exists(path)
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_ids)
def test_no_history_narration(doc):
    found = [
        f"{_ids(doc)}:{number}: {line.strip()}"
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "\n".join(found)


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    commands = "\n".join(lines[:20])
    assert "make quickstart" in commands and "make test" in commands


def test_checks_catch_what_they_should():
    """The parsers find missing paths, placeholders, anchors and narration."""
    text = (
        "See [x](docs/none.md) and `tools/none.py --flag` or `configs/{a,b}/x.py`,\n"
        "not `work_dirs/x`, `configs/<name>.py` or `nattk/{i}.py`.\n"
        "```bash\npython tools/train.py CONFIG\n```\n"
    )
    assert [t for _, t in _links(text)] == ["docs/none.md"]
    quoted = list(_quoted_paths(text))
    assert quoted == [(1, "tools/none.py"), (1, "configs/{a,b}/x.py"), (4, "tools/train.py")]
    assert _expand_braces("configs/{a,b}/x.py") == ["configs/a/x.py", "configs/b/x.py"]
    assert not _path_exists("tools/none.py") and _path_exists("tools/*.py")
    assert _slug("Mask2Former with DiNAT-Large (IN-22K)") == "mask2former-with-dinat-large-in-22k"
    assert _slug("`torch.compile`") == "torchcompile"
    assert HISTORY.search("as Issue 18 reports") and not HISTORY.search("tissue 3")
