"""Tiny Grounding DINO / SAM architectures in pipeline subprocesses, for end-to-end tests.

The pipeline's pseudo_label stage runs as ``python stages/pseudo_label.py`` under
``dvc repro``, so the in-process patches of :mod:`tests.pseudo.tiny_vlm` (the narrow
Swin builder, the ``"tiny_test"`` entry of ``SAM_BUILDERS``) do not reach it. A test
puts this folder first on ``PYTHONPATH`` and sets ``BUSSEG_TEST_TINY_VLM=1``; Python
then imports this module at start-up in every subprocess, and it applies the same two
patches the moment ``busseg.pseudo.grounded_sam`` is imported. Everything else (weight
verification, ``torch.load``, ``load_state_dict``, labeling) is the production path.

Without the variable nothing happens; processes that never import the labeler (dvc
itself, the other stages) pay for nothing but this file. Another ``sitecustomize``
further on ``sys.path`` (e.g. the interpreter's own) is run too, not shadowed.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ENV_FLAG = "BUSSEG_TEST_TINY_VLM"
_HERE = Path(__file__).resolve().parent
_TINY_VLM = _HERE.parent / "tiny_vlm.py"
_TARGET = "busseg.pseudo.grounded_sam"


def _run_shadowed_sitecustomize() -> None:
    """Execute the next ``sitecustomize`` on ``sys.path``, which this file hides."""
    others = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``callback(module)`` right after module ``name`` is first executed."""

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 (importlib protocol)
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute, callback = spec.loader.exec_module, self.callback

        def exec_module(module: ModuleType) -> None:
            execute(module)
            callback(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _load_tiny_vlm() -> ModuleType:
    """tests/pseudo/tiny_vlm.py by file path (tests/ is not on the stage's sys.path)."""
    spec = importlib.util.spec_from_file_location("busseg_test_tiny_vlm", _TINY_VLM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _install_tiny_architectures(grounded_sam: ModuleType) -> None:
    tiny = _load_tiny_vlm()
    grounded_sam.SAM_BUILDERS[tiny.TINY_SAM_TYPE] = tiny.build_tiny_sam
    # For the life of the process: the stage builds its detector after this import.
    with warnings.catch_warnings():  # timm's deprecation notice when groundingdino is imported
        warnings.simplefilter("ignore", FutureWarning)
        _PATCHES.enter_context(tiny.tiny_swin())


_PATCHES = contextlib.ExitStack()

_run_shadowed_sitecustomize()
if os.environ.get(ENV_FLAG) == "1":
    sys.meta_path.insert(0, _AfterImport(_TARGET, _install_tiny_architectures))
