"""dvc.yaml declares, for every stage, each source file the stage's script can import.

A module missing from a stage's deps means a change there does not re-run the stage, so
the committed dvc.lock and metrics would no longer be what the code produces. The import
tree is read statically (every ``import`` statement, lazy ones inside functions included)
from the stage script down through ``busseg``.

One module is not followed: ``busseg.params_schema``, which every stage imports (through
``stages/_params.py``) to reject a misspelt key in params.yaml before doing anything. It
imports every section's dataclass, but it only accepts or rejects a params file and cannot
change a stage's outputs; following it would make every stage depend on every module, and
re-train on a change to, say, the Grounding DINO wrapper.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
VALIDATION_ONLY = {"busseg.params_schema"}


def module_file(name: str) -> Path | None:
    """The source file of a ``busseg`` module or the stages' local ``_params`` helper."""
    if name == "_params":
        return REPO / "stages" / "_params.py"
    if name != "busseg" and not name.startswith("busseg."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Modules named by the import statements of ``path``, with their parent packages."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from busseg.x import y`: y may itself be a module.
            found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in found:
            parts = name.split(".")
            names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return names


def import_closure(*roots: Path) -> set[Path]:
    """Every project source file the ``roots`` can import, directly or through others."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        modules = imported_modules(path) - VALIDATION_ONLY
        todo.extend(f for f in map(module_file, modules) if f is not None)
    return seen


def command_roots(cmd: str) -> list[Path]:
    """The files a stage command runs: its stage script, and a ``python -m busseg.<module>`` launcher."""
    roots = [REPO / re.search(r"(stages/\S+\.py)", cmd).group(1)]
    launcher = re.search(r"python -m (busseg[\w.]*)", cmd)
    if launcher:
        roots.append(module_file(launcher.group(1)))
    return roots


def stage_scripts_and_deps() -> list[tuple[str, list[Path], list[str]]]:
    """(stage name, files its command runs, declared deps) for each stage of dvc.yaml (templates unresolved)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        out.append((name, command_roots(body["cmd"]), [d for d in body.get("deps", []) if "${" not in d]))
    return out


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep.rstrip("/") or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage, roots, deps", stage_scripts_and_deps(), ids=lambda v: v if isinstance(v, str) else "")
def test_stage_deps_cover_its_import_tree(stage: str, roots: list[Path], deps: list[str]) -> None:
    missing = sorted(p.relative_to(REPO).as_posix() for p in import_closure(*roots) if not covered(p, deps))
    assert not missing, f"stage {stage}: dvc.yaml deps miss modules its script imports: {missing}"


def test_the_closure_reaches_the_method_modules() -> None:
    closure = {p.relative_to(REPO).as_posix() for p in import_closure(REPO / "stages" / "train.py")}
    assert "src/busseg/training/methods/dual_teacher.py" in closure
    assert "stages/_params.py" in closure


def test_a_launcher_module_counts_as_part_of_the_command() -> None:
    roots = command_roots("python -m busseg.launch --nproc 2 stages/train.py --out x")
    assert [p.relative_to(REPO).as_posix() for p in roots] == ["stages/train.py", "src/busseg/launch.py"]


@pytest.mark.parametrize("stage, roots, deps", stage_scripts_and_deps(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_dependency_is_an_empty_file(stage: str, roots: list[Path], deps: list[str]) -> None:
    """DVC prints ``WARNING: '<dep>' is empty.`` for each empty file dependency on every run:
    noise a user learns to ignore, which hides the real warnings (issue 21). An empty
    package ``__init__.py`` gets a one-line docstring instead."""
    empty = [dep for dep in deps if (REPO / dep).is_file() and (REPO / dep).stat().st_size == 0]
    assert not empty, f"stage {stage}: empty files among its deps: {empty}"
