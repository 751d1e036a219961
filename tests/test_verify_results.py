"""tools/verify_results.py: the CI check that the committed lock and metrics match the code."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("verify_results", REPO / "tools" / "verify_results.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)  # type: ignore[union-attr]


def test_changed_code_or_params_is_a_mismatch_but_missing_data_is_not() -> None:
    status = {
        "train@synthetic": [
            {"changed deps": {"src/busseg/training": "modified", "data/prepared/synthetic": "deleted"}},
            {"changed outs": {"models/synthetic/student.pt": "not in cache"}},
        ],
        "split@synthetic": [{"changed params": {"params.yaml": {"label_ratio": "modified"}}}],
        "prepare@synthetic": [{"changed deps": {"data/prepared/synthetic/index.csv": "deleted"}}],
    }
    assert verify.changed_stages(status) == [
        "train@synthetic: src/busseg/training modified",
        "split@synthetic: params.yaml {'label_ratio': 'modified'}",
    ]


def test_metric_differences_respect_the_tolerance() -> None:
    committed = {"synthetic": {"dice": 0.613491, "n_images": 41, "backend": "appearance", "hd95": float("nan")}}
    assert verify.differences(committed, {"synthetic": {**committed["synthetic"], "dice": 0.61349}}) == []
    produced = {"synthetic": {"dice": 0.686, "n_images": 41, "backend": "appearance", "extra": 1.0, "hd95": float("nan")}}
    assert verify.differences(committed, produced) == [
        "synthetic.dice: committed 0.613491, produced 0.686",
        "synthetic.extra: missing in the committed file",
    ]
