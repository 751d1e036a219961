"""Which pseudo labels train the static teacher."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from busseg.errors import TrainingError


def select_training_labels(labels_csv: str | Path, pool_ids: list[str], min_score: float) -> list[str]:
    """Ids of ``pool_ids`` whose pseudo label is valid and scores at least ``min_score``.

    Raises :class:`TrainingError` when none is left, saying what to change.
    """
    table = pd.read_csv(labels_csv, keep_default_na=False, dtype={"id": str})
    table = table[table["id"].isin(set(pool_ids))]
    valid = table["valid"].astype(str) == "True"
    chosen = table[valid & (table["score"].astype(float) >= min_score)]
    if chosen.empty:
        raise TrainingError(
            f"no valid pseudo label with score >= {min_score} among the {len(pool_ids)} train images "
            f"({int(valid.sum())} valid at any score; see {labels_csv}); lower pseudo.min_score, "
            "change pseudo.prompts or pseudo.backend"
        )
    return sorted(chosen["id"])
