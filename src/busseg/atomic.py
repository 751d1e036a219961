"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Every output busseg writes goes through here, so the rules live in one place:

* the temporary lies beside its target (same file system, so the final ``os.replace`` is
  atomic) and is named ``.<name>.<pid>.tmp``: a fixed name per process, never a random one,
  because some writers record the name they write to (``torch.save`` names the zip's root
  folder after it), and a random name would make identical contents differ byte-wise;
* temporaries are created with the usual umask (not the 0600 / 0700 of ``mkstemp`` /
  ``mkdtemp``), so outputs get the same permissions as any other file the user makes;
* on any failure (an exception, disk full, ``ulimit -f``) the temporary is removed and the
  previous target, if any, is left untouched; a failed file write (``OSError``) becomes a
  :class:`busseg.errors.DataError` naming the target and the system's message, which the
  stages print as one ``error:`` line;
* a temporary left behind by a killed process (``kill -9``) is removed by
  :func:`remove_stale_temporaries` the first time a later process writes into its folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from busseg.errors import DataError

_SUFFIX = ".tmp"


def temporary_path(path: str | Path) -> Path:
    """The temporary name used while writing ``path``: ``.<name>.<pid>.tmp`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries in ``folder`` left by processes that no longer run; return them.

    Temporaries of a live process (another writer right now) are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for candidate in folder.iterdir():
        name = candidate.name
        if not (name.startswith(".") and name.endswith(_SUFFIX)):
            continue
        pid_text = name[: -len(_SUFFIX)].rsplit(".", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid != os.getpid() and _pid_alive(pid):
            continue
        _remove(candidate)
        removed.append(candidate)
    return removed


_CLEANED: set[Path] = set()


def _prepare_folder(folder: Path) -> None:
    """Create ``folder`` and, once per process, clear it of stale temporaries.

    Once per folder, not per write: a stage writing thousands of files into one folder would
    otherwise rescan it on every write.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key not in _CLEANED:
        remove_stale_temporaries(folder)
        _CLEANED.add(key)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path; it replaces ``path`` only if the block succeeds.

    The caller writes the temporary by any means that keeps its name (``Image.save`` with an
    explicit ``format``; ``np.savez`` appends ``.npz`` to a path, so give it an open handle).
    An ``OSError`` while writing or renaming (disk full, ``ulimit -f``, permissions) is raised
    as :class:`DataError` naming ``path``: the block only writes the file, so the error is
    about that file, and the user knows it by its final name, not the temporary's.
    """
    path = Path(path)
    try:
        _prepare_folder(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = temporary_path(path)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        _remove(tmp)


def _dir_temporary(path: Path, build_in: Path | None) -> Path:
    """Where :func:`atomic_dir` builds ``path``: in ``build_in`` when given and on the same
    file system as ``path``'s folder, else beside ``path`` (:func:`temporary_path`)."""
    if build_in is not None:
        _prepare_folder(build_in)
        if os.stat(build_in).st_dev == os.stat(path.parent).st_dev:
            return build_in / f".{path.parent.name}-{path.name}.{os.getpid()}{_SUFFIX}"
    return temporary_path(path)


def write_error(path: str | Path, exc: OSError) -> DataError:
    """The :class:`DataError` for a failed write of ``path``: ``cannot write: <system message>``.

    The system's message is looked for down the exception's chain: writers such as Pillow
    re-raise the system's ``[Errno 28] No space left on device`` as their own error.
    """
    return DataError(path, f"cannot write: {system_message(exc)}")


def system_message(exc: BaseException) -> str:
    """The operating system's message (``strerror``) of ``exc`` or of an exception it was
    raised from or while handling; ``str(exc)`` when there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    return str(exc)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating parent folders."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (trailing newline) atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def copy_file(source: str | Path, path: str | Path) -> None:
    """Copy ``source`` to ``path`` atomically (a full disk never leaves half a copy)."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, build_in: str | Path | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` only if the block succeeds.

    A stage that fails half-way therefore never leaves a half-written output folder, and
    the previous folder (if any) stays until the new one is complete. A :class:`DataError`
    naming a file inside the temporary (a failed write there) is raised again naming that
    file under ``path``, where the user will look for it.

    ``build_in`` (the scratch folder) holds the temporary instead of ``path``'s folder when
    both lie on one file system (the final rename cannot cross file systems): after a
    ``kill -9`` the temporary then lies where every later busseg run that uses the scratch
    folder removes those of dead processes, even when DVC restores ``path`` from its run
    cache without running any stage code.
    """
    path = Path(path)
    try:
        _prepare_folder(path.parent)
        tmp = _dir_temporary(path, None if build_in is None else Path(build_in))
        _remove(tmp)
        tmp.mkdir()  # os.mkdir honours the umask, unlike tempfile.mkdtemp
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        if path.exists():
            _remove(path)
        os.replace(tmp, path)
    except DataError as error:
        if not error.path.is_relative_to(tmp):
            raise
        raise DataError(path / error.path.relative_to(tmp), error.problem) from None
    except OSError as exc:
        if exc.filename is None or not Path(exc.filename).is_relative_to(tmp):
            raise
        raise write_error(path / Path(exc.filename).relative_to(tmp), exc) from None
    finally:
        _remove(tmp)
