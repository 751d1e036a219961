"""The ``auto`` importer: detect the layout, then import with that kind.

Detects the layout of ``root`` and imports it with that kind, in this order:
``busbra`` (``images/``, ``masks/``, ``bus_data.csv``), ``bus_uclm`` (``images/``,
``masks/``, ``INFO.csv``), ``stu`` (``images/Test_Image_*.png``, ``masks/``),
``busi`` (``Dataset_BUSI_with_GT/``, or ``benign/`` and ``malignant/``), ``udiat``
(``original/``, ``GT/``), ``folder`` (``images/``, ``masks/``). Options are those
of the detected kind. See :func:`detect_kind`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from busseg.data.importers import bus_uclm, busbra, busi, folder, stu, udiat
from busseg.data.importers.base import Importer, Record, missing_folder
from busseg.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_DETECTED = (busbra, bus_uclm, stu, busi, udiat, folder)
LAYOUTS: tuple[tuple[str, tuple[tuple[str, ...], ...], Importer], ...] = tuple(
    (kind, module.LAYOUT, importer) for module in _DETECTED for kind, importer in module.importers.items()
)
"""``(kind, alternative sets of entries that identify its layout, importer)`` of each kind
``auto`` recognises (each kind's ``LAYOUT`` sits in its module), in the order
:func:`detect_kind` tries them: the more specific layouts first (every BUS-BRA folder is
also a ``folder`` one)."""


def import_auto(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Samples of whatever known layout :func:`detect_kind` finds at ``root``."""
    if root is None:
        raise ConfigError(f"{section}.root", "missing; kind 'auto' reads a dataset folder")
    kind = detect_kind(root)
    logger.info("%s: %s looks like a '%s' dataset", section, root, kind)
    importer = next(importer for name, _, importer in LAYOUTS if name == kind)
    return importer(Path(root), options, section=section)


def detect_kind(root: str | Path) -> str:
    """The kind whose layout ``root`` has (see the module docstring).

    Raises :class:`DataError` naming ``root`` when it is not a folder or matches none
    of the known layouts; the message lists, per kind, what was looked for.
    """
    root = Path(root)
    looked_for = "; ".join(
        f"{kind}: {' or '.join(', '.join(entries) for entries in alternatives)}"
        for kind, alternatives, _ in LAYOUTS
    )
    if not root.is_dir():
        raise DataError(root, missing_folder(root, f"kind 'auto' looks for {looked_for}"))
    for kind, alternatives, _ in LAYOUTS:
        if any(all(_has_entry(root, entry) for entry in entries) for entries in alternatives):
            return kind
    raise DataError(root, f"no known dataset layout; looked for {looked_for}")


def _has_entry(root: Path, entry: str) -> bool:
    """Whether ``root`` has ``entry``: a folder (``x/``), a glob (``x/*.png``) or a file."""
    if entry.endswith("/"):
        return (root / entry).is_dir()
    if "*" in entry:
        return any(path.is_file() for path in root.glob(entry))
    return (root / entry).is_file()


importers = {"auto": import_auto}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""
