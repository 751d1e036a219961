"""Bad-input corpus for the prepare stage: hostile file names, stray files, tiny images,
tinted and colour scans, a full disk, ``ulimit -f`` and ``kill -9``.

Every case builds its dataset folder in a fresh working directory and runs the real
``stages/prepare.py`` as a user would. A case ends either in exit code 0 with what was
left out recorded in the prepare report, or in exit code 1 with one ``error:`` line
naming the file; never in a traceback, and never with a temporary or half-written
output left behind.
"""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from data.fixtures import (  # tests/ is on sys.path (rootdir of the test packages)
    add_calipers,
    add_doppler,
    box_mask,
    grey_image,
    make_bus_uclm_like,
    rgb,
    save,
    scan,
    tint,
)

REPO = Path(__file__).resolve().parents[2]
PREPARED = Path("data/prepared")
OUT = PREPARED / "mine"
REPORT = Path("metrics/prepare/mine.json")
STAGE_ARGS = ("--dataset", "mine", "--out", str(OUT), "--report", str(REPORT))


def write_params(cwd: Path, spec: dict) -> None:
    """The committed params.yaml with ``datasets`` replaced by the one dataset ``mine``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"mine": spec}
    params.setdefault("runtime", {})["progress"] = False
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _env() -> dict[str, str]:
    # No .pyc writes: under `ulimit -f` they would hit the limit before the stage starts.
    return {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run_prepare(cwd: Path, *, prefix: str = "") -> subprocess.CompletedProcess:
    """Run ``stages/prepare.py`` in ``cwd``; ``prefix`` is shell code run before it (ulimit)."""
    command = [sys.executable, str(REPO / "stages" / "prepare.py"), *STAGE_ARGS]
    if prefix:
        command = ["bash", "-c", f'{prefix}; exec "$@"', "bash", *command]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def leftovers(cwd: Path) -> list[str]:
    """Temporaries anywhere under ``cwd`` (``.<name>.<pid>.tmp``, old ``.building-*``)."""
    return sorted(
        str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.name.endswith(".tmp") or ".building-" in p.name
    )


def assert_clean_success(cwd: Path, proc: subprocess.CompletedProcess) -> dict:
    """Exit 0, no traceback, nothing temporary left, every file the index names exists;
    return the report."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(cwd) == []
    index = pd.read_csv(cwd / OUT / "index.csv", dtype=str, keep_default_na=False)
    for column in ("image", "mask"):
        for name in index[column]:
            assert (cwd / OUT / name).is_file(), f"index.csv names {name!r}, which does not exist"
    return json.loads((cwd / REPORT).read_text())


def assert_clean_failure(cwd: Path, proc: subprocess.CompletedProcess, names: str) -> str:
    """Exit 1, one ``error:`` line that contains ``names``, no traceback, no output and no
    temporary left; return the error line."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and names in errors[0], proc.stderr
    assert leftovers(cwd) == []
    assert not (cwd / OUT).exists() and not (cwd / REPORT).exists()
    return errors[0]


def folder_spec(**options) -> dict:
    """A `folder` dataset at `src/` of the working directory."""
    return {"kind": "folder", "root": "src", **options}


def pair(root: Path, name: str, seed: int, size: tuple[int, int] = (32, 32)) -> None:
    """An image ``images/<name>.png`` with its mask ``masks/<name>.png``."""
    save(root / "images" / f"{name}.png", grey_image(*size, seed))
    save(root / "masks" / f"{name}.png", box_mask(*size, size=min(size) // 2 or 1), mode="1")


# --- recorded skips and reports ----------------------------------------------------------


def test_names_with_spaces_and_newlines_get_safe_ids_that_later_stages_find(tmp_path):
    for seed, name in enumerate((" lead", "trail ", "new\nline", "ok")):
        pair(tmp_path / "src", name, seed)
    write_params(tmp_path, folder_spec())
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    index = pd.read_csv(tmp_path / OUT / "index.csv", dtype=str)
    assert sorted(index["id"]) == ["lead", "new_line", "ok", "trail"]
    assert report["n_images"] == 4 and report["n_skipped"] == 0
    # The next stage reads the index and finds what it names.
    split = subprocess.run(
        [sys.executable, str(REPO / "stages" / "split.py"), "--index", str(OUT / "index.csv"), "--out", "splits",
         "--metrics", "split.json"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert split.returncode == 0 and "Traceback" not in split.stderr, split.stderr


def test_busi_names_differing_only_in_non_ascii_characters_are_both_kept(tmp_path):
    base = tmp_path / "src" / "Dataset_BUSI_with_GT"
    (base / "malignant").mkdir(parents=True)
    for seed, name in enumerate(("lésion", "lèsion")):
        save(base / "benign" / f"{name}.png", rgb(grey_image(32, 32, seed)))
        save(base / "benign" / f"{name}_mask.png", box_mask(32, 32, size=8), mode="1")
    write_params(tmp_path, {"kind": "busi", "root": "src"})
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    assert report["n_images"] == 2 and report["n_skipped"] == 0
    assert "share this stem" not in json.dumps(report)


def test_a_one_pixel_image_is_a_recorded_skip(tmp_path):
    pair(tmp_path / "src", "good", 0)
    pair(tmp_path / "src", "dot", 1, size=(1, 1))
    write_params(tmp_path, folder_spec())
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    assert [(s["id"], s["reason"]) for s in report["skipped"]] == [
        ("dot", "image too small: 1x1 px (at least 16 px per side)")
    ]
    assert report["n_images"] == 1


def test_skipped_images_are_one_summary_line_on_the_console(tmp_path):
    pair(tmp_path / "src", "good", 0)
    for index in range(3):
        pair(tmp_path / "src", f"dot{index}", index, size=(2, 2))
    write_params(tmp_path, folder_spec())
    proc = run_prepare(tmp_path)
    report = assert_clean_success(tmp_path, proc)
    assert report["n_skipped"] == 3
    lines = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert lines == [f"prepare mine: skipped 3 of 4 images; the list with each reason is under 'skipped' in {REPORT}"]


def test_a_run_without_skips_or_warnings_prints_no_summary(tmp_path):
    pair(tmp_path / "src", "a", 0)
    write_params(tmp_path, folder_spec())
    proc = run_prepare(tmp_path)
    report = assert_clean_success(tmp_path, proc)
    assert report["warnings"] == [] and "skipped" not in proc.stderr and "warning" not in proc.stderr


def test_blank_images_with_lesions_whole_image_masks_and_one_image_two_masks_are_flagged(tmp_path):
    src = tmp_path / "src"
    pair(src, "good", 0)
    save(src / "images" / "black.png", np.zeros((32, 32), np.uint8))
    save(src / "masks" / "black.png", box_mask(32, 32, size=8), mode="1")
    save(src / "images" / "whole.png", grey_image(32, 32, 1))
    save(src / "masks" / "whole.png", np.ones((32, 32), bool), mode="1")
    save(src / "images" / "twin.png", grey_image(32, 32, 0))  # good's pixels, another mask
    save(src / "masks" / "twin.png", box_mask(32, 32, top=20, left=20, size=6), mode="1")
    save(src / "images" / "copy.png", grey_image(32, 32, 0))  # good's pixels and mask: a plain duplicate
    save(src / "masks" / "copy.png", box_mask(32, 32, size=16), mode="1")
    write_params(tmp_path, folder_spec())
    proc = run_prepare(tmp_path)
    report = assert_clean_success(tmp_path, proc)
    assert report["n_images"] == 5  # flagged, not dropped
    assert report["warnings"] == [
        {"id": "black", "problem": "blank image (every pixel 0) with a lesion in its mask"},
        {"id": "twin", "problem": "same image as copy but a different mask"},
        {"id": "whole", "problem": "the mask covers the whole image (inverted or a placeholder?)"},
    ]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert "3 imported samples look wrong" in line and "black: blank image" in line and str(REPORT) in line


def test_a_two_valued_mask_with_background_zero_is_imported(tmp_path):
    save(tmp_path / "src" / "images" / "a.png", grey_image(32, 32, 0))
    save(tmp_path / "src" / "masks" / "a.png", box_mask(32, 32, size=10).astype(np.uint8) * 120)  # {0, 120}
    write_params(tmp_path, folder_spec())
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    assert report["n_images"] == 1 and report["n_skipped"] == 0
    mask = np.asarray(Image.open(tmp_path / OUT / "masks" / "a.png"))
    assert (mask == 255).sum() == 100 and set(np.unique(mask)) == {0, 255}


def test_masks_without_images_hidden_files_and_csv_ids_without_images_are_reported(tmp_path):
    src = tmp_path / "src"
    pair(src, "a", 0)
    pair(src, "b", 1)
    save(src / "masks" / "orphan.png", box_mask(32, 32), mode="1")
    (src / "images" / ".DS_Store").write_bytes(b"\0\0")
    save(src / "images" / "._a.png", grey_image(32, 32, 0))  # macOS resource fork
    (src / "images" / "notes.txt").write_text("scanner settings")
    (src / "labels.csv").write_text("id,label\na,benign\nghost,malignant\n")
    write_params(tmp_path, folder_spec(labels_csv="labels.csv"))
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    ignored = {(Path(entry["path"]).name, entry["reason"].split(" (")[0]) for entry in report["ignored"]}
    assert ignored == {
        ("orphan.png", "mask without image"),
        (".DS_Store", "hidden file, not read"),
        ("._a.png", "hidden file, not read"),
        ("notes.txt", "not an image file"),
        ("labels.csv", "'ghost' listed in labels_csv, no such image"),
    }
    assert report["n_ignored"] == 5 and report["n_images"] == 2


def test_tinted_calipers_and_doppler_are_converted_and_listed_for_any_kind(tmp_path):
    src = tmp_path / "src"
    for name, image in (
        ("grey", rgb(scan(96, 128, 0))),
        ("tinted", add_calipers(tint(scan(96, 128, 1)))),
        ("doppler", add_doppler(tint(scan(96, 128, 2)))),
    ):
        save(src / "images" / f"{name}.png", image)
        save(src / "masks" / f"{name}.png", box_mask(96, 128, size=12), mode="1")
    write_params(tmp_path, folder_spec())
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    assert report["n_images"] == 3
    assert report["tinted_converted_ids"] == ["tinted"] and report["colour_converted_ids"] == ["doppler"]
    assert list(report["colour_reasons"]) == ["doppler"] and "flow colours" in report["colour_reasons"]["doppler"]


def test_a_bus_uclm_like_folder_imports_with_doppler_and_calipers_listed(tmp_path):
    facts = make_bus_uclm_like(tmp_path / "src", per_patient=3)
    write_params(tmp_path, {"kind": "bus_uclm", "root": "src"})
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    assert report["n_images"] == len(facts) == 12 and report["n_skipped"] == report["n_ignored"] == 0
    assert report["flagged"]["doppler"] == report["colour_converted_ids"] == sorted(
        i for i, f in facts.items() if f["doppler"] == "yes"
    )
    assert report["flagged"]["marks"] == sorted(i for i, f in facts.items() if f["marks"] == "yes")


def test_scans_with_bus_uclms_statistics_are_greyscale_content_and_doppler_colour(tmp_path):
    """Issue 21: the real folder's grey scans (a tinted map plus 1-1.5 % coloured marks and
    text) came out as colour_converted_ids; only the Doppler ones may. Both with INFO.csv
    (whose ``Doppler: Yes`` lists an image as colour) and without it (the pixels alone)."""
    from data.uclm_scans import write_uclm_folder

    doppler = write_uclm_folder(tmp_path / "src", n_grey=5, n_doppler=2, first_seed=900)
    write_params(tmp_path, {"kind": "bus_uclm", "root": "src"})
    expected_colour = sorted(i for i, d in doppler.items() if d == "yes")
    expected_tinted = sorted(i for i, d in doppler.items() if d == "no")
    for with_info in (True, False):
        if not with_info:
            (tmp_path / "src" / "INFO.csv").unlink()
        report = assert_clean_success(tmp_path, run_prepare(tmp_path))
        assert report["n_images"] == 7 and report["n_skipped"] == 0
        assert report["colour_converted_ids"] == expected_colour, with_info
        assert report["tinted_converted_ids"] == expected_tinted, with_info


UCLM_SAMPLE = REPO.parent / "shared" / "data" / "BUS-UCLM-sample"


@pytest.mark.skipif(not (UCLM_SAMPLE / "INFO.csv").is_file(), reason="BUS-UCLM sample not present at ../shared/data")
def test_real_bus_uclm_sample_lists_only_doppler_scans_as_colour_each_with_its_reason(tmp_path):
    """The 40 real scans: grey ones with the scanner's icon, marker and calipers are tinted
    greyscale content; each Doppler one is colour with where its flow is, found in its pixels."""
    import csv

    with open(UCLM_SAMPLE / "INFO.csv", encoding="utf-8-sig", newline="") as handle:
        doppler = {Path(r["Image"]).stem: r["Doppler"] == "Yes" for r in csv.DictReader(handle, delimiter=";")}
    write_params(tmp_path, {"kind": "bus_uclm", "root": str(UCLM_SAMPLE)})
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    written = set(doppler) - {s["id"] for s in report["skipped"]}
    assert report["colour_converted_ids"] == sorted(i for i in written if doppler[i])
    assert report["tinted_converted_ids"] == sorted(i for i in written if not doppler[i])
    assert set(report["colour_reasons"]) == set(report["colour_converted_ids"])
    for reason in report["colour_reasons"].values():
        assert re.search(r"painted colour areas? \(\d+ px\), the largest \d+ px at rows \d+-\d+", reason), reason


def test_a_10000_px_image_is_a_recorded_skip_read_no_further(tmp_path):
    from data.fixtures import write_huge_png_header

    pair(tmp_path / "src", "good", 0)
    write_huge_png_header(tmp_path / "src" / "images" / "huge.png", 10000, 10000)
    save(tmp_path / "src" / "masks" / "huge.png", box_mask(32, 32), mode="1")
    write_params(tmp_path, folder_spec())
    proc = run_prepare(tmp_path)
    report = assert_clean_success(tmp_path, proc)
    assert report["n_images"] == 1
    assert [(s["id"], s["reason"]) for s in report["skipped"]] == [
        ("huge", "cannot read image: too large: 10000 x 10000 px (100 MP); at most 16.8 MP (4096 x 4096 px) are read")
    ]
    assert "DecompressionBomb" not in proc.stderr and "Warning" not in proc.stderr


def test_a_root_that_is_a_file_is_called_a_file(tmp_path):
    (tmp_path / "scans.zip").write_bytes(b"PK\x03\x04")
    for kind in ("bus_uclm", "auto"):
        write_params(tmp_path, {"kind": kind, "root": "scans.zip"})
        error = assert_clean_failure(tmp_path, run_prepare(tmp_path), str(tmp_path / "scans.zip"))
        assert "is a file, not a dataset folder" in error and "not found" not in error


@pytest.mark.parametrize(
    ("spec", "key", "available"),
    [
        ({"kind": "synthetic", "count": 4, "cout": 4}, "cout", ("count", "seed", "kind", "root", "size")),
        ({"kind": "bus_uclm", "root": "src", "exclude_normals": True}, "exclude_normals", ("exclude_normal", "limit", "kind", "root")),
        ({"kind": "folder", "root": "src", "mask_sufix": "_m"}, "mask_sufix", ("mask_suffix", "labels_csv", "kind", "root")),
    ],
    ids=["synthetic", "bus_uclm", "folder"],
)
def test_an_unknown_dataset_key_lists_every_valid_key(tmp_path, spec, key, available):
    pair(tmp_path / "src", "a", 0)
    write_params(tmp_path, spec)
    error = assert_clean_failure(tmp_path, run_prepare(tmp_path), f"parameter 'datasets.mine.{key}': unknown key")
    listed = error.split("available: ", 1)[1].split(", ")
    assert set(available) <= set(listed), error


# --- faults: disk full, ulimit -f, kill -9 --------------------------------------------------


def _noise_folder(cwd: Path, count: int = 3) -> None:
    """``count`` pairs of 128 x 128 noise images: each PNG is about 16 KiB."""
    for index in range(count):
        pair(cwd / "src", f"case{index}", index, size=(128, 128))


def test_ulimit_f_gives_an_error_line_naming_the_file(tmp_path):
    _noise_folder(tmp_path)
    write_params(tmp_path, folder_spec())
    proc = run_prepare(tmp_path, prefix="ulimit -f 8")  # 8 KiB per file
    error = assert_clean_failure(tmp_path, proc, str(OUT / "images" / "case0.png"))
    assert "File too large" in error


_FULL_DISK = textwrap.dedent(
    """
    import builtins, errno, runpy, sys
    real_open = builtins.open
    target = sys.argv.pop(1)

    class Full:
        def __init__(self, handle): self._handle = handle
        def write(self, data): raise OSError(errno.ENOSPC, "No space left on device")
        def __getattr__(self, name): return getattr(self._handle, name)
        def __enter__(self): return self
        def __exit__(self, *exc): self._handle.close()
        def __iter__(self): return iter(self._handle)

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writing = any(c in mode for c in "wax+")
        return Full(handle) if writing and target in str(file) else handle

    builtins.open = full_open
    sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


@pytest.mark.parametrize(
    ("fails_on", "names"),
    [
        (".png", str(OUT / "images" / "case0.png")),
        ("index.csv", str(OUT / "index.csv")),
        (".json", str(REPORT)),
    ],
    ids=["first-image", "index", "report"],
)
def test_disk_full_gives_an_error_line_naming_the_file(tmp_path, fails_on, names):
    _noise_folder(tmp_path)
    write_params(tmp_path, folder_spec())
    command = [sys.executable, "-c", _FULL_DISK, fails_on, str(REPO / "stages" / "prepare.py"), *STAGE_ARGS]
    proc = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert names in error and "No space left on device" in error
    assert leftovers(tmp_path) == []
    assert not (tmp_path / REPORT).exists()
    if fails_on != ".json":  # the dataset was complete when the report failed: it may stay
        assert not (tmp_path / OUT).exists()


def test_kill_9_leftovers_are_removed_by_the_next_run(tmp_path):
    write_params(tmp_path, {"kind": "synthetic", "count": 400, "size": 128, "seed": 0})
    legacy = tmp_path / PREPARED / ".mine.building-0123abcd4567"  # left by the previous code
    (legacy / "images").mkdir(parents=True)
    command = [sys.executable, str(REPO / "stages" / "prepare.py"), *STAGE_ARGS]
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Built in the scratch folder, where any later run that uses it looks for leftovers.
    temporary = tmp_path / ".busseg" / "scratch" / f".prepared-mine.{proc.pid}.tmp"
    deadline = time.monotonic() + 120
    while not (temporary / "images").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert temporary.is_dir() and not (tmp_path / OUT).exists()  # what kill -9 leaves
    assert list((tmp_path / PREPARED).iterdir()) == []  # nothing beside the output (the legacy one went first)

    write_params(tmp_path, {"kind": "synthetic", "count": 20, "size": 64, "seed": 0})
    report = assert_clean_success(tmp_path, run_prepare(tmp_path))
    assert report["n_images"] == 20
    assert sorted(p.name for p in (tmp_path / PREPARED).iterdir()) == ["mine"]
    assert not temporary.exists()


def test_a_killed_prepares_temporary_is_removed_by_a_training_stage_that_starts_later(tmp_path):
    """DVC may restore the prepared folder from its run cache (no stage code runs): the next
    stage that uses the scratch folder removes what the killed prepare was building there."""
    from busseg.scratch import scratch_dir

    scratch = tmp_path / ".busseg" / "scratch"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = scratch / f".prepared-mine.{int(dead.stdout)}.tmp"
    (leftover / "images").mkdir(parents=True)
    (leftover / "images" / "a.png").write_bytes(b"half")
    scratch_dir("train-mine", "0123456789abcdef", root=scratch)
    assert not leftover.exists()


def test_outputs_get_the_usual_permissions(tmp_path):
    _noise_folder(tmp_path, count=1)
    write_params(tmp_path, folder_spec())
    assert_clean_success(tmp_path, run_prepare(tmp_path))
    umask = os.umask(0)
    os.umask(umask)
    for folder in (OUT, OUT / "images", OUT / "masks"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o777 & ~umask
    for path in (OUT / "index.csv", OUT / "images" / "case0.png", REPORT):
        assert stat.S_IMODE((tmp_path / path).stat().st_mode) == 0o666 & ~umask
