"""The report site: strict builds, live spike captures, failing on broken input.

Every build here is a real `mkdocs build --strict` in a subprocess. Builds
that need a broken input run on a temporary copy of the project, so the real
tree is never touched.
"""

from __future__ import annotations

import datetime
import html
import os
import platform
import queue
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from helpers import copy_parts, free_port, mkdocs_build, mkdocs_serve

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 120
# What the project's site build reads; copied for the broken-input builds.
_RUN_LOG = re.compile(r"spike capture: run (?P<run>[0-9a-f]+), server port (?P<port>\d+)")


@dataclass
class Build:
    """One finished `mkdocs build` and what it said."""

    returncode: int
    output: str
    site: Path
    dates: set[str]  # UTC dates at start and end of the build

    def page_text(self, page: str) -> str:
        """A built page's visible text (tags removed, entities decoded)."""
        raw = (self.site / page / "index.html").read_text(encoding="utf-8")
        return html.unescape(re.sub(r"<[^>]+>", "", raw))

    def page_html(self, page: str) -> str:
        return (self.site / page / "index.html").read_text(encoding="utf-8")

    def capture_run(self) -> tuple[str, int]:
        """The run id and server port that the capture hook logged."""
        match = _RUN_LOG.search(self.output)
        assert match, f"the capture hook logged no run:\n{self.output}"
        return match["run"], int(match["port"])


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def build_site(project: Path, site: Path) -> Build:
    """Run a strict build of `project` into `site`."""
    before = _today()
    # The PDF has its own tests; these builds only need the HTML.
    done = mkdocs_build(project, site, {**os.environ, "SPIKE_PDF": "0"}, timeout=BUILD_TIMEOUT)
    return Build(done.returncode, done.stdout + done.stderr, site, {before, _today()})


def copy_project(dest: Path) -> Path:
    """A throwaway copy of what the site build reads."""
    return copy_parts(dest)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Build:
    """The real project, built once for the checks below."""
    build = build_site(ROOT, tmp_path_factory.mktemp("site"))
    assert build.returncode == 0, f"strict build failed:\n{build.output}"
    return build


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


def test_strict_build_succeeds(site):
    assert (site.site / "index.html").is_file()
    assert (site.site / "spike" / "demo" / "index.html").is_file()


def test_capture_comes_from_this_build(site):
    run, port = site.capture_run()
    page = site.page_html("spike/demo")
    assert page.count(f'data-spike-run="{run}"') >= 3, "every capture is stamped with this run"
    text = site.page_text("spike/demo")
    # The port is the ephemeral one this build's server got from the OS.
    assert f"Serving on 127.0.0.1:{port} (press Ctrl+C to stop)" in text
    assert "<!-- spike-capture -->" not in page


def test_capture_shows_the_message_both_ways(site):
    text = site.page_text("spike/demo")
    assert "uv run spike-client" in text and "A message from CS361" in text
    assert "Sent: A message from CS361" in text
    assert "Received: A message from CS361" in text
    server_side = text[text.index("Serving on") :]
    assert "Connection opened:" in server_side
    assert "Server stopped." in server_side
    # The socket-docs style client (no newline) was answered.
    assert "b'A message from CS361\\n'" in text


def test_capture_states_date_python_and_os(site):
    text = site.page_text("spike/demo")
    stamps = re.findall(r"Run on (\d{4}-\d{2}-\d{2}) \(UTC\) · Python (\S+) · (.+)", text)
    assert len(stamps) == 3, stamps
    for date, python, os_name in stamps:
        assert date in site.dates
        assert python == platform.python_version()
        assert platform.system() in os_name or platform.system() == "Darwin"


def test_a_second_build_captures_a_new_run(site, project_copy, tmp_path):
    again = build_site(project_copy, tmp_path / "site")
    assert again.returncode == 0, again.output
    first_run, _ = site.capture_run()
    second_run, _ = again.capture_run()
    assert first_run != second_run
    assert f'data-spike-run="{second_run}"' in again.page_html("spike/demo")
    assert f'data-spike-run="{first_run}"' not in again.page_html("spike/demo")


def _broken_copy(tmp_path: Path, edit) -> Build:
    project = copy_project(tmp_path / "project")
    edit(project)
    return build_site(project, tmp_path / "site")


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_missing_snippet_fails_the_build(tmp_path):
    build = _broken_copy(
        tmp_path,
        lambda p: _append(
            p / "docs/spike/tutorial.md", '\n--8<-- "docs/examples/no_such_file.py"\n'
        ),
    )
    assert build.returncode != 0
    assert "no_such_file.py" in build.output and "could not be found" in build.output


def test_broken_link_and_anchor_fail_the_build(tmp_path):
    def edit(project: Path) -> None:
        _append(project / "docs/spike/demo.md", "\n[gone](no-such-page.md)\n")
        _append(project / "docs/spike/tutorial.md", "\n[gone](protocol.md#no-such-anchor)\n")

    build = _broken_copy(tmp_path, edit)
    assert build.returncode != 0
    assert "no-such-page.md" in build.output
    assert "no-such-anchor" in build.output


def test_build_fails_when_the_spike_cannot_run(tmp_path):
    # The hook puts the project copy first on the server's import path.
    build = _broken_copy(
        tmp_path,
        lambda p: (p / "spike" / "server" / "__init__.py").write_text(
            'raise RuntimeError("server broken on purpose")\n', encoding="utf-8"
        ),
    )
    assert build.returncode != 0
    assert "spike demo could not run" in build.output
    # The whole traceback is reported, down to the error itself.
    assert "RuntimeError: server broken on purpose" in build.output


def test_build_fails_when_the_capture_marker_is_gone(tmp_path):
    def edit(project: Path) -> None:
        page = project / "docs/spike/demo.md"
        page.write_text(
            page.read_text(encoding="utf-8").replace("<!-- spike-capture -->", ""),
            encoding="utf-8",
        )

    build = _broken_copy(tmp_path, edit)
    assert build.returncode != 0
    assert "lost its capture marker" in build.output


def test_build_fails_when_the_answer_sheet_loses_its_pictures(tmp_path):
    def edit(project: Path) -> None:
        page = project / "docs/index.md"
        page.write_text(
            page.read_text(encoding="utf-8").replace("<!-- spike-screenshots -->", ""),
            encoding="utf-8",
        )

    build = _broken_copy(tmp_path, edit)
    assert build.returncode != 0
    assert "index.md lost its picture marker" in build.output


def _unfinished_pages() -> list[str]:
    return sorted(
        str(page.relative_to(DOCS))
        for page in DOCS.rglob("*.md")
        if "PLACEHOLDER" in page.read_text(encoding="utf-8")
    )


def test_no_page_is_a_placeholder():
    assert _unfinished_pages() == []


def test_reader_features_are_on_the_built_pages(site):
    demo, protocol = site.page_html("spike/demo"), site.page_html("spike/protocol")
    # Search: the index the search box loads, covering the spike pages.
    index = (site.site / "search" / "search_index.json").read_text(encoding="utf-8")
    assert "spike/protocol/" in index
    # Light/dark toggle: one palette input per scheme.
    assert demo.count('name="__palette"') == 2
    # Copy buttons on code blocks are a theme feature switched on in the page config.
    assert "content.code.copy" in demo
    # Admonitions, tables, Mermaid (rendered in the browser from this block).
    assert 'class="admonition question"' in demo
    assert "<table>" in protocol
    assert '<pre class="mermaid"><code>sequenceDiagram' in protocol
    # The footer's Credits link works from a nested page.
    link = re.search(r'<a href="([^"]+)">Credits</a>', demo)
    assert link and (site.site / "spike" / "demo" / link[1] / "index.html").resolve().is_file()


def test_tutorial_page_shows_the_example_files(site):
    text = site.page_text("spike/tutorial")
    for name in ("word_count_service.py", "teammate_client.py", "teammate_client.js"):
        source = (DOCS / "examples" / name).read_text(encoding="utf-8")
        # Every line of the file is on the page (the snippet was included, not pasted).
        for line in source.splitlines():
            assert line.strip() in text, f"{name}: {line!r} missing from the built page"


def test_click_release_that_breaks_live_reload_is_not_installed():
    # click 8.2.2 and 8.3.0-8.3.1 stop `mkdocs serve` from reloading (pyproject excludes them).
    assert metadata.version("click") not in {"8.2.2", "8.3.0", "8.3.1"}


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8")


def test_serve_rebuilds_recaptures_and_reloads(tmp_path):
    project = copy_project(tmp_path / "project")
    port = free_port()  # mkdocs serve prints the address it was given
    serve = mkdocs_serve(project, port, {**os.environ, "SPIKE_PDF": "0"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in serve.stdout], daemon=True
    ).start()
    log: list[str] = []

    def wait_for(text: str, count: int = 1) -> None:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while sum(text in line for line in log) < count:
            try:
                log.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"mkdocs serve never logged {text!r}:\n{''.join(log)}")

    try:
        wait_for("Serving on")
        url = f"http://127.0.0.1:{port}/spike/demo/"
        first = _get(url)
        assert "livereload" in first  # the script that reloads the browser
        first_run = re.search(r'data-spike-run="([0-9a-f]+)"', first)[1]

        _append(project / "docs/spike/demo.md", "\nEdited while serving.\n")
        wait_for("Reloading browsers")
        wait_for("spike capture: run", count=2)  # once per build, not per page
        second = _get(url)
        assert "Edited while serving." in second
        second_run = re.search(r'data-spike-run="([0-9a-f]+)"', second)[1]
        assert second_run != first_run
        while not lines.empty():
            log.append(lines.get_nowait())
        builds = sum("Building documentation..." in line for line in log)
        assert sum("spike capture: run" in line for line in log) == builds >= 2
    finally:
        serve.terminate()
        serve.wait(timeout=BUILD_TIMEOUT)
