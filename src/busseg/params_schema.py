"""The schema of params.yaml: every key any stage reads, checked whenever a stage loads params.

A misspelt key (``pseudo.promts``, a top-level ``label_ration``) would otherwise change
nothing and let the pipeline run with the default, so :func:`validate_params` rejects
every key the schema does not know, with the error naming the full key and listing the
keys available there. Types are checked too, so that a stage never meets ``seed: x``
as a ``ValueError`` deep inside.

Where a section is read into a dataclass by its stage (``model``, ``train``, ``warmup``,
``split``, the pseudo-label backends' options), the schema *is* that dataclass: a new
field is a new allowed key without touching this module. Sections that stages read as
plain values (the top-level scalars, ``pseudo``, ``evaluate``, ``runtime``) are declared
once here, as the dataclasses below. Dataset entries are checked only for shape here:
their keys depend on the ``kind``, and the importer checks them when ``prepare`` (the
only stage that reads an entry) runs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busseg.config import check_range, from_dict, join_key
from busseg.errors import ConfigError


@dataclass(frozen=True)
class TopLevelParams:
    """The scalar parameters at the top of params.yaml."""

    # Fraction of the train split whose ground truth the student may see.
    label_ratio: float = 0.1
    seed: int = 0

    def check(self) -> None:
        check_range("label_ratio", self.label_ratio, 0.0, 1.0, low_open=True)
        if self.seed < 0:
            raise ConfigError("seed", f"must be an integer >= 0, got {self.seed}")


#: How each refinement round's teacher starts (``pseudo.refine_init``).
REFINE_INITS = ("continue", "fresh")
#: Which network re-labels the train split in each refinement round (``pseudo.refine_relabel``).
REFINE_RELABELERS = ("student", "teacher")


@dataclass(frozen=True)
class PseudoParams:
    """The scalar keys of ``pseudo`` (each backend's own options sit in ``pseudo.<backend>``)."""

    backend: str = "appearance"
    prompts: tuple[str, ...] = ("dark oval", "dark round", "dark lobulated")
    min_area_fraction: float = 0.01
    n_overlays: int = 12
    # Read by warmup and refine: pseudo labels scoring below this do not train the static teacher.
    min_score: float = 0.0
    # Read by refine: label-refinement rounds (0 = the warm-up's teacher unchanged); at most
    # this many: a round whose teacher does not validate better than the best so far by more
    # than refine_min_gain is rejected (the best teacher and its labels are kept) and stops them.
    refine_rounds: int = 0
    refine_min_gain: float = 0.0
    # Each round's teacher: fresh (the warm-up's initialisation) | continue (from the best so far).
    refine_init: str = "fresh"
    # Who re-labels the train split each round: teacher (the best teacher so far) | student (a
    # student trained with the train section from that teacher: noisy-student self-training).
    refine_relabel: str = "teacher"
    # The labeled split's ground truth replaces its pseudo labels in every round (refine then
    # depends on label_ratio and re-runs with it; with 0 rounds it passes the teacher through).
    refine_ground_truth: bool = True
    # Pixels of a re-labeled image whose certainty (busseg.pseudo.refine.pixel_certainty_map) is
    # below this are left out of the next teacher's loss (0 = every pixel counts); ground truth
    # and first-round labels count whole.
    refine_pixel_certainty: float = 0.0
    # Snap each re-labeled image's label to the appearance labeler's candidate region that agrees
    # best with it, when their Dice agreement reaches this (0 = off): location from the network,
    # boundary from the image.
    refine_snap: float = 0.0
    # Read by calibrate: none | labeled (few-shot calibration of the appearance prior).
    calibration: str = "none"

    def check(self) -> None:
        if self.calibration not in ("none", "labeled"):
            raise ConfigError("pseudo.calibration", f"unknown calibration '{self.calibration}'; available: labeled, none")
        if self.refine_rounds < 0:
            raise ConfigError("pseudo.refine_rounds", f"must be an integer >= 0, got {self.refine_rounds}")
        if self.refine_init not in REFINE_INITS:
            raise ConfigError("pseudo.refine_init", f"unknown '{self.refine_init}'; available: {', '.join(REFINE_INITS)}")
        check_range("pseudo.refine_min_gain", self.refine_min_gain, 0.0, 1.0)
        check_range("pseudo.refine_pixel_certainty", self.refine_pixel_certainty, 0.0, 1.0)
        check_range("pseudo.refine_snap", self.refine_snap, 0.0, 1.0)
        if self.refine_relabel not in REFINE_RELABELERS:
            raise ConfigError("pseudo.refine_relabel", f"unknown '{self.refine_relabel}'; available: {', '.join(REFINE_RELABELERS)}")
        if not self.prompts:
            raise ConfigError("pseudo.prompts", "need at least one appearance description")
        check_range("pseudo.min_area_fraction", self.min_area_fraction, 0.0, 1.0)
        if self.n_overlays < 0:
            raise ConfigError("pseudo.n_overlays", f"must be >= 0, got {self.n_overlays}")


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section (evaluate and cross_evaluate stages)."""

    threshold: float = 0.5
    n_overlays: int = 8
    cross_dataset: bool = True

    def check(self) -> None:
        check_range("evaluate.threshold", self.threshold, 0.0, 1.0)
        if self.n_overlays < 0:
            raise ConfigError("evaluate.n_overlays", f"must be >= 0, got {self.n_overlays}")


@dataclass(frozen=True)
class RuntimeParams:
    """The ``runtime`` section (every stage that computes)."""

    device: str = "auto"
    # torch threads: a count (0 = torch's default) or auto (all cores; 1 in a dvc queue worker)
    threads: int | str = 1
    progress: bool = True
    # Read by stages/_params.py before torch loads: CPU kernels capped at AVX2 so that results
    # do not depend on the CPU's instruction set (see PORTABLE_CPU_KERNELS there).
    portable_kernels: bool = True
    # DDP ranks for the training stages (busseg.launch checks it against the cores / GPUs).
    nproc: int = 1
    # torch.compile the student in warmup and train (GPU runs; off by default)
    compile: bool = False

    def check(self) -> None:
        from busseg.runtime import resolve_threads

        resolve_threads(self.threads)
        if self.nproc < 1:
            raise ConfigError("runtime.nproc", f"must be an integer >= 1, got {self.nproc}")


@dataclass(frozen=True)
class Section:
    """How one mapping section of params.yaml is checked.

    ``schema`` is the dataclass the section is read into (a callable, so that heavy
    imports happen only when params are checked); ``exclude`` are fields the stage sets
    itself and a user may therefore not set (they would be silently overridden);
    ``fixed`` are those values, needed to build the dataclass.
    """

    schema: Callable[[], type]
    exclude: frozenset[str] = frozenset()
    fixed: Mapping[str, Any] = field(default_factory=dict)


def _train_config() -> type:
    from busseg.training.config import TrainConfig

    return TrainConfig


def _warmup_fixed() -> dict[str, Any]:
    from busseg.training.config import WARMUP_FIXED

    return dict(WARMUP_FIXED)


def _model_config() -> type:
    from busseg.model_config import ModelConfig  # not busseg.models: no torch to check params

    return ModelConfig


def _split_config() -> type:
    from busseg.data.split import SplitConfig

    return SplitConfig


SECTIONS: dict[str, Section] = {
    "split": Section(_split_config),
    "model": Section(_model_config),
    "warmup": Section(
        _train_config,
        # stages/warmup.py trains the static teacher supervised, on labeled batches only.
        exclude=frozenset(_warmup_fixed()),
        fixed=_warmup_fixed(),
    ),
    "train": Section(_train_config),
    "evaluate": Section(lambda: EvaluateParams),
    "runtime": Section(lambda: RuntimeParams),
}
"""Mapping sections read into one dataclass each (``pseudo`` and ``datasets`` are special)."""

REQUIRED = ("label_ratio", "pseudo.backend", "pseudo.prompts", "pseudo.min_area_fraction",
            "train.method", "model.encoder", "model.image_size")
"""Keys that stages read without a default (they are in the committed params.yaml)."""


def top_level_keys() -> list[str]:
    """Every key allowed at the top of params.yaml."""
    scalars = [f.name for f in dataclasses.fields(TopLevelParams)]
    return sorted([*scalars, "datasets", "pseudo", *SECTIONS])


def backend_options() -> dict[str, type]:
    """The options dataclass of every pseudo-label backend (``pseudo.<backend>`` sections).

    Kept beside :data:`busseg.pseudo.registry.BACKENDS` by a test, so that a new backend
    without an entry here fails CI rather than every stage.
    """
    from busseg.pseudo.appearance import AppearanceOptions
    # The options' own module, not busseg.pseudo.grounded_sam, which loads torch and torchvision's
    # detection ops (seconds) in every stage even when the backend is appearance.
    from busseg.pseudo.grounded_sam_options import GroundedSamOptions

    return {"appearance": AppearanceOptions, "grounded_sam": GroundedSamOptions}


def validate_params(params: Any) -> None:
    """Raise :class:`ConfigError` naming the first unknown, ill-typed or missing key.

    ``params`` is the whole parsed params.yaml. Nothing is returned or changed: stages
    go on reading the plain dict (and the sections' dataclasses via ``from_dict``).
    """
    if not isinstance(params, Mapping):
        raise ConfigError("params.yaml", f"expected a mapping of parameters, got {params!r}")
    # Unknown keys first: a misspelt key is also a missing one, and the typo is the news.
    _check_keys(params, top_level_keys(), "")
    check_datasets(params.get("datasets"))
    check_distinct_roots(params["datasets"])
    top = from_dict(TopLevelParams, {k: params[k] for k in _field_names(TopLevelParams) if k in params}, "")
    top.check()
    _check_pseudo(params.get("pseudo"))
    for name, section in SECTIONS.items():
        _check_section(name, section, params.get(name))
    _check_split(params.get("split"))
    _check_required(params)


EXAMPLE_DATASET_ENTRY = "synthetic: {kind: synthetic, root: src/busseg/data/synthetic.py, count: 150}"
"""The entry the error for an empty ``datasets`` suggests, as YAML that works when pasted:
every entry needs a ``root`` (dvc.yaml tracks it; a synthetic dataset's is its generator)."""


def check_datasets(datasets: Any) -> list[str]:
    """The declared dataset names; an error when there are none or an entry is no mapping."""
    if datasets is None or (isinstance(datasets, Mapping) and not datasets):
        raise ConfigError(
            "datasets",
            f"no dataset declared; add at least one entry, e.g. `{EXAMPLE_DATASET_ENTRY}`",
        )
    if not isinstance(datasets, Mapping):
        raise ConfigError("datasets", f"expected a mapping of dataset name -> spec, got {datasets!r}")
    for name, spec in datasets.items():
        key = join_key("datasets", str(name))
        if not isinstance(spec, Mapping):
            raise ConfigError(key, f"expected a dataset spec (kind, root, options), got {spec!r}")
        if "kind" not in spec:
            raise ConfigError(f"{key}.kind", "missing; the dataset kind to import")
    return [str(name) for name in datasets]


def check_distinct_roots(datasets: Mapping[str, Any]) -> None:
    """Refuse two dataset entries (or composite sources) that read the same images.

    Every stage fans out per entry and the report crosses them: two entries of one folder
    would show a dataset's in-domain results in the cross-dataset table as if they were
    results on another dataset. ``synthetic`` entries are left out (their ``root`` is the
    generator module; their seed makes them different data). Two ``busbra`` entries may
    share a folder when both select scanners (``devices``) and no scanner is in both:
    they are then different data (one held-out scanner against the others).
    """
    seen: list[_Root] = []
    for entry in _dataset_roots(datasets):
        for other in seen:
            if other.path != entry.path:
                continue
            if entry.devices is not None and other.devices is not None and not entry.devices & other.devices:
                continue
            shared = (
                f"; both select {', '.join(sorted(entry.devices & other.devices))}"
                if entry.devices is not None and other.devices is not None
                else "; give each BUS-BRA entry a `devices` list, no scanner in two lists"
                if entry.kind == other.kind == "busbra"
                else ""
            )
            raise ConfigError(
                entry.key,
                f"the same folder as {other.key} ({entry.path}): the report's cross-dataset table would show "
                f"in-domain results as cross-dataset ones; declare each dataset once{shared}",
            )
        seen.append(entry)


@dataclass(frozen=True)
class _Root:
    """A folder that a dataset entry (or composite source) reads: ``key`` names its ``root``
    parameter, ``devices`` the BUS-BRA scanners it selects (``None``: every image)."""

    key: str
    path: Path
    kind: Any
    devices: frozenset[str] | None


def _dataset_roots(datasets: Mapping[str, Any]) -> list[_Root]:
    """Every entry that reads a folder, composite sources included (resolved against the
    composite's root, as the importer does); a ``busbra`` entry's ``devices`` are checked."""
    roots: list[_Root] = []
    for name, spec in datasets.items():
        key = join_key("datasets", str(name))
        root = spec.get("root")
        if spec.get("kind") == "synthetic" or not isinstance(root, (str, Path)) or not str(root).strip():
            continue
        resolved = (Path.cwd() / Path(root).expanduser()).resolve()
        sources = spec.get("sources")
        if spec.get("kind") == "composite" and isinstance(sources, Mapping):
            for source, source_spec in sources.items():
                source_root = source_spec.get("root") if isinstance(source_spec, Mapping) else None
                if isinstance(source_root, (str, Path)) and str(source_root).strip():
                    source_key = f"{key}.sources.{source}"
                    path = (resolved / Path(source_root).expanduser()).resolve()
                    roots.append(_Root(f"{source_key}.root", path, source_spec.get("kind"), _devices(source_spec, source_key)))
            continue
        roots.append(_Root(f"{key}.root", resolved, spec.get("kind"), _devices(spec, key)))
    return roots


def _devices(spec: Mapping[str, Any], key: str) -> frozenset[str] | None:
    """The scanners a ``busbra`` entry selects (checked), ``None`` for every scanner or another kind."""
    if spec.get("kind") != "busbra" or spec.get("devices") is None:
        return None
    from busseg.data.importers.busbra import check_devices

    return check_devices(spec["devices"], f"{key}.devices")


def _check_split(values: Any) -> None:
    """``split``: the fractions (as the split stage checks them), and a validation share > 0."""
    from busseg.data.split import SplitConfig

    split = from_dict(SplitConfig, _mapping(values, "split"), "split")
    split.check()
    if split.val <= 0:
        raise ConfigError(
            "split.val",
            "must be > 0: warmup, refine and train keep the checkpoint with the best validation Dice and "
            "lower the learning rate when it stalls; with no validation images both would go by nan",
        )


def _check_pseudo(pseudo: Any) -> None:
    """``pseudo``: its scalar keys, and one options section per known backend."""
    from busseg.pseudo.registry import BACKENDS

    pseudo = _mapping(pseudo, "pseudo")
    scalars = {k: v for k, v in pseudo.items() if k not in BACKENDS}
    _check_keys(pseudo, [*_field_names(PseudoParams), *BACKENDS], "pseudo")
    options = from_dict(PseudoParams, scalars, "pseudo")
    options.check()
    if options.backend not in BACKENDS:
        raise ConfigError("pseudo.backend", f"unknown backend '{options.backend}'; available: {', '.join(sorted(BACKENDS))}")
    classes = backend_options()
    for backend in BACKENDS:
        if backend not in pseudo or backend not in classes:
            continue
        own = _mapping(pseudo[backend], f"pseudo.{backend}")
        if backend == "appearance":
            from busseg.pseudo.appearance import check_moved_options

            check_moved_options(own)
        # As stages/pseudo_label.py builds it: the shared keys, then the backend's own.
        merged = {"prompts": list(options.prompts), "min_area_fraction": options.min_area_fraction, **own}
        from_dict(classes[backend], merged, f"pseudo.{backend}")


def _check_section(name: str, section: Section, values: Any) -> None:
    """One dataclass-backed section: allowed keys, then types (and ``__post_init__`` checks)."""
    values = _mapping(values, name)
    schema = section.schema()
    if name == "train" and isinstance(values, Mapping) and "init_from_static" in values:
        raise ConfigError(
            "train.init_from_static", "replaced by train.init: static_teacher (was true) or none (was false)"
        )
    _check_keys(values, [k for k in _field_names(schema) if k not in section.exclude], name)
    config = from_dict(schema, {**values, **section.fixed}, name)
    if schema in (EvaluateParams, RuntimeParams):  # ours; the library's run their own checks
        config.check()


def _check_keys(values: Mapping[str, Any], allowed: list[str], section: str) -> None:
    """Raise for the first key of ``values`` not in ``allowed`` (sorted, for a stable message)."""
    unknown = sorted((str(k) for k in values if k not in allowed))
    if unknown:
        raise ConfigError(join_key(section, unknown[0]), f"unknown key; available: {', '.join(sorted(allowed))}")


def _check_required(params: Mapping[str, Any]) -> None:
    """Raise for the first key of :data:`REQUIRED` that is absent (a section may be null)."""
    for key in REQUIRED:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(key, "missing; see the committed params.yaml for its meaning")
            node = node[part]


def _mapping(values: Any, key: str) -> Mapping[str, Any]:
    """A section's value as a mapping (an empty or null section is an empty mapping)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(key, f"expected a mapping of keys, got {values!r}")
    return values


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
