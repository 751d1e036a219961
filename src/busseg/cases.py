"""The test cases a person looks at first: the best, median and worst image by a score.

Shared by the evaluate stage, which draws their overlays, and the HTML report, which captions
them; a light module (no torch) so that the report stage does not import the network code.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping

#: The cases :func:`select_cases` picks, in the order the report shows them.
CASES = ("best", "median", "worst")


def select_cases(scores: Mapping[str, float], lesion_ids: Collection[str] | None = None) -> dict[str, str]:
    """``{"best": id, "median": id, "worst": id}`` for per-image ``scores`` (id -> e.g. Dice).

    Images are ranked by score, highest first, ties by id, so the choice is deterministic; the
    median is the upper middle one of an even count. NaN scores are left out; an empty dict
    when nothing is left. With ``lesion_ids`` (the images whose ground truth has a lesion), only
    those are ranked when any of them has a score: a lesion-free image predicted empty scores a
    perfect 1.0 (the empty-mask policy) but shows a person nothing about lesion boundaries.
    """
    usable = {str(i): float(s) for i, s in scores.items() if not math.isnan(float(s))}
    if lesion_ids is not None:
        wanted = {str(i) for i in lesion_ids}
        usable = {i: s for i, s in usable.items() if i in wanted} or usable
    ranked = sorted(((score, image_id) for image_id, score in usable.items()), key=lambda pair: (-pair[0], pair[1]))
    if not ranked:
        return {}
    return {"best": ranked[0][1], "median": ranked[(len(ranked) - 1) // 2][1], "worst": ranked[-1][1]}
