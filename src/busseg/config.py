"""Turning parameter dicts into typed dataclasses, with errors that name the key.

Library code takes dataclasses; only the stage scripts in ``stages/`` read
``params.yaml`` and hand the relevant section to :func:`from_dict`.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from busseg.errors import ConfigError

T = TypeVar("T")

# A plain decimal number as YAML 1.2 (and so DVC) reads it. PyYAML follows YAML 1.1, where
# ``1e-3`` (no dot) is a string; params.yaml must mean the same to both readers.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def join_key(section: str, name: str) -> str:
    """``section.name``, or ``name`` alone for top-level parameters (``section == ""``)."""
    return f"{section}.{name}" if section else name


def from_dict(cls: type[T], values: Mapping[str, Any] | None, section: str, *, also: Iterable[str] = ()) -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types are errors.

    ``section`` is the dotted parameter prefix used in messages (e.g. ``"train"``),
    so that a typo in params.yaml reads ``parameter 'train.lrr': unknown key;
    available: ...`` instead of a TypeError. ``also`` are keys that are valid in the
    section but read by the caller, not by ``cls`` (a dataset entry's ``kind`` and
    ``root``): the "available" list names them too, so that it lists every valid key.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            join_key(section, str(unknown[0])),
            f"unknown key; available: {', '.join(sorted({*fields, *also}))}",
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], join_key(section, name))
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(section, str(exc)) from None
    except ConfigError as exc:
        # Checks in ``__post_init__`` know only their own field name; say where it sits.
        raise _within(section, exc) from None


def _within(section: str, exc: ConfigError) -> ConfigError:
    """``exc`` with its key prefixed by ``section`` unless it already names the full key."""
    if not section or exc.key == section or exc.key.startswith(section + "."):
        return exc
    return ConfigError(join_key(section, exc.key), exc.problem)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a simple type hint, converting int -> float where natural."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(key, "; ".join(errors))
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return from_dict(hint, value, key)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item_hint, *_rest) = typing.get_args(hint) or (Any,)
        items = [_coerce(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        return _to_float(value, key)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    return value


def _to_float(value: Any, key: str) -> float:
    """A number, or a string that YAML 1.2 would read as one (``1e-3``), as a float."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    return float(value)


def check_range(key: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``low (<|<=) value <= high``."""
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        left = "(" if low_open else "["
        raise ConfigError(key, f"must be in {left}{low}, {high}], got {value}")
