"""Where a command may write: one policy for every command's output paths.

A command claims each output path with ``claim_output`` before any work starts. The claim is
granted when the path

1. does not exist, or is an empty directory;
2. holds a moesim result of the same kind (a directory with a ``.moesim-result`` marker naming the
   kind; a file recorded with its kind and sha256 in its directory's ``.moesim-files`` index):
   it is replaced (commands whose results are costly to rebuild ask for ``--force`` here too);
3. holds a moesim result of another kind: replaced only with ``--force``.

Anything else is refused with one line (exit 2), ``--force`` or not: a directory or file moesim did
not write, a file where a directory is wanted (or the reverse), an input of the same command (or a
directory holding one), a place that cannot be written (read-only, permission denied, a path
through a file). Nothing is touched when a claim is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from moesim.errors import fail
from moesim.io import atomic_dir, atomic_write_text

MARKER = ".moesim-result"
FILES_INDEX = ".moesim-files"
# Kinds whose own manifest already says "moesim wrote this" (and whose listing must stay as is).
OWN_MANIFEST = {"trace": "trace.json"}

T = TypeVar("T")

FORCE_HELP = (
    "replace a moesim result of another kind at the output path (a file or directory moesim did "
    "not write is never replaced)"
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_kind(path: Path) -> str | None:
    """The kind of moesim result a directory holds, or None when moesim did not write it."""
    marker = path / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            kind = marker.read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        return kind[0].strip() if kind else None
    for kind, manifest in OWN_MANIFEST.items():
        if (path / manifest).is_file():
            return kind
    return None


def _read_index(directory: Path) -> dict[str, Any]:
    try:
        doc = json.loads((directory / FILES_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def file_kind(path: Path) -> str | None:
    """The kind of moesim result a file is: recorded in the index and unchanged since."""
    entry = _read_index(path.parent).get(path.name)
    if not isinstance(entry, dict) or not path.is_file() or path.is_symlink():
        return None
    try:
        same = _sha256(path) == entry.get("sha256")
    except OSError:
        return None
    return str(entry.get("kind")) if same else None


def record_file(path: Path, kind: str) -> None:
    """Note in the directory's index that moesim wrote ``path`` (a file result of ``kind``)."""
    index = _read_index(path.parent)
    index[path.name] = {"kind": kind, "sha256": _sha256(path)}
    atomic_write_text(path.parent / FILES_INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(p).expanduser()))


def _check_inputs(flag: str, path: Path, inputs: Iterable[str | os.PathLike], inside_ok: bool) -> None:
    target = _resolved(path)
    for inp in inputs:
        if inp is None or not Path(inp).expanduser().exists():
            continue
        src = _resolved(inp)
        if src == target:
            fail(f"{flag} {path}: is an input of this command; choose another output path")
        if target in src.parents:
            fail(f"{flag} {path}: holds an input of this command ({inp}); choose another output path")
        if src in target.parents and not inside_ok:
            fail(f"{flag} {path}: lies inside an input of this command ({inp}); choose another output path")


def _check_writable(flag: str, path: Path) -> None:
    """The nearest existing ancestor must be a directory we may create entries in."""
    probe = Path(os.path.abspath(path.expanduser())).parent
    while not probe.exists():
        if probe.is_symlink():
            fail(f"{flag} {path}: {probe} is a dangling link; choose another output path")
        probe = probe.parent
    if not probe.is_dir():
        fail(f"{flag} {path}: {probe} is a file, not a directory; choose another output path")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: cannot write in {probe} (permission denied or read-only file system)")


def _refuse_foreign(flag: str, path: Path, what: str, kind: str) -> None:
    fail(
        f"{flag} {path}: exists and is {what} moesim did not write (it is not a moesim {kind}); "
        "refusing to touch it (choose another path, or move it away yourself)"
    )


def _check_existing(flag: str, path: Path, kind: str, directory: bool, force: bool, strict: bool) -> bool:
    """Returns whether ``path`` holds a previous result that the command will replace."""
    if directory and not path.is_dir():
        _refuse_foreign(flag, path, "a file (not a directory)", kind)
    if not directory and path.is_dir():
        _refuse_foreign(flag, path, "a directory (not a file)", kind)
    if directory and not any(path.iterdir()):
        return False
    found = dir_kind(path) if directory else file_kind(path)
    if found is None:
        _refuse_foreign(flag, path, "a directory" if directory else "a file", kind)
    if found == kind and (force or not strict):
        return True
    if found == kind:
        fail(
            f"{flag} {path}: a moesim {kind} already exists; pass --force to replace it, or choose another path"
        )
    if not force:
        fail(f"{flag} {path}: holds a moesim {found} result, not a {kind}; pass --force to replace it")
    return True


@dataclass(frozen=True)
class OutputClaim:
    """A granted output path. Write through it so the result is marked as moesim's."""

    path: Path
    kind: str
    directory: bool
    replaces: bool  # a previous moesim result is there

    def write_dir(self, build: Callable[[Path], T]) -> T:
        """``build(tmp)`` fills a fresh sibling directory, which then replaces ``path`` in one rename."""
        box: list[T] = []

        def _build(tmp: Path) -> None:
            box.append(build(tmp))
            self._mark(tmp)

        atomic_dir(self.path, _build)
        return box[0]

    def open_dir(self, clear: bool = True) -> Path:
        """For writers that fill the directory file by file: create (or, with ``clear``, empty our
        previous result in) ``path`` and mark it now."""
        if clear and self.replaces and self.path.is_dir():
            for entry in self.path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self._mark(self.path)
        return self.path

    def mark(self) -> None:
        """For a directory a writer elsewhere filled whole: say it is moesim's."""
        if self.directory and self.path.is_dir():
            self._mark(self.path)

    def _mark(self, directory: Path) -> None:
        if self.kind not in OWN_MANIFEST:
            atomic_write_text(directory / MARKER, self.kind + "\n")

    def record(self) -> None:
        """After writing a file result: note it in the directory's index."""
        if not self.directory and self.path.is_file():
            record_file(self.path, self.kind)

    def write_file(self, write: Callable[[Path], T]) -> T:
        """``write(path)`` writes the file (atomically, via moesim.io); then it is recorded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        value = write(self.path)
        self.record()
        return value


def claim_output(
    path: str | os.PathLike,
    kind: str,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    directory: bool = True,
    strict: bool = False,
    inside_inputs_ok: bool = False,
    flag: str = "--out",
) -> OutputClaim:
    """Check that a command may write its ``kind`` of result at ``path`` (see the module doc);
    ``strict`` asks for ``--force`` even to replace a result of the same kind."""
    path = Path(path).expanduser()
    _check_inputs(flag, path, inputs, inside_inputs_ok)
    if path.is_symlink() and not path.exists():
        fail(f"{flag} {path}: is a dangling link; choose another output path")
    replaces = False
    if path.exists():
        replaces = _check_existing(flag, path, kind, directory, force, strict)
    _check_writable(flag, path)
    return OutputClaim(path, kind, directory, replaces)


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,@-]+")


def name_dir(name: str, root: str | os.PathLike = "runs", suffix: str = "") -> Path:
    """``root/<name><suffix>`` for a scenario's name: a name, never a path (separators and other
    unsafe characters become ``_``, leading and trailing dots and ``_`` are dropped), so it always stays under ``root``."""
    clean = _UNSAFE.sub("_", f"{name}{suffix}").strip("._")
    if not clean:
        fail(f"scenario name {name!r}: cannot name an output directory; give --out DIR or a plain name")
    return Path(root) / clean


def scenario_inputs(sc: Any) -> list[Path]:
    """The files a resolved scenario reads: its trace, profile, model config, fitting trace, and any
    predictor or cache parameter that names an existing file."""
    refs: list[Any] = [sc.trace.path, sc.model.config, sc.predictor.fit_trace]
    profile = sc.hardware.profile
    if isinstance(profile, str) and ":" not in profile:
        refs.append(profile)
    for params in (sc.predictor.params, sc.cache.params):
        refs.extend(_strings(params))
    out: list[Path] = []
    for ref in refs:
        if isinstance(ref, str) and ref:
            try:
                p = sc.resolve_path(ref)
            except (OSError, ValueError):
                continue
            if p.exists():
                out.append(p)
    return list(dict.fromkeys(out))


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return []


def path_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, in sorted order)."""
    if path.is_file():
        return _sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel in (MARKER, FILES_INDEX):
            continue
        h.update(rel.encode() + b"\0" + _sha256(f).encode() + b"\n")
    return h.hexdigest()
