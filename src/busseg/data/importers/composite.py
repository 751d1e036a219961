"""The ``composite`` importer: several sources as one dataset.

Several sources as one dataset. ``root`` is their common parent folder (the
pipeline tracks it as the stage's dependency) and option ``sources`` maps a
source name to a nested spec (``kind``, ``root``, options); a relative source
``root`` is resolved against the composite's ``root``::

    both:
      kind: composite
      root: /data/bus
      sources:
        udiat: {kind: udiat, root: UDIAT}
        bus_uclm: {kind: bus_uclm, root: BUS-UCLM}

Sources are read in name order; ids and groups get the prefix ``<source>__``
(``udiat__000001``) and every record the ``source`` name, which the prepared
index keeps in its ``source`` column (so that the split stratifies by source).
Source names are letters, digits, ``_``, ``.`` and ``-``; sources cannot be
composite themselves.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busseg.data.importers import auto, bus_uclm, busbra, busi, folder, stu, synthetic, udiat
from busseg.data.importers.base import (
    Ignored,
    Record,
    Sample,
    lookup,
    merge_registries,
    missing_folder,
    parse_options,
    parse_spec,
)
from busseg.errors import ConfigError, DataError

SOURCE_IMPORTERS = merge_registries(
    auto.importers,
    bus_uclm.importers,
    busbra.importers,
    busi.importers,
    folder.importers,
    stu.importers,
    synthetic.importers,
    udiat.importers,
)
"""The kinds a source may have: every kind but ``composite`` (sources do not nest)."""


@dataclass(frozen=True)
class CompositeOptions:
    """Options of the ``composite`` kind: ``sources`` maps a name to a nested spec."""

    sources: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None


def import_composite(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Several nested sources as one stream, with ``<source>__`` id prefixes (see module docs).

    Every source's importer is called here, so that a missing folder or a bad option in
    any source raises before the first sample is read.
    """
    opts = parse_options(CompositeOptions, options, section)
    if root is None:
        raise ConfigError(f"{section}.root", "missing; kind 'composite' needs the sources' parent folder")
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, missing_folder(root, "kind 'composite' resolves its sources' roots here"))
    if not opts.sources:
        raise ConfigError(f"{section}.sources", "missing or empty; map each source name to a dataset spec")
    streams = [
        _prefixed(name, _open_source(name, opts.sources[name], root, f"{section}.sources.{name}"))
        for name in sorted(opts.sources)
    ]
    return _limit_records(itertools.chain.from_iterable(streams), opts.limit)


_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _open_source(name: str, spec: Any, parent: Path, section: str) -> Iterator[Record]:
    """Call the importer of one ``composite`` source, its root resolved against ``parent``."""
    if not _SOURCE_NAME.fullmatch(name):
        raise ConfigError(section, "source names are letters, digits, '_', '.' and '-' (they prefix ids)")
    source = parse_spec(spec, section, parent=parent)
    if source.kind == "composite":
        raise ConfigError(f"{section}.kind", "a composite source cannot be composite itself")
    importer = lookup(SOURCE_IMPORTERS, source.kind, section)
    return importer(source.root, source.options, section=section)


def _limit_records(records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    """``records`` up to ``limit`` samples and skips; :class:`Ignored` entries do not count."""
    if limit is None:
        yield from records
        return
    count = 0
    for record in records:
        if isinstance(record, Ignored):
            yield record
            continue
        if count == limit:
            return
        count += 1
        yield record


def _prefixed(name: str, records: Iterator[Record]) -> Iterator[Record]:
    """``records`` with ids (and groups) prefixed ``<name>__`` and ``source`` set to ``name``."""
    prefix = f"{name}__"
    for record in records:
        if isinstance(record, Ignored):
            yield dataclasses.replace(record, source=name)
        elif isinstance(record, Sample):
            yield dataclasses.replace(record, id=prefix + record.id, group=prefix + record.group, source=name)
        else:
            yield dataclasses.replace(record, id=prefix + record.id, source=name)


importers = {"composite": import_composite}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""
