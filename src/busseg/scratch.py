"""Scratch folders for resumable stages, keyed by everything the stage's result depends on.

DVC deletes a stage's outputs when the stage starts, and ``persist: true`` would switch
its run cache off; so in-progress state lives outside the outputs, in a git- and
DVC-ignored folder whose name is a hash of the stage's parameters and input files. A
rerun with identical inputs finds its state again; any change gets a fresh folder.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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


def scratch_dir(stage: str, key: str, root: str | Path | None = None) -> Path:
    """``<root>/<stage>/<key>``, created."""
    path = Path(root or DEFAULT_ROOT) / stage.replace("@", "-") / key
    path.mkdir(parents=True, exist_ok=True)
    return path
