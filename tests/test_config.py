"""from_dict: typed dataclasses from params, with errors that name the key."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from busseg.config import check_range, from_dict
from busseg.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    size: int = 4


@dataclass(frozen=True)
class Example:
    lr: float = 0.1
    steps: int | None = None
    name: str = "x"
    flag: bool = False
    prompts: tuple[str, ...] = ("a",)
    inner: Inner = Inner()


def test_defaults_and_values() -> None:
    cfg = from_dict(Example, {"lr": 1, "steps": 3, "prompts": ["dark oval", "dark round"], "inner": {"size": 8}}, "s")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.steps == 3
    assert cfg.prompts == ("dark oval", "dark round")
    assert cfg.inner == Inner(8)
    assert from_dict(Example, None, "s") == Example()


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"lrr": 1}, "s.lrr"),
        ({"lr": "fast"}, "s.lr"),
        ({"steps": 1.5}, "s.steps"),
        ({"flag": "yes"}, "s.flag"),
        ({"prompts": "dark oval"}, "s.prompts"),
        ({"inner": {"sise": 3}}, "s.inner.sise"),
        ({"lr": True}, "s.lr"),
    ],
)
def test_errors_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Example, values, "s")
    assert info.value.key == key
    assert key in str(info.value)


def test_unknown_key_lists_available() -> None:
    with pytest.raises(ConfigError, match="available: flag, inner, lr, name, prompts, steps"):
        from_dict(Example, {"nope": 1}, "s")


@pytest.mark.parametrize(("value", "ok"), [(0.0, False), (0.5, True), (1.0, True), (1.5, False)])
def test_check_range_open_low(value: float, ok: bool) -> None:
    if ok:
        check_range("label_ratio", value, 0.0, 1.0, low_open=True)
    else:
        with pytest.raises(ConfigError, match="label_ratio"):
            check_range("label_ratio", value, 0.0, 1.0, low_open=True)
