"""Where the Detectron2 environment takes detectron2, Mask2Former and OneFormer from.

None of the three is on a package registry. For each, the first of these that exists is
used, and one log line says which:

1. the path a user sets (``$DETECTRON2_SRC``, ``$MASK2FORMER_ROOT``, ``$ONEFORMER_ROOT``);
   a set path that is not a checkout is an error, never passed over;
2. a sibling clone next to the toolkit (``../detectron2``, ``../Mask2Former``,
   ``../OneFormer``);
3. an unmodified snapshot of the pinned commit in the vendor folder
   (``../shared/vendor/`` or ``$NATTK_VENDOR_DIR``), after checking its sha256;
4. a ``git clone`` of the pinned commit, when the network allows.

Snapshots and clones are unpacked into a build folder outside the repository
(``~/.cache/nat-toolkit/upstream/``, or ``$NATTK_CACHE_DIR/upstream``); user paths and
sibling clones are used where they are. Nothing of upstream is ever edited.

Standard library only: ``tools/setup_d2_env.sh`` runs this file by its path before the
toolkit is installed. ``--record FILE`` writes the resolved checkouts as JSON, which
:func:`nattk.mask2former.upstream.find_checkout` reads from the environment
(``<venv>/nattk-upstream.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

TOOLKIT_ROOT = Path(__file__).resolve().parents[2]

#: Exit status of the command line when some upstream source was not found anywhere.
EXIT_NOT_FOUND = 3


@dataclass(frozen=True)
class PinnedUpstream:
    """One upstream repository at the commit this toolkit is tested with.

    Attributes:
        name: Repository name; also the sibling-clone folder and the archive's top folder.
        env: Environment variable a user sets to their own checkout.
        marker: A file every checkout has (relative to its root), to recognise one.
        url: Where ``git clone`` takes it from.
        commit: The pinned commit (the snapshot's and the clone's).
        sha256: Hash of the snapshot archive ``<name>-<commit[:7]>.tar.gz``.
    """

    name: str
    env: str
    marker: str
    url: str
    commit: str
    sha256: str

    @property
    def archive(self) -> str:
        """File name of the snapshot in the vendor folder."""
        return f"{self.name}-{self.commit[:7]}.tar.gz"


DETECTRON2 = PinnedUpstream(
    name="detectron2",
    env="DETECTRON2_SRC",
    marker="detectron2/__init__.py",
    url="https://github.com/facebookresearch/detectron2",
    commit="02b5c4e295e990042a714712c21dc79b731e8833",
    sha256="242b9d82c5479746ea3e4bbec5c0f4bea881ded85df269ad87e3f7de516a4c56",
)
MASK2FORMER = PinnedUpstream(
    name="Mask2Former",
    env="MASK2FORMER_ROOT",
    marker="mask2former/__init__.py",
    url="https://github.com/facebookresearch/Mask2Former",
    commit="9b0651c6c1d5b3af2e6da0589b719c514ec0d69a",
    sha256="634dbaf4ca3dc4e7367bd108a5f65367088a7054bd7f812363706796e3dd41fd",
)
ONEFORMER = PinnedUpstream(
    name="OneFormer",
    env="ONEFORMER_ROOT",
    marker="oneformer/__init__.py",
    url="https://github.com/SHI-Labs/OneFormer",
    commit="4962ef6a96ffb76a76771bfa3e8b3587f209752b",
    sha256="d9ce62fef2836267f55fb499edf33594ead1cd129f6e158ab09138caab310f25",
)
UPSTREAMS = (DETECTRON2, MASK2FORMER, ONEFORMER)


class SourceError(RuntimeError):
    """A source that was chosen (a set path, a snapshot) cannot be used."""


@dataclass(frozen=True)
class ResolvedSource:
    """Where one upstream was found.

    Attributes:
        upstream: The pinned upstream.
        path: The checkout to build or import from.
        origin: ``env``, ``sibling``, ``vendor`` or ``clone``.
        detail: What was used (the variable, the folder, the archive, the URL).
        revision: The commit, with ``+dirty-<hash>`` for a git checkout with local
            changes, or ``tree-<hash>`` of its files where there is no git; it keys the
            cached detectron2 wheel.
    """

    upstream: PinnedUpstream
    path: Path
    origin: str
    detail: str
    revision: str

    def log_line(self) -> str:
        """The one line that says where this upstream came from."""
        return (
            f"{self.upstream.name} {self.revision[:12]}: {self.origin} ({self.detail}) "
            f"-> {self.path}"
        )

    def as_record(self) -> dict:
        return {
            "path": str(self.path),
            "origin": self.origin,
            "detail": self.detail,
            "revision": self.revision,
        }


def default_vendor_dir() -> Path:
    """``$NATTK_VENDOR_DIR``, else ``../shared/vendor`` next to the toolkit."""
    return Path(os.environ.get("NATTK_VENDOR_DIR") or TOOLKIT_ROOT.parent / "shared" / "vendor")


def default_build_dir() -> Path:
    """``$NATTK_CACHE_DIR/upstream``, else ``~/.cache/nat-toolkit/upstream``."""
    cache = os.environ.get("NATTK_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "nat-toolkit"
    )
    return Path(cache).expanduser() / "upstream"


def is_checkout(path: Path, upstream: PinnedUpstream) -> bool:
    return (path / upstream.marker).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(path: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _tree_hash(path: Path, upstream: PinnedUpstream) -> str:
    """Hash of the package's source files (names and contents), for a checkout without git."""
    digest = hashlib.sha256()
    package = (path / upstream.marker).parent
    for file in sorted(
        p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    for name in ("setup.py", "pyproject.toml"):
        if (path / name).is_file():
            digest.update((path / name).read_bytes())
    return digest.hexdigest()


def revision_of(path: Path, upstream: PinnedUpstream) -> str:
    """The commit of a user's checkout (``+dirty-<hash>`` with local changes), or ``tree-<hash>``."""
    commit = _git(path, "rev-parse", "HEAD") if (path / ".git").exists() else None
    if commit is None:
        return "tree-" + _tree_hash(path, upstream)[:16]
    changes = _git(path, "status", "--porcelain")  # untracked files included
    if changes:
        diff = changes + "\n" + (_git(path, "diff", "HEAD") or "")
        return f"{commit}+dirty-{hashlib.sha256(diff.encode()).hexdigest()[:12]}"
    return commit


def _user_checkout(upstream: PinnedUpstream) -> Optional[ResolvedSource]:
    value = os.environ.get(upstream.env)
    if value:
        path = Path(value).expanduser().resolve()
        if not is_checkout(path, upstream):
            raise SourceError(
                f"${upstream.env}={value} is not a {upstream.name} checkout "
                f"(no {upstream.marker}); unset it or point it at a clone of {upstream.url}"
            )
        return ResolvedSource(
            upstream, path, "env", f"${upstream.env}", revision_of(path, upstream)
        )
    sibling = TOOLKIT_ROOT.parent / upstream.name
    if is_checkout(sibling, upstream):
        path = sibling.resolve()
        return ResolvedSource(
            upstream, path, "sibling", f"../{upstream.name}", revision_of(path, upstream)
        )
    return None


def _unpacked_dir(upstream: PinnedUpstream, build_dir: Path) -> Path:
    return build_dir / f"{upstream.name}-{upstream.commit[:12]}"


def _publish(staging: Path, target: Path, upstream: PinnedUpstream) -> None:
    """Moves a finished tree into place in one rename (a failed run leaves no half tree).

    A target that is not a checkout (left by an interrupted older run) is replaced; one
    that another run published meanwhile is kept.
    """
    if target.exists() and not is_checkout(target, upstream):
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not is_checkout(target, upstream):
            raise
    if not is_checkout(target, upstream):
        raise SourceError(f"{target} is not a {upstream.name} tree (no {upstream.marker})")


def _from_vendor(upstream: PinnedUpstream, vendor_dir: Path, build_dir: Path):
    archive = vendor_dir / upstream.archive
    if not archive.is_file():
        return None
    target = _unpacked_dir(upstream, build_dir)
    detail = f"{archive}, sha256 verified"
    actual = file_sha256(archive)  # every time: a few MB, and a changed file must not pass
    if actual != upstream.sha256:
        raise SourceError(
            f"{archive} has sha256 {actual}, expected {upstream.sha256} (commit "
            f"{upstream.commit[:7]}); the snapshot is damaged or another commit: replace it"
        )
    if is_checkout(target, upstream):
        return ResolvedSource(upstream, target, "vendor", detail, upstream.commit)
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{upstream.name}-", dir=build_dir))
    with tarfile.open(archive) as tar:
        # The "data" filter (no absolute paths, links out of the tree or devices) where
        # this Python has it (3.12, and 3.8.17+ / 3.9.17+ / 3.10.12+ / 3.11.4+).
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(staging, **extra)
    try:
        _publish(staging / upstream.name, target, upstream)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ResolvedSource(upstream, target, "vendor", detail, upstream.commit)


def _from_clone(upstream: PinnedUpstream, build_dir: Path, url: Optional[str] = None):
    url = url or upstream.url
    target = _unpacked_dir(upstream, build_dir)
    detail = f"git clone {url} @ {upstream.commit[:7]}"
    if is_checkout(target, upstream):
        return ResolvedSource(upstream, target, "clone", detail, upstream.commit)
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{upstream.name}-", dir=build_dir))
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    # A network that drops packets gives up after 30 s below 1 kB/s, not after minutes.
    slow = ["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=30"]
    steps = (
        ["git", *slow, "clone", "--quiet", "--no-checkout", url, str(staging / "repo")],
        ["git", "-C", str(staging / "repo"), "checkout", "--quiet", upstream.commit],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is None or done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            return None
    try:
        _publish(staging / "repo", target, upstream)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ResolvedSource(upstream, target, "clone", detail, upstream.commit)


def resolve(
    upstream: PinnedUpstream,
    vendor_dir: Optional[Path] = None,
    build_dir: Optional[Path] = None,
    clone_url: Optional[str] = None,
) -> Optional[ResolvedSource]:
    """Finds one upstream source in the order of this module's docstring.

    Args:
        upstream: What to find.
        vendor_dir: Folder of snapshots (default: :func:`default_vendor_dir`).
        build_dir: Where snapshots are unpacked and clones made (default:
            :func:`default_build_dir`).
        clone_url: Overrides ``upstream.url`` for the clone step.

    Returns:
        The source, or ``None`` when none of the four exists.

    Raises:
        SourceError: A set path is not a checkout, or a snapshot fails its sha256.
    """
    vendor_dir = Path(vendor_dir) if vendor_dir is not None else default_vendor_dir()
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    return (
        _user_checkout(upstream)
        or _from_vendor(upstream, vendor_dir, build_dir)
        or _from_clone(upstream, build_dir, clone_url)
    )


def how_to_enable(upstream: PinnedUpstream, vendor_dir: Path) -> str:
    return (
        f"{upstream.name} not found: set ${upstream.env} to a checkout, clone {upstream.url} "
        f"to ../{upstream.name}, or put {upstream.archive} in {vendor_dir}"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--record", type=Path, help="write the resolved checkouts here (JSON)")
    parser.add_argument("--vendor-dir", type=Path, default=None)
    parser.add_argument("--build-dir", type=Path, default=None)
    parser.add_argument(
        "--print", dest="show", choices=[u.name for u in UPSTREAMS], help="print one path"
    )
    args = parser.parse_args(argv)
    vendor_dir = args.vendor_dir or default_vendor_dir()
    found, missing = {}, []
    for upstream in UPSTREAMS:
        try:
            source = resolve(upstream, vendor_dir, args.build_dir)
        except SourceError as error:
            print(f"[upstream] ERROR: {error}", file=sys.stderr)
            return 1
        if source is None:
            missing.append(how_to_enable(upstream, vendor_dir))
            continue
        found[upstream.name] = source.as_record()
        print(f"[upstream] {source.log_line()}", file=sys.stderr)
    if missing:
        for line in missing:
            print(f"[upstream] {line}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        staging = args.record.with_name(args.record.name + ".tmp")
        staging.write_text(json.dumps(found, indent=2) + "\n")
        staging.replace(args.record)
    if args.show:
        print(found[args.show]["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
