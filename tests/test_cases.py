"""Picking the best, median and worst test cases."""
from __future__ import annotations

import math

from busseg.cases import select_cases


def test_best_median_worst_by_score_ties_by_id() -> None:
    scores = {"c": 0.5, "a": 0.9, "b": 0.5, "d": 0.1, "e": math.nan}
    # ranked: a 0.9, b 0.5, c 0.5, d 0.1 (NaN left out); the median is the upper middle one
    assert select_cases(scores) == {"best": "a", "median": "b", "worst": "d"}


def test_one_image_is_all_three_and_none_is_empty() -> None:
    assert select_cases({"x": 0.3}) == {"best": "x", "median": "x", "worst": "x"}
    assert select_cases({}) == {} and select_cases({"x": math.nan}) == {}
