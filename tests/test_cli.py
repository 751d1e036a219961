"""``busseg predict``: output names, the summary, skipped inputs and the exit code."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busseg.cli import MASK_SUFFIX, OVERLAY_SUFFIX, main, plan_jobs


def grey(path: Path, shape: tuple[int, int] = (40, 52), seed: int = 0) -> Path:
    """Write a random greyscale image (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def predict(checkpoint: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    argv = ["predict", "--model", str(checkpoint), "--out", str(out), "--no-progress", *extra, *map(str, inputs)]
    return main(argv)


def test_plan_mirrors_folders_and_keeps_the_whole_file_name(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    for rel in ("scan.png", "scan.jpg", "sub/scan.png", "sub/deeper/b.TIF", "notes.txt", ".hidden.png", ".cache/x.png"):
        (scans / rel).parent.mkdir(parents=True, exist_ok=True)
        (scans / rel).write_bytes(b"")
    plan = plan_jobs([scans], tmp_path / "out")
    assert [str(job.name) for job in plan.jobs] == ["scan.jpg", "scan.png", "sub/scan.png", "sub/deeper/b.TIF"]
    assert plan.jobs[2].output(tmp_path / "out", MASK_SUFFIX) == tmp_path / "out" / "sub" / "scan.png.mask.png"
    assert plan.skipped == [] and plan.ignored == 0


def test_plan_skips_a_second_input_with_the_same_output_instead_of_overwriting(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "scan.png", tmp_path / "b" / "scan.png"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(b"")
    plan = plan_jobs([a, b, a], tmp_path / "out")  # a twice: predicted once, not a collision
    assert [job.source for job in plan.jobs] == [a]
    assert len(plan.skipped) == 1 and plan.skipped[0][0] == b
    assert "already that of" in plan.skipped[0][1] and str(a) in plan.skipped[0][1]


def test_plan_never_reads_its_own_outputs(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    (scans / "pred").mkdir(parents=True)
    for name in ("scan.png", "scan.png.mask.png", "scan.png.overlay.png", "pred/other.png"):
        (scans / name).write_bytes(b"")
    # --out inside the input folder: that folder is left out entirely.
    plan = plan_jobs([scans], scans / "pred")
    assert [str(job.name) for job in plan.jobs] == ["scan.png"] and plan.ignored == 2
    # --out equal to the input folder: output names are left out.
    plan = plan_jobs([scans], scans)
    assert [str(job.name) for job in plan.jobs] == ["scan.png", "pred/other.png"]
    # Named directly (a shell glob over the output folder): left out there, read elsewhere.
    assert plan_jobs([scans / "scan.png.mask.png"], scans).jobs == []
    assert len(plan_jobs([scans / "scan.png.mask.png"], tmp_path / "elsewhere").jobs) == 1


def test_predict_writes_one_mask_per_input_and_says_so(tmp_path: Path, checkpoint: Path, capsys) -> None:
    scans = tmp_path / "scans"
    grey(scans / "scan.png")
    grey(scans / "scan.jpg", seed=1)
    grey(scans / "sub" / "scan.png", shape=(30, 30), seed=2)
    out = tmp_path / "out"
    assert predict(checkpoint, out, scans, extra=("--overlay",)) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        "scan.jpg.mask.png", "scan.jpg.overlay.png", "scan.png.mask.png", "scan.png.overlay.png",
        "sub/scan.png.mask.png", "sub/scan.png.overlay.png",
    ]
    mask = np.asarray(Image.open(out / "sub" / f"scan.png{MASK_SUFFIX}"))
    assert mask.shape == (30, 30) and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(out / f"scan.png{OVERLAY_SUFFIX}"))
    assert overlay.shape == (40, 2 * 52 + 4, 3)
    captured = capsys.readouterr()
    assert "wrote 3 masks and 3 overlays to" in captured.out
    assert captured.err == ""


def test_predict_skips_bad_images_writes_the_rest_and_exits_1(tmp_path: Path, checkpoint: Path, capsys) -> None:
    scans = tmp_path / "scans"
    # More images than one batch (8), with the bad ones in the middle of it.
    for i in range(10):
        grey(scans / f"img{i:02d}.png", seed=i)
    (scans / "img04.png").write_bytes(b"not a png")
    (scans / "img07.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert predict(checkpoint, out, scans) == 1
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"img{i:02d}.png{MASK_SUFFIX}" for i in range(10) if i not in (4, 7)]
    captured = capsys.readouterr()
    assert "wrote 8 masks" in captured.out
    assert f"skipped {scans / 'img04.png'}: " in captured.err and f"skipped {scans / 'img07.png'}: " in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("error: skipped 2 of 10 inputs")


def test_a_write_failure_stops_with_an_error_and_the_count_so_far(tmp_path: Path, checkpoint: Path, capsys) -> None:
    scans = tmp_path / "scans"
    grey(scans / "a.png")
    grey(scans / "sub" / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the mirrored folder should go")
    assert predict(checkpoint, out, scans) == 1
    captured = capsys.readouterr()
    assert "wrote 1 mask to" in captured.out
    assert "error: " in captured.err and "b.png.mask.png: cannot write" in captured.err
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_outputs_get_the_usual_umask_permissions(tmp_path: Path, checkpoint: Path) -> None:
    grey(tmp_path / "a.png")
    old = os.umask(0o022)
    try:
        assert predict(checkpoint, tmp_path / "out", tmp_path / "a.png") == 0
    finally:
        os.umask(old)
    assert (tmp_path / "out" / f"a.png{MASK_SUFFIX}").stat().st_mode & 0o777 == 0o644


def test_no_input_at_all_is_an_error(tmp_path: Path, checkpoint: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert predict(checkpoint, tmp_path / "out", tmp_path / "empty") == 1
    assert "error: no input images found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flag", "value"), [("--threshold", "1.5"), ("--threads", "-1")])
def test_bad_flag_values_are_usage_errors(tmp_path: Path, checkpoint: Path, flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as info:
        predict(checkpoint, tmp_path / "out", tmp_path, extra=(flag, value))
    assert info.value.code == 2
