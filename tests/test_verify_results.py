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


def test_on_another_cpu_numbers_may_move_within_the_band_but_counts_may_not() -> None:
    committed = {"s": {"dice": 0.7292, "hd95": 27.4, "n_images": 41}}
    near = {"s": {"dice": 0.7232, "hd95": 30.1, "n_images": 41}}
    assert verify.differences(committed, near) != []  # same CPU: exact
    assert verify.differences(committed, near, verify.CROSS_CPU_ABS, verify.CROSS_CPU_REL) == []
    far = {"s": {"dice": 0.65, "hd95": 40.0, "n_images": 40}}
    assert verify.differences(committed, far, verify.CROSS_CPU_ABS, verify.CROSS_CPU_REL) == [
        "s.dice: committed 0.7292, produced 0.65",
        "s.hd95: committed 27.4, produced 40.0",
        "s.n_images: committed 41, produced 40",
    ]


def test_cpu_model_names_vendor_family_model_and_name() -> None:
    info = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel Xeon\n\nprocessor\t: 1\nvendor_id\t: Other\n"
    assert verify.cpu_model(info) == "GenuineIntel family 6 model 143 (Intel Xeon)"
    assert verify.cpu_model("") == "unknown"
