"""tools/render_results.py: mean +- std over seeds, stale marking from git, and --check."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def load_tool():
    spec = importlib.util.spec_from_file_location("render_results", REPO / "tools" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


INDEX = """
suites:
  - {dir: ssl, title: Methods}
headline:
  - {label: "tiny, 10 %", result: ssl/tiny}
"""


def result(commit: str | None, other_commit: str | None = "same") -> dict:
    other = {"key": "other", "label": "other method", "short": "`other`", "role": "other",
             "per_seed": {"dice": [0.5, 0.5, 0.8]}}
    if other_commit != "same":
        other["commit"] = other_commit
    return {
        "title": "Tiny", "command": "python bench.py", "commit": commit, "machine": {"cpu": "test CPU"},
        "torch": None, "date": "2026-01-01", "metric": "dice", "seeds": [0, 1, 2], "reference": "finetune",
        "rows": [
            {"key": "finetune", "label": "fine-tune", "role": "finetune", "per_seed": {"dice": [0.3, 0.4, 0.5]}},
            {"key": "default", "label": "the default", "role": "default", "per_seed": {"dice": [0.4, 0.5, 0.6]}},
            other,
        ],
    }


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Path | str]:
    repo = tmp_path / "repo"
    (repo / "src" / "busseg" / "training").mkdir(parents=True)
    (repo / "src" / "busseg" / "training" / "loop.py").write_text("A = 1\n")
    (repo / "docs").mkdir()
    (repo / "README.md").write_text("# tiny\n\n<!-- results:headline start -->\nold\n<!-- results:headline end -->\n\nend\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")
    results = repo / "benchmarks" / "results"
    (results / "ssl").mkdir(parents=True)
    (results / "index.yaml").write_text(INDEX)
    (results / "ssl" / "tiny.json").write_text(json.dumps(result(first)))
    (results / "ssl" / "raw.json").write_text(json.dumps({"not": "a result file"}))  # raw output: skipped
    return {"repo": repo, "results": results, "first": first}


def render(tool, project, *extra: str) -> int:
    repo = project["repo"]
    return tool.main(["--results", str(project["results"]), "--readme", str(repo / "README.md"),
                      "--page", str(repo / "docs" / "benchmarks.md"), "--repo", str(repo), *extra])


def test_mean_std_paired_and_headline(project):
    tool = load_tool()
    assert render(tool, project) == 0
    page = (project["repo"] / "docs" / "benchmarks.md").read_text()
    readme = (project["repo"] / "README.md").read_text()
    # mean +- sample std over the seeds, computed by the script
    assert "| **the default** | 3 | 0.500 ± 0.100 | 0.400 / 0.500 / 0.600 |" in page
    assert "| +10.0 ± 0.0 | current |" in page  # paired: default - finetune, per seed, in points
    assert "0.600 ± 0.173" in page  # other: 0.5, 0.5, 0.8
    # the headline: default, fine-tuning, the best other method by mean, no full supervision
    row = next(line for line in readme.splitlines() if line.startswith("| tiny, 10 %"))
    assert row == "| tiny, 10 % | **0.500 ± 0.100** | 0.400 ± 0.100 | `other` 0.600 ± 0.173 | not measured | 3 | current |"
    assert readme.startswith("# tiny\n\n<!-- results:headline start -->\n| target") and readme.endswith("end\n")
    assert "old" not in readme
    assert "2026-01-01" not in page  # dates stay in the result files
    assert render(tool, project, "--check") == 0


def test_stale_when_training_code_changed_and_unknown_commit(project):
    tool = load_tool()
    repo = project["repo"]
    (repo / "src" / "busseg" / "training" / "loop.py").write_text("A = 2\n")
    git(repo, "commit", "-qam", "change training code")
    (project["results"] / "ssl" / "tiny.json").write_text(json.dumps(result(project["first"], other_commit=None)))
    assert render(tool, project) == 0
    page = (repo / "docs" / "benchmarks.md").read_text()
    readme = (repo / "README.md").read_text()
    assert "| **the default** | 3 | 0.500 ± 0.100 | 0.400 / 0.500 / 0.600 | +10.0 ± 0.0 | **stale** |" in page
    assert "| other method | 3 | 0.600 ± 0.173 |" in page and page.count("commit unknown |") == 1
    assert "| 3 | **stale** and commit unknown |" in readme

    # a change outside the watched paths keeps a result current
    (project["results"] / "ssl" / "tiny.json").write_text(json.dumps(result(git(repo, "rev-parse", "HEAD"))))
    (repo / "notes.txt").write_text("docs only\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "docs")
    assert render(tool, project) == 0
    assert "| 3 | current |" in (repo / "README.md").read_text()


def test_check_fails_on_a_hand_edited_page(project, capsys):
    tool = load_tool()
    assert render(tool, project) == 0
    page = project["repo"] / "docs" / "benchmarks.md"
    page.write_text(page.read_text().replace("0.500 ± 0.100", "0.510 ± 0.100"))
    assert render(tool, project, "--check") == 1
    err = capsys.readouterr().err
    assert "benchmarks.md differ from what tools/render_results.py renders" in err
    assert "run `python tools/render_results.py`" in err
    # the README's table is checked too
    assert render(tool, project) == 0
    readme = project["repo"] / "README.md"
    readme.write_text(readme.read_text().replace("**0.500 ± 0.100**", "**0.520 ± 0.100**"))
    assert render(tool, project, "--check") == 1
    assert "README.md" in capsys.readouterr().err


def test_missing_markers_and_bad_file_are_errors(project, capsys):
    tool = load_tool()
    (project["repo"] / "README.md").write_text("# no markers\n")
    assert render(tool, project) == 2
    assert "results:headline start" in capsys.readouterr().err
    (project["results"] / "ssl" / "broken.yaml").write_text("title: [unclosed\n")
    assert render(tool, project) == 2
    assert "broken.yaml: not valid YAML" in capsys.readouterr().err


def test_a_benchmark_result_file_renders(project):
    """benchmarks/results_io.py writes what the renderer reads: command, commit, machine, date, rows."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import results_io
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    tool = load_tool()
    path = results_io.write_result(
        project["results"] / "ssl" / "written.json", title="Written", commit=project["first"],
        rows=[{"key": "a", "label": "arm a", "per_seed": {"dice": [0.2, 0.4]}}], metric="dice", seeds=[0, 1])
    data = json.loads(path.read_text())
    assert data["command"].startswith("python ") and data["date"] and data["machine"]["cpu"]
    assert render(tool, project) == 0
    assert "| arm a | 2 | 0.300 ± 0.141 | 0.200 / 0.400 | current |" in (project["repo"] / "docs" / "benchmarks.md").read_text()


def lock_with_student(md5: str) -> str:
    return f"schema: '2.0'\nstages:\n  train@synthetic:\n    outs:\n    - path: models/synthetic/student.pt\n      md5: {md5}\n"


def test_a_code_change_that_trains_the_same_reference_networks_stays_current(project):
    """Training code changed, but the committed default run's networks (dvc.lock) did not."""
    tool = load_tool()
    repo = project["repo"]
    (repo / "dvc.lock").write_text(lock_with_student("aaaa"))
    git(repo, "add", "dvc.lock")
    git(repo, "commit", "-qm", "reference run")
    measured = git(repo, "rev-parse", "HEAD")
    (project["results"] / "ssl" / "tiny.json").write_text(json.dumps(result(measured)))
    (repo / "src" / "busseg" / "training" / "loop.py").write_text("A = 1  # a comment: same computation\n")
    git(repo, "commit", "-qam", "touch training code")
    assert render(tool, project) == 0
    assert "| +10.0 ± 0.0 | current |" in (repo / "docs" / "benchmarks.md").read_text()
    # the reference networks change with the next commit: now the row is stale
    (repo / "dvc.lock").write_text(lock_with_student("bbbb"))
    git(repo, "commit", "-qam", "retrained")
    assert render(tool, project) == 0
    assert "| +10.0 ± 0.0 | **stale** |" in (repo / "docs" / "benchmarks.md").read_text()
