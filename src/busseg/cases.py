"""The test cases a person looks at first: the best, median and worst image by a score.

Shared by the evaluate stage, which draws their overlays, and the HTML report, which captions
them; a light module (no torch) so that the report stage does not import the network code.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

#: The cases :func:`select_cases` picks, in the order the report shows them.
CASES = ("best", "median", "worst")


def select_cases(scores: Mapping[str, float]) -> dict[str, str]:
    """``{"best": id, "median": id, "worst": id}`` for per-image ``scores`` (id -> e.g. Dice).

    Images are ranked by score, highest first, ties by id, so the choice is deterministic; the
    median is the upper middle one of an even count. NaN scores are left out; an empty dict
    when nothing is left.
    """
    ranked = sorted(
        ((float(score), str(image_id)) for image_id, score in scores.items() if not math.isnan(float(score))),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if not ranked:
        return {}
    return {"best": ranked[0][1], "median": ranked[(len(ranked) - 1) // 2][1], "worst": ranked[-1][1]}
