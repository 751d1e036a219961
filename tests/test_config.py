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


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("2E+2", 200.0), (" .5 ", 0.5), ("-1.5e-2", -0.015), ("3", 3.0)])
def test_numeric_strings_are_numbers_for_float_fields(text: str, value: float) -> None:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string where DVC (YAML 1.2) reads a number."""
    cfg = from_dict(Example, {"lr": text}, "s")
    assert cfg.lr == pytest.approx(value) and isinstance(cfg.lr, float)


@pytest.mark.parametrize("value", ["1e-3x", "nan", "inf", "0x10", "", float("nan"), float("inf")])
def test_other_strings_and_non_finite_numbers_are_not(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Example, {"lr": value}, "s")
    assert info.value.key == "s.lr"


def test_numeric_strings_are_not_integers() -> None:
    with pytest.raises(ConfigError, match="s.inner.size"):
        from_dict(Example, {"inner": {"size": "4"}}, "s")


@dataclass(frozen=True)
class Checked:
    size: int = 4

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError("size", f"must be >= 1, got {self.size}")


@dataclass(frozen=True)
class Outer:
    checked: Checked = Checked()


def test_checks_inside_a_dataclass_name_the_full_key() -> None:
    """A ``__post_init__`` check knows only its field; from_dict says where it sits."""
    with pytest.raises(ConfigError) as info:
        from_dict(Checked, {"size": 0}, "pseudo.appearance")
    assert info.value.key == "pseudo.appearance.size"
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, {"checked": {"size": 0}}, "pseudo")
    assert str(info.value).startswith("parameter 'pseudo.checked.size': must be >= 1")


def test_top_level_section_has_bare_keys() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Example, {"lrr": 1}, "")
    assert info.value.key == "lrr"


# --------------------------------------------------------------------------- #
# The params.yaml schema (busseg.params_schema)
# --------------------------------------------------------------------------- #


def _committed_params() -> dict:
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_the_committed_params_validate() -> None:
    from busseg.params_schema import validate_params

    validate_params(_committed_params())


def test_every_pseudo_backend_has_an_options_schema() -> None:
    from busseg.params_schema import backend_options
    from busseg.pseudo.registry import BACKENDS

    assert set(backend_options()) == set(BACKENDS)


def test_schema_follows_the_dataclasses() -> None:
    """A new field of TrainConfig / ModelConfig is an allowed key without editing the schema."""
    import dataclasses

    from busseg.params_schema import SECTIONS
    from busseg.training.config import TrainConfig

    assert SECTIONS["train"].schema() is TrainConfig
    warmup = SECTIONS["warmup"]
    allowed = {f.name for f in dataclasses.fields(warmup.schema())} - warmup.exclude
    assert "lr" in allowed and "method" not in allowed


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["pseudo"].update(promts=["x"]), "pseudo.promts"),
        (lambda p: p.update(label_ration=0.1), "label_ration"),
        (lambda p: p["runtime"].update(thread=2), "runtime.thread"),
        (lambda p: p["evaluate"].update(treshold=0.5), "evaluate.treshold"),
        (lambda p: p["split"].update(tran=0.7), "split.tran"),
        (lambda p: p["model"].update(encoders="resnet18"), "model.encoders"),
        (lambda p: p["pseudo"]["grounded_sam"].update(box_treshold=0.2), "pseudo.grounded_sam.box_treshold"),
        (lambda p: p.update(label_ratio="abc"), "label_ratio"),
        (lambda p: p.update(label_ratio=None), "label_ratio"),
        (lambda p: p.update(seed="x"), "seed"),
        (lambda p: p.update(seed=-1), "seed"),
        (lambda p: p.update(seed=True), "seed"),
        (lambda p: p.update(datasets={}), "datasets"),
        (lambda p: p.pop("datasets"), "datasets"),
        (lambda p: p["datasets"].update(other={"root": "x"}), "datasets.other.kind"),
        (lambda p: p["pseudo"].update(backend="sam3"), "pseudo.backend"),
        (lambda p: p["pseudo"].update(prompts=[]), "pseudo.prompts"),
        (lambda p: p["pseudo"].update(refine_init="warm"), "pseudo.refine_init"),
        (lambda p: p["pseudo"].update(refine_min_gain=-0.1), "pseudo.refine_min_gain"),
        (lambda p: p["pseudo"].update(refine_ground_truth="yes"), "pseudo.refine_ground_truth"),
        (lambda p: p["pseudo"].update(refine_pixel_certainty=1.5), "pseudo.refine_pixel_certainty"),
        (lambda p: p["pseudo"]["appearance"].update(working_size="big"), "pseudo.appearance.working_size"),
        (lambda p: p["pseudo"].pop("prompts"), "pseudo.prompts"),
        (lambda p: p["evaluate"].update(threshold=2), "evaluate.threshold"),
        (lambda p: p["runtime"].update(threads=-1), "runtime.threads"),
        (lambda p: p["train"].update(lr="fast"), "train.lr"),
        (lambda p: p.update(train=[1, 2]), "train"),
    ],
)
def test_schema_errors_name_the_key(edit, key: str) -> None:
    from busseg.params_schema import validate_params

    params = _committed_params()
    edit(params)
    with pytest.raises(ConfigError) as info:
        validate_params(params)
    assert info.value.key == key


def test_unknown_key_lists_what_is_available_there() -> None:
    from busseg.params_schema import validate_params

    params = _committed_params()
    params["pseudo"]["promts"] = ["x"]
    with pytest.raises(ConfigError, match=r"parameter 'pseudo.promts': unknown key; available: appearance, backend, .*prompts"):
        validate_params(params)


def test_exponent_strings_validate() -> None:
    from busseg.params_schema import validate_params

    params = _committed_params()
    params["train"]["lr"] = "1e-3"
    params["label_ratio"] = "1e-1"
    validate_params(params)


# --------------------------------------------------------------------------- #
# BUS-BRA scanners as datasets (issue 20)
# --------------------------------------------------------------------------- #


def _busbra_entries(*devices: list[str] | None) -> dict:
    """Dataset entries ``s0, s1, ...`` that all read one BUS-BRA folder, with these ``devices``."""
    entries = {}
    for number, selected in enumerate(devices):
        entry = {"kind": "busbra", "root": "/data/BUS-BRA" if number % 2 else "/data/./BUS-BRA/"}
        if selected is not None:
            entry["devices"] = selected
        entries[f"s{number}"] = entry
    return entries


def test_busbra_entries_of_disjoint_scanners_may_share_a_folder() -> None:
    from busseg.params_schema import validate_params

    params = _committed_params()
    params["datasets"] = _busbra_entries(["GE Logiq 7"], ["GE Logiq 5", "Toshiba Aplio 300", "U-Systems"])
    validate_params(params)


@pytest.mark.parametrize(
    ("devices", "problem"),
    [
        ((["GE Logiq 7"], ["GE Logiq 7", "U-Systems"]), "both select GE Logiq 7"),
        ((["GE Logiq 7"], None), "give each BUS-BRA entry a `devices` list"),
        ((None, None), "declare each dataset once"),
    ],
)
def test_busbra_entries_of_overlapping_scanners_are_refused(devices, problem: str) -> None:
    from busseg.params_schema import validate_params

    params = _committed_params()
    params["datasets"] = _busbra_entries(*devices)
    with pytest.raises(ConfigError, match=problem) as info:
        validate_params(params)
    assert info.value.key == "datasets.s1.root"


@pytest.mark.parametrize(
    ("devices", "key"),
    [(["Toshiba"], "datasets.s0.devices[0]"), ([], "datasets.s0.devices"), ("U-Systems", "datasets.s0.devices")],
)
def test_bad_busbra_devices_fail_validation_listing_the_scanners(devices, key: str) -> None:
    from busseg.params_schema import validate_params

    params = _committed_params()
    params["datasets"] = _busbra_entries(devices)
    with pytest.raises(ConfigError, match="available: 'GE Logiq 5', 'GE Logiq 7', 'Toshiba Aplio 300', 'U-Systems'") as info:
        validate_params(params)
    assert info.value.key == key
