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


def test_images_with_a_lesion_are_ranked_when_there_are_any() -> None:
    # "empty" is lesion-free and predicted empty: a perfect 1.0 that shows nothing of a boundary
    scores = {"empty": 1.0, "a": 0.9, "b": 0.6, "c": 0.2}
    assert select_cases(scores, lesion_ids={"a", "b", "c"}) == {"best": "a", "median": "b", "worst": "c"}
    # no image with a lesion (or none scored): every image is ranked, as without lesion_ids
    assert select_cases({"empty": 1.0, "x": 0.5}, lesion_ids=set()) == {"best": "empty", "median": "empty", "worst": "x"}
    assert select_cases({"empty": 1.0, "x": math.nan}, lesion_ids={"x"}) == {"best": "empty", "median": "empty", "worst": "empty"}
