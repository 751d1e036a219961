from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest

from busseg.errors import DataError
from busseg.pseudo.weights import OFFICIAL_WEIGHTS, WeightFile, expected_weight, sha256_of, verify_weight_file

SAM_B = OFFICIAL_WEIGHTS["sam_vit_b_01ec64.pth"]
DINO_T = OFFICIAL_WEIGHTS["groundingdino_swint_ogc.pth"]


def _write(path: Path, payload: bytes) -> WeightFile:
    """Write ``payload`` and return a table entry that describes it exactly."""
    path.write_bytes(payload)
    return WeightFile(
        name=path.name,
        url="https://example.org/published/" + path.name,
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        description="test file",
    )


def test_table_has_the_official_checkpoints():
    assert set(OFFICIAL_WEIGHTS) == {
        "groundingdino_swint_ogc.pth",
        "sam_vit_b_01ec64.pth",
        "sam_vit_l_0b3195.pth",
        "sam_vit_h_4b8939.pth",
    }
    assert DINO_T.url.startswith("https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/")
    for entry in OFFICIAL_WEIGHTS.values():
        assert entry.url.endswith("/" + entry.name)
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.size is None or entry.size > 100_000_000


@pytest.mark.parametrize("name", ["sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth"])
def test_sam_file_names_carry_the_md5_prefix(name):
    # Meta names each SAM file after the first hex digits of its MD5: a cross-check of the table.
    entry = OFFICIAL_WEIGHTS[name]
    assert entry.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
    assert entry.md5 is not None and name.removesuffix(".pth").endswith("_" + entry.md5[:6])


def test_expected_weight_looks_up_the_file_name(tmp_path):
    assert expected_weight(tmp_path / "deep" / "sam_vit_b_01ec64.pth") is SAM_B
    assert expected_weight("my_finetuned.pth") is None
    custom = {"x.pth": SAM_B}
    assert expected_weight("a/x.pth", custom) is SAM_B


def test_sha256_of_matches_hashlib(tmp_path):
    payload = bytes(range(256)) * 50_000  # > one read chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    assert sha256_of(path) == hashlib.sha256(payload).hexdigest()


def test_missing_official_file_names_path_url_and_parameter(tmp_path):
    path = tmp_path / "weights" / "sam_vit_b_01ec64.pth"
    with pytest.raises(DataError) as info:
        verify_weight_file(path, SAM_B, option="sam_checkpoint")
    message = str(info.value)
    assert "missing" in message
    assert str(path) in message
    assert SAM_B.url in message
    assert "sam_checkpoint" in message


def test_wrong_size_is_reported_before_hashing(tmp_path):
    path = tmp_path / "groundingdino_swint_ogc.pth"
    path.write_bytes(b"truncated download")
    with pytest.raises(DataError, match="wrong size: 18 bytes") as info:
        verify_weight_file(path, DINO_T, option="dino_checkpoint")
    assert str(path) in str(info.value) and DINO_T.url in str(info.value)


def test_wrong_sha256(tmp_path):
    path = tmp_path / "model.pth"
    entry = _write(path, b"some bytes")
    wrong = WeightFile(entry.name, entry.url, entry.size, "0" * 64)
    with pytest.raises(DataError, match="wrong sha256") as info:
        verify_weight_file(path, wrong)
    assert str(path) in str(info.value) and entry.url in str(info.value)


def test_matching_file_is_trusted(tmp_path):
    path = tmp_path / "model.pth"
    entry = _write(path, b"the published bytes")
    assert verify_weight_file(path, entry) is True


@pytest.mark.parametrize("size_known", [True, False])
def test_unpublished_hash_checks_size_only(tmp_path, size_known):
    path = tmp_path / "model.pth"
    entry = _write(path, b"abc")
    partial_entry = WeightFile(entry.name, entry.url, entry.size if size_known else None, None)
    assert verify_weight_file(path, partial_entry) is False
    if size_known:
        path.write_bytes(b"abcd")
        with pytest.raises(DataError, match="wrong size"):
            verify_weight_file(path, partial_entry)


def test_unknown_file_needs_only_to_exist(tmp_path, caplog):
    path = tmp_path / "my_finetuned_sam.pth"
    path.write_bytes(b"anything")
    with caplog.at_level(logging.WARNING, logger="busseg.pseudo.weights"):
        assert verify_weight_file(path, None) is False
    assert "not an official checkpoint" in caplog.text
    with pytest.raises(DataError, match="missing"):
        verify_weight_file(tmp_path / "absent.pth", None)


def test_without_content_checks_only_existence_counts(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(b"renamed or converted copy")
    assert verify_weight_file(path, SAM_B, check_contents=False) is False
    with pytest.raises(DataError, match="missing"):
        verify_weight_file(tmp_path / "other" / SAM_B.name, SAM_B, check_contents=False)


def test_folder_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "sam_vit_b_01ec64.pth"
    folder.mkdir()
    with pytest.raises(DataError, match="is a folder"):
        verify_weight_file(folder, SAM_B)
