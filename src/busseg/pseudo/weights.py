"""The official Grounding DINO and SAM checkpoints, and checking a local copy of one.

The weights cannot ship with busseg (hundreds of MB, separate licences); the user
downloads them once from where their authors publish them. Before any model is
built, :func:`verify_weight_file` checks that the configured file exists and, for
an official file name, that its size and SHA-256 match the published checkpoint,
so that a truncated download or a wrong file fails with one readable line instead
of a ``load_state_dict`` traceback deep inside a library.

Sources of the values in :data:`OFFICIAL_WEIGHTS` (no network here, so they were
not recomputed): SAM's sizes and SHA-256 digests agree across several independent
public checksum tables (e.g. micro-sam's download registry); the MD5 digests begin
with the hash in SAM's file names (``01ec64``, ``0b3195``, ``4b8939``), which is how
Meta names them. The Grounding DINO digest and size likewise agree across several
public download scripts and checkpoint inventories.

Policy for a checkpoint whose file name is not in the table (e.g. a user's own
fine-tuned file): it is accepted after an existence check, with a logged warning,
because there is nothing to compare it with. ``verify_checksums=False`` in the
labeler options reduces every check to existence (useful for tests and for
renamed official files).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from busseg.errors import DataError

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 22  # 4 MiB reads keep hashing I/O-bound without a large buffer


@dataclass(frozen=True)
class WeightFile:
    """One published checkpoint.

    ``size`` (bytes), ``sha256`` and ``md5`` are ``None`` where no published value
    was found; verification then skips that check rather than invent one.
    """

    name: str
    url: str
    size: int | None
    sha256: str | None
    md5: str | None = None
    description: str = ""


OFFICIAL_WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="groundingdino_swint_ogc.pth",
            url="https://github.com/IDEA-Research/GroundingDINO/releases/download/"
            "v0.1.0-alpha/groundingdino_swint_ogc.pth",
            size=693_997_677,
            sha256="3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
            description="Grounding DINO Swin-T OGC (config GroundingDINO_SwinT_OGC.py)",
        ),
        WeightFile(
            name="sam_vit_b_01ec64.pth",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            size=375_042_383,
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            md5="01ec64d29a2fca3f0661936605ae66f8",
            description="Segment Anything ViT-B (sam_model_type vit_b)",
        ),
        WeightFile(
            name="sam_vit_l_0b3195.pth",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            size=1_249_524_607,
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            md5="0b3195507c641ddb6910d2bb5adee89c",
            description="Segment Anything ViT-L (sam_model_type vit_l)",
        ),
        WeightFile(
            name="sam_vit_h_4b8939.pth",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            size=2_564_550_879,
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            md5="4b8939a88964f0f4ff5f5b2642c598a6",
            description="Segment Anything ViT-H (sam_model_type vit_h)",
        ),
    )
}


def expected_weight(path: str | Path, table: Mapping[str, WeightFile] | None = None) -> WeightFile | None:
    """The table entry for ``path``'s file name, or ``None`` for an unknown file."""
    table = OFFICIAL_WEIGHTS if table is None else table
    return table.get(Path(path).name)


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (the checkpoints are up to 2.5 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weight_file(
    path: str | Path,
    expected: WeightFile | None,
    *,
    option: str = "",
    check_contents: bool = True,
) -> bool:
    """Check a local checkpoint; raise :class:`DataError` if it is not usable.

    Existence is always checked. With ``check_contents`` and an ``expected`` entry,
    the size (when published) and then the SHA-256 (when published) must match.
    ``option`` names the parameter that holds the path, for the message.

    Returns ``True`` when the SHA-256 was compared and matched, i.e. the file is
    byte-for-byte the published checkpoint (callers may then trust it further).
    """
    path = Path(path)
    where = _where_to_put(path, expected, option)
    if not path.is_file():
        problem = "is a folder, not a checkpoint file" if path.exists() else "checkpoint file is missing"
        raise DataError(path, f"{problem}. {where}")
    if expected is None:
        if check_contents:
            logger.warning("%s is not an official checkpoint name; only its existence was checked", path)
        return False
    if not check_contents:
        return False
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise DataError(
            path,
            f"wrong size: {size} bytes, the official {expected.name} has {expected.size} "
            f"(incomplete or different download?). {where}",
        )
    if expected.sha256 is None:
        logger.warning("no published SHA-256 for %s; checked existence and size only", expected.name)
        return False
    actual = sha256_of(path)
    if actual != expected.sha256:
        raise DataError(
            path,
            f"wrong sha256: {actual}, the official {expected.name} has {expected.sha256} "
            f"(corrupted or different file). {where}",
        )
    return True


def _where_to_put(path: Path, expected: WeightFile | None, option: str) -> str:
    """The 'what to do' half of an error message."""
    setting = f" (parameter {option})" if option else ""
    if expected is None:
        return f"Put the checkpoint at {path}{setting} or change the parameter to point at it."
    return (
        f"The official {expected.name} ({expected.description}) is published at {expected.url}; "
        f"download it and put it at {path}{setting}."
    )
