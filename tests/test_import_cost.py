"""Stages without a network start without torch (issue 22: seconds per stage on a small machine).

That includes cross_evaluate (whose diagonal loads nothing) and refine (0 rounds by default).

Every stage checks the whole params.yaml, which used to import torch (busseg.runtime,
busseg.models) and torchvision's detection ops (busseg.pseudo.grounded_sam) even with the
appearance backend. Each stage here is imported and its params loaded in a fresh interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, sys
sys.argv = ["stage"]
spec = importlib.util.spec_from_file_location("stage", "stages/{stage}.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
import _params
_params.load_params()
print(sorted(m for m in ("torch", "torchvision", "groundingdino") if m in sys.modules))
"""


@pytest.mark.parametrize("stage", ["prepare", "split", "calibrate", "report", "pseudo_label", "cross_evaluate", "refine_inputs", "refine"])
def test_stage_without_a_network_loads_no_torch(stage: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "stages")])}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(stage=stage)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"stages/{stage}.py loads {proc.stdout.strip()} before doing anything"
