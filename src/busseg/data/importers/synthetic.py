"""The ``synthetic`` importer: generated cases, no files read.

Generated cases from :mod:`busseg.data.synthetic`. Options ``count`` (required),
``seed`` (default 0) and the fields of ``SyntheticOptions`` (``size``, ...); ``root``
is ignored. Ids ``syn_0000``, ``syn_0001``, ...; group = id.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from busseg.config import check_range, from_dict
from busseg.data.importers.base import SPEC_KEYS, Record, Sample
from busseg.data.synthetic import SyntheticOptions, generate_dataset
from busseg.errors import ConfigError


def import_synthetic(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Generated samples; ``options`` are ``count``, ``seed`` and ``SyntheticOptions`` fields."""
    rest = dict(options)
    count = _pop_int(rest, "count", section, default=None)
    seed = _pop_int(rest, "seed", section, default=0)
    check_range(f"{section}.count", count, 1, float("inf"))
    try:
        synthetic_options = from_dict(SyntheticOptions, rest, section, also=(*SPEC_KEYS, "count", "seed"))
    except ConfigError as exc:  # the generator's own checks name the bare option
        if exc.key.startswith(section):
            raise
        raise ConfigError(f"{section}.{exc.key}", exc.problem) from None
    width = max(4, len(str(count - 1)))

    def generate() -> Iterator[Record]:
        cases = generate_dataset(count, seed, synthetic_options)
        for index, case in enumerate(cases):
            sample_id = f"syn_{index:0{width}d}"
            source = f"synthetic:seed={seed}:index={index}"
            yield Sample(
                id=sample_id,
                image=np.asarray(case.image, dtype=np.uint8),
                mask=np.asarray(case.mask, dtype=bool),
                label=case.label,
                group=sample_id,
                source_image=source,
                source_mask=source,
            )

    return generate()


def _pop_int(values: dict[str, Any], key: str, section: str, *, default: int | None) -> int:
    """Remove ``key`` from ``values`` and check it is an integer (required when no default)."""
    if key not in values:
        if default is None:
            raise ConfigError(f"{section}.{key}", "missing; required for kind 'synthetic'")
        return default
    value = values.pop(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{section}.{key}", f"expected an integer, got {value!r}")
    return value


importers = {"synthetic": import_synthetic}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""
