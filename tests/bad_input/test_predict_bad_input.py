"""Bad-input corpus for ``busseg predict``: the cases a hostile but fair user tried.

Each case must end in a recorded skip or one ``error:`` line, never a traceback, and must
leave no file behind that the user did not ask for (no lost output, no temporary).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busseg.cli import main


def grey_pixels(shape: tuple[int, int] = (40, 52), seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def write_grey(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey_pixels(seed=seed)).save(path)
    return path


def write_colour(path: Path) -> Path:
    """A scan with a colour Doppler box (a fifth of the image in saturated red and blue)."""
    rgb = np.repeat(grey_pixels()[..., None], 3, axis=2)
    rgb[10:30, 10:30] = [200, 20, 20]
    rgb[15:25, 15:25] = [20, 40, 220]
    Image.fromarray(rgb).save(path)
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def predict(checkpoint: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["predict", "--model", str(checkpoint), "--out", str(out), "--no-progress", *extra, *map(str, inputs)])


def test_same_stem_and_same_name_in_subfolders_all_get_their_own_mask(tmp_path: Path, checkpoint: Path, capsys) -> None:
    """Lost output: scan.png, scan.jpg and sub/scan.png once left one file for "wrote 3 masks"."""
    scans = tmp_path / "scans"
    for i, rel in enumerate(("scan.png", "scan.jpg", "sub/scan.png")):
        write_grey(scans / rel, seed=i)
    assert predict(checkpoint, tmp_path / "out", scans) == 0
    assert files_under(tmp_path / "out") == ["scan.jpg.mask.png", "scan.png.mask.png", "sub/scan.png.mask.png"]
    assert "wrote 3 masks" in capsys.readouterr().out


def test_two_inputs_claiming_one_output_skip_the_second_with_the_reason(tmp_path: Path, checkpoint: Path, capsys) -> None:
    a = write_grey(tmp_path / "a" / "scan.png", seed=1)
    b = write_grey(tmp_path / "b" / "scan.png", seed=2)
    out = tmp_path / "out"
    assert predict(checkpoint, out, a, b) == 1
    assert files_under(out) == ["scan.png.mask.png"]
    err = capsys.readouterr().err
    assert f"skipped {b}: its output scan.png.mask.png is already that of {a}" in err
    assert "error: skipped 1 of 2 inputs" in err
    # What was written is a's mask, not b's written over it.
    first = (out / "scan.png.mask.png").read_bytes()
    assert predict(checkpoint, tmp_path / "only_a", a) == 0
    assert (tmp_path / "only_a" / "scan.png.mask.png").read_bytes() == first


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "cannot read image"),
        (b"not a png at all", "cannot read image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot read image"),
    ],
    ids=["empty", "text", "truncated-png"],
)
def test_corrupt_image_is_skipped_and_the_others_written(
    tmp_path: Path, checkpoint: Path, capsys, content: bytes, reason: str
) -> None:
    scans = tmp_path / "scans"
    write_grey(scans / "a.png")
    (scans / "b.png").write_bytes(content)
    write_grey(scans / "c.png", seed=3)
    out = tmp_path / "out"
    assert predict(checkpoint, out, scans) == 1
    assert files_under(out) == ["a.png.mask.png", "c.png.mask.png"]
    captured = capsys.readouterr()
    assert "wrote 2 masks" in captured.out
    assert f"skipped {scans / 'b.png'}: {reason}" in captured.err


def test_colour_image_is_skipped_with_the_flag_that_converts_it(tmp_path: Path, checkpoint: Path, capsys) -> None:
    scans = tmp_path / "scans"
    write_grey(scans / "a.png")
    write_colour(scans / "doppler.png")
    out = tmp_path / "out"
    assert predict(checkpoint, out, scans) == 1
    err = capsys.readouterr().err
    assert f"skipped {scans / 'doppler.png'}: " in err and "--allow-colour" in err
    assert "allow_colour" not in err  # no option the command line lacks
    assert files_under(out) == ["a.png.mask.png"]
    # The flag it names exists and converts the image.
    assert predict(checkpoint, out, scans, extra=("--allow-colour",)) == 0
    assert files_under(out) == ["a.png.mask.png", "doppler.png.mask.png"]


def test_out_naming_an_existing_file_is_an_error_line(tmp_path: Path, checkpoint: Path, capsys) -> None:
    image = write_grey(tmp_path / "a.png")
    taken = tmp_path / "results.txt"
    taken.write_text("keep me")
    assert predict(checkpoint, taken, image) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {taken}: exists and is not a folder")
    assert taken.read_text() == "keep me"
    assert files_under(tmp_path) == ["a.png", "results.txt"]


@pytest.mark.parametrize("where", ["inside", "equal"])
def test_out_in_the_input_folder_twice_reads_the_same_inputs(tmp_path: Path, checkpoint: Path, capsys, where: str) -> None:
    scans = tmp_path / "scans"
    write_grey(scans / "a.png")
    write_grey(scans / "sub" / "b.png", seed=1)
    out = scans / "pred" if where == "inside" else scans
    assert predict(checkpoint, out, scans, extra=("--overlay",)) == 0
    first = files_under(scans)
    assert "wrote 2 masks and 2 overlays" in capsys.readouterr().out
    assert predict(checkpoint, out, scans, extra=("--overlay",)) == 0  # overlays are colour: read, they would fail
    assert files_under(scans) == first
    assert "wrote 2 masks and 2 overlays" in capsys.readouterr().out


def test_missing_input_is_listed_and_the_rest_written(tmp_path: Path, checkpoint: Path, capsys) -> None:
    image = write_grey(tmp_path / "a.png")
    assert predict(checkpoint, tmp_path / "out", image, tmp_path / "nowhere.png") == 1
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'nowhere.png'}: no such file or folder" in err
    assert files_under(tmp_path / "out") == ["a.png.mask.png"]


def test_a_symlink_loop_in_an_input_folder_is_skipped_and_every_other_scan_predicted(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    scans = tmp_path / "scans"
    write_grey(scans / "a.png")
    write_grey(scans / "sub" / "b.png", seed=1)
    (scans / "loop.png").symlink_to("loop.png")  # points at itself
    (scans / "sub" / "one.png").symlink_to("two.png")  # two links pointing at each other
    (scans / "sub" / "two.png").symlink_to("one.png")
    (scans / "sub" / "up").symlink_to("..")  # a folder loop: never followed
    looped = tmp_path / "looped.png"
    looped.symlink_to("looped.png")  # named on the command line
    assert predict(checkpoint, tmp_path / "out", scans, looped) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for link in (scans / "loop.png", scans / "sub" / "one.png", scans / "sub" / "two.png", looped):
        assert f"skipped {link}: symbolic link loop" in err
    assert files_under(tmp_path / "out") == ["a.png.mask.png", "sub/b.png.mask.png"]


def test_an_image_prepare_would_refuse_as_too_small_is_skipped_with_prepares_reason(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    write_grey(tmp_path / "scans" / "a.png")
    Image.fromarray(np.full((1, 1), 90, np.uint8)).save(tmp_path / "scans" / "dot.png")
    Image.fromarray(np.full((15, 300), 90, np.uint8)).save(tmp_path / "scans" / "strip.png")
    assert predict(checkpoint, tmp_path / "out", tmp_path / "scans") == 1
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'scans' / 'dot.png'}: image too small: 1x1 px (at least 16 px per side)" in err
    assert f"skipped {tmp_path / 'scans' / 'strip.png'}: image too small: 300x15 px" in err
    assert files_under(tmp_path / "out") == ["a.png.mask.png"]


def test_the_command_itself_never_prints_a_traceback(tmp_path: Path, checkpoint: Path) -> None:
    """The whole corpus at once through the real entry point, as a user runs it."""
    scans = tmp_path / "scans"
    for i, rel in enumerate(("scan.png", "scan.jpg", "sub/scan.png")):
        write_grey(scans / rel, seed=i)
    (scans / "broken.png").write_bytes(b"nope")
    write_colour(scans / "doppler.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "busseg.cli", "predict", "--model", str(checkpoint), "--no-progress"]
    proc = subprocess.run([*cmd, "--out", str(scans), str(scans)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "wrote 3 masks" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: skipped 2 of 5 inputs")
    assert not [p for p in scans.rglob(".*")]  # no temporary left
    taken = tmp_path / "taken"
    taken.write_text("")
    proc = subprocess.run([*cmd, "--out", str(taken), str(scans)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")


def test_a_run_that_writes_nothing_creates_no_output_folder(tmp_path: Path, checkpoint: Path, capsys) -> None:
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert predict(checkpoint, tmp_path / "out", tmp_path / "bad.png", tmp_path / "missing.png") == 1
    assert "error: skipped 2 of 2 inputs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- issue 21: real scanner images, huge images, foreign checkpoints, Ctrl-C ------------------


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``busseg predict`` as a user runs it (the module behind the console script)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "busseg.cli", "predict", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def test_scans_with_bus_uclms_statistics_are_predicted_without_allow_colour(tmp_path: Path, checkpoint: Path) -> None:
    """Issue 21: every real BUS-UCLM scan was refused ("1.06% of pixels are off the grey map")."""
    from data.uclm_scans import uclm_scan

    scans = tmp_path / "scans"
    scans.mkdir()
    for seed in range(3):
        Image.fromarray(uclm_scan(300 + seed, doppler=False)).save(scans / f"grey{seed}.png")
    Image.fromarray(uclm_scan(400, doppler=True)).save(scans / "doppler.png")
    proc = run_cli("--model", str(checkpoint), "--out", str(tmp_path / "out"), str(scans))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert files_under(tmp_path / "out") == [f"grey{i}.png.mask.png" for i in range(3)]
    (skipped,) = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert skipped.startswith(f"skipped {scans / 'doppler.png'}: cannot read image: colour content")
    assert "painted colour areas" in skipped and "--allow-colour" in skipped


def test_a_huge_image_is_skipped_with_its_size(tmp_path: Path, checkpoint: Path, capsys) -> None:
    from data.fixtures import write_huge_png_header

    scans = tmp_path / "scans"
    write_grey(scans / "a.png")
    write_huge_png_header(scans / "huge.png", 10000, 10000)
    assert predict(checkpoint, tmp_path / "out", scans) == 1
    err = capsys.readouterr().err
    assert f"skipped {scans / 'huge.png'}: cannot read image: too large: 10000 x 10000 px (100 MP)" in err
    assert "DecompressionBomb" not in err
    assert files_under(tmp_path / "out") == ["a.png.mask.png"]


class _Crafted:
    """A pickle that would create a file when loaded (as a hostile checkpoint runs code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("foreign", ["whole-module", "garbage-pickle", "crafted-pickle", "crafted-torch-file"])
def test_a_checkpoint_that_is_not_busseg_s_is_one_line_without_unsafe_advice(
    tmp_path: Path, foreign: str
) -> None:
    """Issue 21: torch's 8-line message advised re-running with weights_only=False. A crafted
    pickle (bare, or inside a torch file) is objects busseg does not load, never run."""
    import pickle

    import torch

    model = tmp_path / "model.pt"
    marker = tmp_path / "code-ran"
    if foreign == "whole-module":
        torch.save(torch.nn.Linear(2, 2), model)
    elif foreign == "crafted-pickle":
        model.write_bytes(pickle.dumps({"model": _Crafted(marker), "model_config": {}}))
    elif foreign == "crafted-torch-file":
        torch.save({"model": _Crafted(marker), "model_config": {}}, model)
    else:
        model.write_bytes(b"garbage")
    image = write_grey(tmp_path / "a.png")
    proc = run_cli("--model", str(model), "--out", str(tmp_path / "out"), str(image))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {model}: not a")
    assert "weights_only" not in proc.stderr and "trust" not in proc.stderr
    if foreign == "whole-module":
        assert "pickled Python objects (torch.nn.modules.linear.Linear)" in proc.stderr
    if foreign.startswith("crafted"):
        assert "holds pickled Python objects" in proc.stderr and "which busseg does not load" in proc.stderr
        assert "damaged" not in proc.stderr
    if foreign == "garbage-pickle":
        assert "not a PyTorch file, or a damaged one" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_predict_is_one_line_and_exit_code_130(tmp_path: Path, checkpoint: Path) -> None:
    """Issue 21: Ctrl-C printed a KeyboardInterrupt traceback. SIGINT, as the terminal sends it,
    once the first mask is written; every mask that exists is a whole file, no temporary."""
    import signal
    import time

    scans = tmp_path / "scans"
    scans.mkdir()
    pixels = grey_pixels((32, 32))
    for index in range(3000):
        Image.fromarray(np.roll(pixels, index)).save(scans / f"s{index:04d}.png", compress_level=0)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "busseg.cli", "predict", "--no-progress", "--model", str(checkpoint), "--out", str(out), str(scans)]
    from bad_input.test_interrupts_bad_input import interruptible

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible)
    deadline = time.monotonic() + 240
    def first_mask_written() -> bool:  # a whole mask, not the temporary of the first one
        return out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())

    while not first_mask_written() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "predict finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr == "interrupted\n" and stdout == ""
    written = files_under(out)
    assert 0 < len(written) < 3000 and all(name.endswith(".mask.png") for name in written)  # no temporary
    for name in written:
        with Image.open(out / name) as mask:
            mask.load()  # complete PNGs only
