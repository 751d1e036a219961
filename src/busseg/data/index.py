"""The ``index.csv`` of a prepared dataset: its schema, writer and validating reader.

A prepared dataset folder (its layout: :mod:`busseg.data.prepared`) holds ``images/<id>.png`` (uint8 greyscale),
``masks/<id>.png`` (0/255 greyscale) and ``index.csv`` with one row per sample:

========  ====================================================================
column    meaning
========  ====================================================================
id        unique sample id, also the file stem of its image and mask
image     image path relative to the dataset folder (``images/<id>.png``)
mask      mask path relative to the dataset folder (``masks/<id>.png``), or empty
          for an image without a ground-truth mask (an unlabeled scan)
label     one of :data:`LABELS`
group     patient id; samples of one group must stay in one split (the id
          itself when the source has no patient ids)
width     image width in pixels
height    image height in pixels
hash      :func:`busseg.imageio.content_hash` of the image pixels; equal hashes
          mark duplicate images, which a split should keep together
source    optional: the source dataset of the sample in a ``composite``
          dataset (the split stratifies by it); other datasets have no such column
doppler   optional (datasets whose metadata says so, BUS-UCLM): ``yes``/``no``/
          ``unknown``, a colour Doppler image
marks     optional, as ``doppler``: calipers burned into the image
combined  optional, as ``doppler``: a side-by-side composite of two scans
========  ====================================================================

Images without a mask (:func:`has_mask` is False) are real unlabeled scans: the split
never puts them in validation or test, and no stage reads a mask for them.

The flag columns let a user filter the prepared data (say, train without caliper
images); :func:`read_index` does not return them, the pipeline does not use them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from busseg.atomic import atomic_path
from busseg.errors import DataError

INDEX_COLUMNS: tuple[str, ...] = ("id", "image", "mask", "label", "group", "width", "height", "hash")
"""Columns of ``index.csv``, in file order."""

SOURCE_COLUMN = "source"
"""Optional column after :data:`INDEX_COLUMNS`: kept when present, never required."""

FLAG_COLUMNS: tuple[str, ...] = ("doppler", "marks", "combined")
"""Optional columns after :data:`SOURCE_COLUMN`, written when a dataset has them."""

FLAG_VALUES: tuple[str, ...] = ("yes", "no", "unknown")
"""Allowed values of the :data:`FLAG_COLUMNS`."""

LABELS: tuple[str, ...] = ("benign", "malignant", "normal", "unknown")
"""Allowed values of the ``label`` column."""

_TEXT_COLUMNS = ("id", "image", "label", "group", "hash")
"""Columns that may not be empty (``mask`` may: an image without a ground-truth mask)."""
_SIZE_COLUMNS = ("width", "height")


def has_mask(index: pd.DataFrame) -> pd.Series:
    """Per row of ``index``: whether the image has a ground-truth mask (a non-empty ``mask``)."""
    return index["mask"].astype(str).str.strip() != ""


def write_index(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as ``index.csv`` at ``path`` (columns in :data:`INDEX_COLUMNS` order,
    then :data:`SOURCE_COLUMN` and the :data:`FLAG_COLUMNS` that ``df`` has).

    The table is validated first (same checks as :func:`read_index`) and the file is
    replaced atomically, so a reader never sees half a table.
    """
    path = Path(path)
    table = _validate(df.copy(), path, FLAG_COLUMNS)
    with atomic_path(path) as tmp_path:
        table.to_csv(tmp_path, index=False, encoding="utf-8", lineterminator="\n")


def read_index(path: str | Path) -> pd.DataFrame:
    """Read and validate an ``index.csv``; raise :class:`DataError` naming the file if broken.

    Text columns stay strings (a group ``"0012"`` is not turned into 12), width and
    height become ints, and the columns come back in :data:`INDEX_COLUMNS` order,
    followed by :data:`SOURCE_COLUMN` when the file has it (other columns are dropped).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "index not found; run the prepare stage first") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(path, f"cannot read index: {exc}") from None
    return _validate(df, path)


def _validate(df: pd.DataFrame, path: Path, flags: tuple[str, ...] = ()) -> pd.DataFrame:
    """Check columns, values and uniqueness; return the table in canonical column order,
    keeping those of the optional ``flags`` columns that ``df`` has."""
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            path,
            f"index is missing column(s) {', '.join(missing)}; expected {', '.join(INDEX_COLUMNS)}",
        )
    columns = list(INDEX_COLUMNS) + ([SOURCE_COLUMN] if SOURCE_COLUMN in df.columns else [])
    flag_columns = [flag for flag in flags if flag in df.columns]
    df = df.loc[:, columns + flag_columns].reset_index(drop=True)
    for flag in flag_columns:
        bad = df.index[~df[flag].isin(FLAG_VALUES)]
        if len(bad):
            raise DataError(
                path, f"row {bad[0] + 1}: '{flag}' must be one of {', '.join(FLAG_VALUES)}, got {df[flag][bad[0]]!r}"
            )
    df["mask"] = df["mask"].fillna("").astype(str)
    for column in _TEXT_COLUMNS + tuple(columns[len(INDEX_COLUMNS) :]):
        absent = df[column].isna()  # a table built in memory may hold NaN for a missing value
        df[column] = df[column].astype(str)
        empty = df.index[absent | (df[column].str.strip() == "")]
        if len(empty):
            raise DataError(path, f"row {empty[0] + 1}: empty '{column}'")
    for column in _SIZE_COLUMNS:
        numbers = pd.to_numeric(df[column], errors="coerce")
        bad = df.index[numbers.isna() | (numbers <= 0) | (numbers % 1 != 0)]
        if len(bad):
            raise DataError(
                path, f"row {bad[0] + 1}: '{column}' must be a positive integer, got {df[column][bad[0]]!r}"
            )
        df[column] = numbers.astype(int)
    unknown = df.index[~df["label"].isin(LABELS)]
    if len(unknown):
        raise DataError(
            path,
            f"row {unknown[0] + 1}: label {df['label'][unknown[0]]!r} not one of {', '.join(LABELS)}",
        )
    repeated = df["id"][df["id"].duplicated()]
    if len(repeated):
        raise DataError(path, f"id {repeated.iloc[0]!r} appears more than once")
    return df
