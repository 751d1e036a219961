"""Scratch folders for resumable stages, keyed by everything the stage's result depends on.

DVC deletes a stage's outputs when the stage starts, and ``persist: true`` would switch
its run cache off; so in-progress state lives outside the outputs, in a git- and
DVC-ignored folder whose name is a hash of the stage's parameters and input files. A
rerun with identical inputs finds its state again; any change gets a fresh folder.
Once a stage has written its outputs it releases its folder (:func:`release`): state is kept only
while a run is unfinished (a training run's state is hundreds of MB).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from busseg.atomic import remove_stale_temporaries

DEFAULT_ROOT = Path(os.environ.get("BUSSEG_SCRATCH", ".busseg/scratch"))


def _hash_file(path: Path, digest: "hashlib._Hash") -> None:
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def inputs_key(params: Mapping[str, Any], files: Iterable[str | Path]) -> str:
    """A 16-hex-digit hash of ``params`` (as JSON) and the contents of ``files``.

    Folders are hashed file by file in sorted order, names included.
    """
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for item in files:
        path = Path(item)
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in paths:
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            if file.is_file():
                _hash_file(file, digest)
    return digest.hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """A 8-hex-digit hash of busseg's own source files.

    Part of every scratch folder's name: state left by an interrupted run of older code is
    never resumed by newer code (it would hand back a result the current code did not make).
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*.py")):
        digest.update(file.relative_to(package).as_posix().encode())
        _hash_file(file, digest)
    return digest.hexdigest()[:8]


def scratch_dir(stage: str, key: str, root: str | Path | None = None) -> Path:
    """``<root>/<stage>/<key>-<code fingerprint>``, created.

    Empty run folders under ``root`` are removed first: a run killed (``kill -9``) before it
    saved any state leaves its folder empty, and nothing else would ever delete it; so are
    the temporaries of dead processes (:func:`busseg.atomic.remove_stale_temporaries`:
    ``prepare`` builds its folder here).
    """
    base = Path(root or DEFAULT_ROOT)
    prune_empty(base)
    remove_stale_temporaries(base)  # e.g. a prepared folder a killed prepare was building here
    path = base / stage.replace("@", "-") / f"{key}-{code_fingerprint()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def prune_empty(root: str | Path | None = None) -> list[Path]:
    """Remove the empty folders under the scratch ``root`` (runs that never saved state, and
    stage folders left without runs); return them. ``rmdir`` removes only empty folders, so
    a folder that another run fills meanwhile is never lost; a run whose folder goes
    creates it again when it saves (:func:`busseg.atomic.atomic_path`)."""
    base = Path(root or DEFAULT_ROOT)
    if not base.is_dir():
        return []
    removed: list[Path] = []
    for folder in sorted((p for p in base.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        try:
            folder.rmdir()  # deepest first, so that a stage folder emptied here goes too
        except OSError:
            continue
        removed.append(folder)
    return removed


def release(path: str | Path, root: str | Path | None = None) -> None:
    """Delete a finished stage's scratch folder and the parents it leaves empty (up to ``root``)."""
    path, top = Path(path), Path(root or DEFAULT_ROOT).resolve()
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent
    while parent.resolve() != top and top in parent.resolve().parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def usage(root: str | Path | None = None) -> int:
    """Bytes held under the scratch root (unfinished runs' state)."""
    base = Path(root or DEFAULT_ROOT)
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) if base.is_dir() else 0


def usage_note(root: str | Path | None = None) -> str | None:
    """A one-line note on what unfinished runs keep under the scratch root, or None when empty."""
    size = usage(root)
    if not size:
        return None
    base = Path(root or DEFAULT_ROOT)
    return (
        f"note: {base} holds {size / 2**20:.0f} MB of unfinished runs' resume state "
        "(kept until each run finishes; `make clean-scratch` frees it)"
    )
