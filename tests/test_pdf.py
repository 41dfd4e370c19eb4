"""The PDF for Canvas: `mkdocs build` writes it, and it holds the whole report.

Every test runs the real `mkdocs build` (hooks/pdf.py, the print-site plugin,
Chromium through Playwright) into a temporary folder and reads the result
with pypdf. Only the tests that need a browser are skipped when none is
installed; CI installs Debian `chromium`, so there they always run.
"""

from __future__ import annotations

import datetime
import html
import os
import re
import socket
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from helpers import SITE_PARTS, copy_parts, load_file, mkdocs_build, why_no_pdf
from pypdf import PdfReader

ROOT = Path(__file__).resolve().parent.parent
PDF_NAME = "cs361-assignment5-brian-dy.pdf"
BUILD_TIMEOUT_S = 300

# The Mermaid source that must never reach the PDF as text.
RAW_MERMAID = [
    re.compile(r"sequenceDiagram"),
    re.compile(r"-->>"),
    re.compile(r"->>"),
    # "flowchart" alone is an ordinary English word (the credits use it).
    re.compile(r"\b(?:flowchart|graph)\s+(?:LR|RL|TB|TD|BT)\b"),
    re.compile(r"Syntax error in text"),
]


pdf_hook = load_file(ROOT / "hooks" / "pdf.py", "pdf_hook_under_test")


def _browser_or_none() -> Path | None:
    try:
        return pdf_hook.find_browser()
    except pdf_hook.BrowserUnavailable:
        return None


def _why_no_pdf() -> str | None:
    return why_no_pdf(pdf_hook)


can_print = pytest.mark.skipif(_why_no_pdf() is not None, reason=str(_why_no_pdf()))


def build(
    site_dir: Path, project: Path = ROOT, **env_changes: str | None
) -> subprocess.CompletedProcess:
    """Run the real `mkdocs build` of project into site_dir; env_changes None removes a variable.

    SPIKE_PDF_BROWSER stays as the caller set it: the browser (or the "no
    browser") that `_why_no_pdf` saw is the one the build uses.
    """
    env = dict(os.environ)
    env.pop("SPIKE_PDF", None)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return mkdocs_build(project, site_dir, env, strict=False, timeout=BUILD_TIMEOUT_S)


def flat(text: str) -> str:
    """PDF text with ligatures unfolded and every run of whitespace as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


class _IgnorePythonTags(yaml.SafeLoader):
    """Reads mkdocs.yml without importing the objects its !!python tags name."""


_IgnorePythonTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def numbered_nav() -> list[tuple[str, str, str | None]]:
    """(number, nav title, page path or None for a section), in nav order.

    The numbers are the ones the print page gives: 1, 2, 2.1, 2.2, 3, ...
    """
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_IgnorePythonTags)

    def walk(items, prefix=""):
        for number, item in enumerate(items, start=1):
            if isinstance(item, str):  # a bare page path: the title comes from the page
                continue
            ((title, value),) = item.items()
            yield f"{prefix}{number}", title, value if isinstance(value, str) else None
            if isinstance(value, list):
                yield from walk(value, f"{prefix}{number}.")

    return list(walk(config["nav"]))


def page_heading(site: Path, page: str) -> str:
    """The first heading of a built page, as text (no permalink sign)."""
    built = site / Path(page).with_suffix("") / "index.html"
    if page == "index.md" or page.endswith("/index.md"):
        built = site / Path(page).parent / "index.html"
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", built.read_text(encoding="utf-8"), re.S)
    assert heading, f"{built} has no h1"
    return flat(html.unescape(re.sub(r"<a [^>]*>.*?</a>|<[^>]+>", "", heading.group(1))))


def mermaid_labels() -> dict[str, list[str]]:
    """Plain-text labels of each Mermaid diagram in docs/, keyed by 'page #n'."""
    fence = re.compile(
        r"^(?P<indent>[ \t]*)```mermaid[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
    )
    label = re.compile(
        r"(?:\bas\s+(?P<alias>[^\n]+)$)"  # participant X as Label
        r"|(?::\s*(?P<message>[^\n]+)$)"  # A->>B: message / Note over A: text
        r"|(?:[\[\(\{]+\"?(?P<node>[^\]\)\}\"\n]+)\"?[\]\)\}]+)"  # node["Label"]
        r"|(?:\|(?P<edge>[^|\n]+)\|)",  # -->|edge label|
        re.M,
    )
    diagrams = {}
    # A diagram's accessible title and description are for screen readers, not drawn.
    accessible = re.compile(r"^\s*acc(?:Title|Descr)\s*:.*$", re.M)
    for md in sorted((ROOT / "docs").rglob("*.md")):
        for n, match in enumerate(fence.finditer(md.read_text(encoding="utf-8")), start=1):
            parts = []
            for found in label.finditer(accessible.sub("", match.group("body"))):
                text = next(group for group in found.groups() if group)
                for raw in re.split(r"<br\s*/?>", text):
                    part = " ".join(raw.strip().strip('"').split())
                    # Labels with markup or symbols may be drawn differently.
                    if re.fullmatch(r"[\w .,:'/-]{3,}", part):
                        parts.append(part)
            diagrams[f"{md.relative_to(ROOT).as_posix()} #{n}"] = parts
    return diagrams


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """One real build with the PDF: (completed process, site dir, reader, flat text)."""
    reason = _why_no_pdf()
    if reason:
        pytest.skip(reason)
    site = tmp_path_factory.mktemp("pdf") / "site"
    before = datetime.datetime.now(datetime.timezone.utc)
    result = build(site)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert result.returncode == 0, result.stderr[-3000:]
    pdf = site / PDF_NAME
    if not pdf.is_file():
        # Offline, with no `npm ci` and nothing cached: the build says so in one line.
        said = [line for line in result.stderr.splitlines() if "no local Mermaid" in line]
        if said:
            pytest.skip(said[0].split("PDF not written: ", 1)[-1])
    assert pdf.is_file(), "no PDF written; build log:\n" + result.stderr[-3000:]
    reader = PdfReader(pdf)
    text = flat("\n".join(page.extract_text() or "" for page in reader.pages))
    return result, site, reader, text, (before, after)


@can_print
def test_build_writes_pdf_and_says_so_with_page_count_and_time(printed):
    result, _site, reader, _, _ = printed
    lines = [line for line in result.stderr.splitlines() if "PDF written:" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    match = re.search(
        r"PDF written: (?P<path>\S+) \((?P<pages>\d+) pages, (?P<seconds>[\d.]+) s\)", lines[0]
    )
    assert match, lines[0]
    assert Path(match["path"]).name == PDF_NAME
    assert int(match["pages"]) == len(reader.pages)
    assert float(match["seconds"]) > 0


@can_print
def test_pdf_is_us_letter_with_a_sane_page_count(printed):
    _, _, reader, _, _ = printed
    # Cover + contents + the pages of the site; far fewer than a runaway layout.
    assert 3 + len(numbered_nav()) < len(reader.pages) < 200
    for page in reader.pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (round(width), round(height)) == (612, 792)  # 8.5 x 11 in at 72 pt/in


@can_print
def test_cover_names_the_student_course_and_build_date(printed):
    _, _, reader, _, (before, after) = printed
    cover = flat(reader.pages[0].extract_text())
    assert "Brian Dy" in cover
    assert "CS361 Assignment 5".upper() in cover.upper()
    assert "Amazon & Microservices" in cover
    dates = {f"{d:%B} {d.day}, {d.year}" for d in (before, after)}
    assert any(date in cover for date in dates), (dates, cover)


@can_print
def test_contents_lists_every_nav_title_numbered_in_nav_order(printed):
    _, _, reader, _, _ = printed
    contents = flat(reader.pages[1].extract_text())
    assert contents.startswith("Contents")
    nav = numbered_nav()
    assert nav, "mkdocs.yml has no nav"
    position = 0
    for number, title, _ in nav:
        found = contents.find(f"{number} {title}", position)
        assert found >= 0, (
            f"'{number} {title}' missing or out of order in the contents: {contents}"
        )
        position = found


@can_print
def test_every_page_of_the_site_follows_numbered_in_nav_order(printed):
    _, site, reader, _, _ = printed
    body = flat(" ".join(page.extract_text() for page in reader.pages[2:]))
    position = 0
    for number, title, page in numbered_nav():
        # A part gets a divider with its nav title; a page starts with its own h1.
        heading = f"{number} {title if page is None else page_heading(site, page)}"
        found = body.find(heading, position)
        assert found >= 0, f"'{heading}' missing from the body or out of nav order"
        position = found


@can_print
def test_pdf_says_who_wrote_it_and_what_it_is(printed):
    """Document properties (and screen readers) show the title, author and subject."""
    _, _, reader, _, _ = printed
    info = reader.metadata
    assert info.author == "Brian Dy"
    assert "Microservices Case Study & Pipe Spike" in (info.subject or "")
    assert "CS361 Assignment 5" in (info.title or "")
    # Added as an update of the file Chromium wrote, which stays readable.
    assert info.producer and info.producer.startswith("Skia/PDF")


@can_print
def test_every_pdf_page_has_a_page_number(printed):
    _, _, reader, text, _ = printed
    total = len(reader.pages)
    for number, page in enumerate(reader.pages, start=1):
        assert f"Page {number} of {total}" in flat(page.extract_text())
    assert "Brian Dy" in text


@can_print
def test_mermaid_is_drawn_never_printed_as_source(printed):
    _, _, _, text, _ = printed
    assert_diagrams_drawn(text)


def assert_diagrams_drawn(text: str) -> None:
    """No Mermaid source in the PDF's text, and most labels of every diagram in it."""
    for pattern in RAW_MERMAID:
        assert not pattern.search(text), f"raw Mermaid in the PDF: {pattern.pattern}"
    diagrams = mermaid_labels()
    assert diagrams, "no Mermaid diagrams in docs/ to check"
    for name, labels in diagrams.items():
        if not labels:
            continue
        drawn = [label for label in labels if label in text]
        # Wrapped labels can come out of the PDF in another order, so not all
        # of them are found verbatim; most must be (they are vector text).
        assert len(drawn) * 2 >= len(labels), f"{name}: only {drawn} of {labels} found"


def _fill_colours(reader: PdfReader) -> set[tuple[float, float, float]]:
    """Every RGB fill colour used on any page, including inside form XObjects."""

    def streams(obj):
        resources = obj.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        for ref in xobjects.get_object().values() if xobjects else []:
            xobject = ref.get_object()
            if xobject.get("/Subtype") == "/Form":
                yield xobject.get_data()
                yield from streams(xobject)

    colours: set[tuple[float, float, float]] = set()
    for page in reader.pages:
        contents = page.get_contents()
        for data in ([contents.get_data()] if contents is not None else []) + list(streams(page)):
            for r, g, b in re.findall(rb"([\d.]+) ([\d.]+) ([\d.]+) rg", data):
                colours.add((round(float(r), 2), round(float(g), 2), round(float(b), 2)))
    return colours


@can_print
def test_code_is_highlighted_in_the_pdf(printed):
    _, _, reader, _, _ = printed
    colours = _fill_colours(reader)
    # Material's light-scheme Pygments colours for keywords and strings.
    for name, hex_colour in {"keyword": "3f6ec6", "string": "1c7d4d"}.items():
        rgb = tuple(round(int(hex_colour[i : i + 2], 16) / 255, 2) for i in (0, 2, 4))
        assert rgb in colours, f"no {name}-coloured code text in the PDF"


@can_print
def test_terminal_and_code_blocks_wrap_on_paper(printed):
    """On the print page at the printed width, no code block scrolls sideways."""
    from playwright.sync_api import sync_playwright

    _, site, _, _, _ = printed
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(pdf_hook.find_browser()),
            args=[*pdf_hook.BROWSER_FLAGS, "--no-sandbox"],
        )
        try:
            # US Letter minus the 0.6 in side margins, in CSS pixels.
            context = browser.new_context(viewport={"width": round(7.3 * 96), "height": 1000})
            # The site's own files only; nothing from the network.
            context.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith("file:") else route.abort()
                ),
            )
            page = context.new_page()
            page.goto((site / "print_page" / "index.html").as_uri(), wait_until="load")
            page.emulate_media(media="print")
            blocks = page.evaluate(
                """() => [...document.querySelectorAll("pre > code")].map((code) => ({
                    text: code.textContent.slice(0, 60),
                    overflow: code.scrollWidth - code.clientWidth,
                }))"""
            )
        finally:
            browser.close()
    assert blocks, "no code blocks on the print page"
    wide = [block["text"] for block in blocks if block["overflow"] > 1]
    assert not wide, f"code blocks wider than the page: {wide}"


@can_print
def test_spike_capture_is_in_the_pdf(printed):
    _, site, _, text, _ = printed
    demo = (site / "spike" / "demo" / "index.html").read_text(encoding="utf-8")
    if "spike-captures" not in demo:
        pytest.skip(
            "the spike capture (hooks/captures.py) is not on the demo page yet: "
            "enable it under `hooks:` in mkdocs.yml"
        )
    assert "A message from CS361" in text
    # The client's terminal line from the real run, not the page's prose.
    assert "Received: A message from CS361" in text


def test_no_browser_the_site_still_builds_and_one_line_says_how(tmp_path):
    site = tmp_path / "site"
    result = build(site, SPIKE_PDF_BROWSER=str(tmp_path / "no-such-browser"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "index.html").is_file()
    assert (site / "print_page" / "index.html").is_file()
    assert not (site / PDF_NAME).exists()
    lines = [line for line in result.stderr.splitlines() if "PDF" in line]
    assert len(lines) == 1, lines
    assert "not written" in lines[0] and "no-such-browser" in lines[0]
    assert "Ctrl+P" in lines[0]
    assert "Traceback" not in result.stderr
    # The site then offers the printable page instead of a missing file.
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "print_page/" in index and PDF_NAME not in index


@pytest.mark.skipif(
    sys.platform != "linux", reason="Windows and macOS also look in fixed install folders"
)
def test_no_browser_on_path_the_site_still_builds(tmp_path):
    site = tmp_path / "site"
    result = build(site, PATH="", SPIKE_PDF_BROWSER=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "index.html").is_file()
    lines = [line for line in result.stderr.splitlines() if "PDF" in line]
    assert len(lines) == 1, lines
    assert "no Chromium, Chrome or Edge found" in lines[0] and "SPIKE_PDF_BROWSER" in lines[0]


def test_only_build_prints(monkeypatch):
    monkeypatch.delenv("SPIKE_PDF", raising=False)
    for command in ("serve", None):
        pdf_hook._command = command
        assert pdf_hook._plan(ROOT / "site", None) == ""  # not printing, nothing to say
    # `mkdocs serve --clean` tells plugins the command is "build".
    monkeypatch.setattr(sys, "argv", ["mkdocs", "serve", "--clean"])
    pdf_hook._command = "build"
    assert pdf_hook._plan(ROOT / "site", None) == ""
    monkeypatch.setattr(sys, "argv", ["mkdocs", "build"])
    monkeypatch.setenv("SPIKE_PDF", "0")
    pdf_hook._command = "build"
    assert pdf_hook._plan(ROOT / "site", None) == "PDF skipped (SPIKE_PDF=0)."


@can_print
def test_build_log_has_no_overlapping_diagram_warning(printed):
    result = printed[0]
    assert "overlap what follows on paper" not in result.stderr


@can_print
def test_overflow_check_finds_a_diagram_taller_than_its_block(tmp_path):
    from playwright.sync_api import sync_playwright

    page = tmp_path / "page.html"
    page.write_text(
        '<div style="height:50px"><div class="mermaid" style="height:200px"></div></div>'
        '<div><div class="mermaid" style="height:20px"></div></div>',
        encoding="utf-8",
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(_browser_or_none()), args=[*pdf_hook.BROWSER_FLAGS, "--no-sandbox"]
        )
        try:
            tab = browser.new_page()
            tab.goto(page.as_uri())
            assert tab.evaluate(pdf_hook.OVERFLOWING_DIAGRAMS) == [1]
        finally:
            browser.close()


# --- A fresh clone without Node.js -------------------------------------------

# What a clone holds that the build reads; node_modules is left behind.
CLONE_PARTS = (*SITE_PARTS, "package.json", "package-lock.json")


def _registry_unreachable() -> str | None:
    """Why the real npm registry cannot be reached from here, or None."""
    url = urlsplit(pdf_hook.mermaid_js.pinned(ROOT).tarball_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=10).close()
    except OSError as error:
        return f"the npm registry ({url.hostname}) is not reachable: {error}"
    return None


@can_print
@pytest.mark.skipif(sys.platform == "win32", reason="hides Node.js with POSIX shell stand-ins")
def test_fresh_clone_without_node_gets_mermaid_from_the_registry_and_prints(tmp_path):
    """One command on a machine with Python, uv and a browser: the whole PDF.

    A copy of the project without node_modules, a cache folder of its own
    and `node`, `npm` and `npx` replaced by stand-ins that record any call,
    against the real npm registry (CI reaches it).
    """
    unreachable = _registry_unreachable()
    if unreachable:
        pytest.skip(unreachable)
    project = copy_parts(tmp_path / "clone", CLONE_PARTS)
    hidden = tmp_path / "no-node"
    hidden.mkdir()
    called = tmp_path / "node-was-called"
    for name in ("node", "npm", "npx"):
        shim = hidden / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{called}"\nexit 127\n', encoding="utf-8")
        shim.chmod(0o755)
    site = tmp_path / "site"
    result = build(
        site,
        project,
        PATH=f"{hidden}{os.pathsep}{os.environ.get('PATH', '')}",
        SPIKE_CACHE_DIR=str(tmp_path / "cache"),
        SPIKE_NPM_REGISTRY=None,
        SPIKE_PDF_BROWSER=str(pdf_hook.find_browser()),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not called.exists(), called.read_text(encoding="utf-8")
    said = "\n".join(line for line in result.stderr.splitlines() if "Mermaid" in line)
    assert "sha512 matches package-lock.json" in said, result.stderr[-3000:]
    assert "PDF written:" in result.stderr, result.stderr[-3000:]
    pin = pdf_hook.mermaid_js.pinned(ROOT)
    assert (site / "assets" / "javascripts" / f"mermaid-{pin.version}.min.js").is_file()
    reader = PdfReader(site / PDF_NAME)
    assert_diagrams_drawn(flat("\n".join(page.extract_text() or "" for page in reader.pages)))
