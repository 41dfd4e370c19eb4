"""The PDF for Canvas: `mkdocs build` writes it, and it reads as a paper.

Every test runs the real `mkdocs build` (hooks/paper.py assembles the paper,
hooks/pdf.py prints it with Paged.js in Chromium through Playwright) into a
temporary folder and reads the result with pypdf: the submission only, at
most PAGE_BUDGET US Letter pages, numbered on every page but the cover, a
contents list whose page numbers are the bookmarks' pages, paper wording,
raster screenshots for 2(b). Only the tests that need a browser are skipped
when none is installed; CI installs Debian `chromium`, so there they always run.
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
from helpers import SITE_PARTS, copy_parts, import_hook, load_file, mkdocs_build, why_no_pdf
from pypdf import PdfReader

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 300
# The limit for the graded PDF (US Letter pages, cover included).
PAGE_BUDGET = 16
# The cover's date in the main build: SOURCE_DATE_EPOCH fixes it (noon UTC, 8 December 2026).
COVER_DAY = datetime.datetime(2026, 12, 8, 12, tzinfo=datetime.timezone.utc)
# Web wording that has no place on paper (the site keeps its own).
WEB_WORDING = [
    re.compile(p, re.I)
    for p in (
        r"\bthis page\b",
        r"\bthis site\b",
        r"\bon every build\b",
        r"\bclick",
        r"\bpermanent link\b",
        r"\bprintable version\b",
        r"\bdownload pdf\b",
        r"\bprinted report\b",
    )
]


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


paper_hook = import_hook("paper")


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


def mkdocs_config() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_IgnorePythonTags)


AUTHOR = mkdocs_config()["site_author"]
PDF_NAME = pdf_hook.pdf_name(AUTHOR)
LEFT_OUT = mkdocs_config()["extra"]["paper"]["leave_out"]


def paper_nav() -> list[tuple[str, str, str | None]]:
    """(number, nav title, page path or None for a part) of what the paper holds, in order.

    The pages under extra.paper.leave_out are not in it, and neither is a
    part whose pages all are; the others are numbered 1, 2, 2.1, 2.2, 3, ...
    """

    def kept(value: object) -> bool:
        if isinstance(value, str):
            return value not in LEFT_OUT
        return any(kept(v) for item in value for v in item.values())  # type: ignore[attr-defined]

    found = []
    number = 0
    for item in mkdocs_config()["nav"]:
        ((title, value),) = item.items()
        if not kept(value):
            continue
        number += 1
        found.append((str(number), title, value if isinstance(value, str) else None))
        if isinstance(value, list):
            children = [c for c in value if kept(next(iter(c.values())))]
            for sub, child in enumerate(children, start=1):
                ((child_title, path),) = child.items()
                found.append((f"{number}.{sub}", child_title, path))
    return found


def page_heading(site: Path, page: str) -> str:
    """The first heading of a built page, as text (no permalink sign)."""
    built = site / Path(page).with_suffix("") / "index.html"
    if page == "index.md" or page.endswith("/index.md"):
        built = site / Path(page).parent / "index.html"
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", built.read_text(encoding="utf-8"), re.S)
    assert heading, f"{built} has no h1"
    return flat(html.unescape(re.sub(r"<a [^>]*>.*?</a>|<[^>]+>", "", heading.group(1))))


def mermaid_labels() -> dict[str, list[str]]:
    """Plain-text labels of each Mermaid diagram on the paper's pages, keyed by 'page #n'."""
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
    paper = {page for _, _, page in paper_nav() if page}
    for md in sorted((ROOT / "docs").rglob("*.md")):
        if md.relative_to(ROOT / "docs").as_posix() not in paper:
            continue
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
    result = build(site, SOURCE_DATE_EPOCH=str(int(COVER_DAY.timestamp())))
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
def test_pdf_is_at_most_the_page_budget_of_us_letter_pages(printed):
    _, _, reader, _, _ = printed
    assert 3 < len(reader.pages) <= PAGE_BUDGET
    for page in reader.pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (round(width), round(height)) == (612, 792)  # 8.5 x 11 in at 72 pt/in


@can_print
def test_cover_names_the_student_course_and_the_date_set_for_it(printed):
    _, _, reader, _, _ = printed
    cover = flat(reader.pages[0].extract_text())
    assert AUTHOR in cover
    assert "CS361 Assignment 5".upper() in cover.upper()
    assert "Amazon & Microservices" in cover
    # The build ran with SOURCE_DATE_EPOCH: the cover shows that day, not today.
    assert "December 8, 2026" in cover, cover


def test_cover_date_comes_from_mkdocs_yml_else_from_the_build(monkeypatch):
    assert paper_hook.cover_date(datetime.date(2026, 12, 8)) == datetime.date(2026, 12, 8)
    assert paper_hook.cover_date("2026-12-09") == datetime.date(2026, 12, 9)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(COVER_DAY.timestamp())))
    assert paper_hook.cover_date(None) == datetime.date(2026, 12, 8)
    assert paper_hook.long_date(datetime.date(2026, 12, 8)) == "December 8, 2026"
    with pytest.raises(paper_hook.PluginError, match="YYYY-MM-DD"):
        paper_hook.cover_date("8 December")


def test_pdf_name_follows_the_students_name():
    assert pdf_hook.pdf_name("Ada Lovelace") == "cs361-assignment5-ada-lovelace.pdf"
    assert pdf_hook.pdf_name("  Zoë  O'Neil ") == "cs361-assignment5-zoe-o-neil.pdf"
    # The one place the name is written: mkdocs.yml's site_author.
    for path in ["docs/index.md", "docs/credits.md", "hooks/pdf.py", "hooks/paper.py"]:
        assert AUTHOR not in (ROOT / path).read_text(encoding="utf-8"), path


def _outline(reader: PdfReader) -> list[tuple[str, int]]:
    """(title, page number) of every bookmark, in order, nesting flattened."""
    found: list[tuple[str, int]] = []

    def walk(items) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item)
            else:
                page = reader.get_destination_page_number(item)
                assert page is not None, item.title
                found.append((flat(item.title), page + 1))

    walk(reader.outline)
    return found


def _contents(reader: PdfReader) -> list[tuple[str, int]]:
    """(entry, page number) of each line of the contents page (page 2)."""
    lines = reader.pages[1].extract_text().splitlines()
    start = next((i for i, line in enumerate(lines) if flat(line) == "Contents"), None)
    assert start is not None, lines[:5]
    return [
        (flat(match[1]), int(match[2]))
        for line in lines[start + 1 :]
        if (match := re.fullmatch(r"(\d[\d.]* .+?)\s*(\d+)\s*", line))
    ]


@can_print
def test_contents_lists_the_paper_in_order_with_the_bookmarks_page_numbers(printed):
    _, _, reader, _, _ = printed
    contents = _contents(reader)
    assert [entry.split(" ", 1)[0] for entry, _ in contents] == [n for n, _, _ in paper_nav()]
    bookmarks = dict(_outline(reader))
    for entry, page in contents:
        # The entry is the heading's own text, and the page is where the heading is.
        assert entry in bookmarks, f"{entry!r} is not a bookmark: {sorted(bookmarks)}"
        assert bookmarks[entry] == page, (entry, page, bookmarks[entry])
    # The pages only go forward, and the answer sheet starts on page 3.
    pages = [page for _, page in contents]
    assert pages == sorted(pages) and pages[0] == 3


@can_print
def test_the_paper_holds_the_submission_only_and_says_where_the_rest_is(printed):
    _, site, reader, _, _ = printed
    body = flat(" ".join(page.extract_text() for page in reader.pages[2:]))
    position = 0
    for number, title, page in paper_nav():
        # A part gets its nav title; a page starts with its own h1.
        heading = f"{number} {title if page is None else page_heading(site, page)}"
        found = body.find(heading, position)
        assert found >= 0, f"'{heading}' missing from the body or out of order"
        position = found
    headings = {title for title, _ in _outline(reader)}
    contents = flat(reader.pages[1].extract_text())
    for page in LEFT_OUT:
        title = page_heading(site, page)
        assert not any(heading.endswith(f" {title}") for heading in headings), title
        # Named once, on the contents page, as a page of the website.
        assert f"\u201c{title}\u201d" in contents, title
    assert "report\u2019s website" in contents


@can_print
def test_pdf_says_who_wrote_it_and_what_it_is(printed):
    """Document properties (and screen readers) show the title, author and subject."""
    _, _, reader, _, _ = printed
    info = reader.metadata
    assert info.author == AUTHOR
    assert "Microservices Case Study & Pipe Spike" in (info.subject or "")
    assert "CS361 Assignment 5" in (info.title or "")
    # Added as an update of the file Chromium wrote, which stays readable.
    assert info.producer and info.producer.startswith("Skia/PDF")


@can_print
def test_every_page_but_the_cover_has_a_page_number(printed):
    _, _, reader, _, _ = printed
    total = len(reader.pages)
    assert "Page 1 of" not in flat(reader.pages[0].extract_text())
    for number, page in enumerate(reader.pages[1:], start=2):
        footer = flat(page.extract_text())
        assert f"Page {number} of {total}" in footer, (number, footer[-200:])
        assert AUTHOR in footer


@can_print
def test_cross_references_give_the_section_and_its_page(printed):
    """ "Full answer: ... (section 2.1, page 6)": the page is the section's bookmark page."""
    _, _, reader, text, _ = printed
    bookmarks = {title.split(" ", 1)[0]: page for title, page in _outline(reader)}
    found = re.findall(r"\(section (\d[\d.]*), page (\d+)\)", text)
    assert len(found) >= 6, found  # at least one per answer on the answer sheet
    for number, page in found:
        assert bookmarks.get(number) == int(page), (number, page)
    assert len(re.findall(r"Full answer: .+? \(section \d", text)) == 6


@can_print
def test_the_pdf_speaks_paper_not_web(printed):
    _, _, _, text, _ = printed
    for pattern in WEB_WORDING:
        assert not pattern.search(text), f"web wording in the PDF: {pattern.pattern}"


def _raster_images(page) -> list[tuple[int, int]]:
    """(width, height) in pixels of every raster image drawn on a page, forms included."""
    found: list[tuple[int, int]] = []

    def walk(obj) -> None:
        resources = obj.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        for ref in xobjects.get_object().values() if xobjects else []:
            xobject = ref.get_object()
            if xobject.get("/Subtype") == "/Image":
                found.append((int(xobject["/Width"]), int(xobject["/Height"])))
            elif xobject.get("/Subtype") == "/Form":
                walk(xobject)

    walk(page)
    return found


@can_print
def test_2b_screenshots_are_raster_images_on_the_answer_sheet_and_in_the_full_answer(printed):
    _, _, reader, _, _ = printed
    pages = [flat(page.extract_text()) for page in reader.pages]
    sheet = next(n for n, text in enumerate(pages, start=1) if "2(b) Get the approach" in text)
    assert sheet <= 5, "2(b) must be on the answer sheet, pages 3 to 5"
    images = {n: _raster_images(page) for n, page in enumerate(reader.pages, start=1)}
    # Both windows, photographed at twice the CSS size: over 1000 pixels wide.
    assert len([size for size in images[sheet] if size[0] >= 1000]) == 2, images[sheet]
    full = next(n for n, text in enumerate(pages, start=1) if n > sheet and "3.2 (b)" in text)
    shown = [size for n in range(full, full + 2) for size in images.get(n, [])]
    assert len([size for size in shown if size[0] >= 1000]) == 2, (full, shown)
    caption = " ".join(pages[sheet - 1 : sheet + 1])
    assert "Screenshots (PNG) of the server's and the client's terminal windows" in caption


@can_print
def test_mermaid_is_drawn_never_printed_as_source(printed):
    _, _, _, text, _ = printed
    assert_diagrams_drawn(text)


def assert_diagrams_drawn(text: str) -> None:
    """No Mermaid source in the PDF's text, and most labels of every diagram in the paper."""
    for pattern in RAW_MERMAID:
        assert not pattern.search(text), f"raw Mermaid in the PDF: {pattern.pattern}"
    diagrams = mermaid_labels()
    assert diagrams, "no Mermaid diagrams in the paper's pages to check"
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
def test_the_laid_out_pages_keep_the_layout_rules(printed):
    """The hook checks each laid-out page (LAYOUT_FAULTS) and warns; this build had nothing to say.

    Also, at the paper's width no code block scrolls sideways.
    """
    result, site, _, _, _ = printed
    assert "PDF layout:" not in result.stderr, result.stderr[-3000:]
    with pdf_hook.laid_out(site, pdf_hook.PAPER_PAGE, browser=pdf_hook.find_browser()) as (
        tab,
        status,
    ):
        assert status["state"] == "ready" and status["pages"] <= PAGE_BUDGET
        assert pdf_hook.layout_faults(tab) == []
        wide = tab.evaluate(
            """() => [...document.querySelectorAll("pre > code")]
                 .filter((code) => code.scrollWidth - code.clientWidth > 1)
                 .map((code) => code.textContent.slice(0, 60))"""
        )
    assert not wide, f"code blocks wider than the page: {wide}"


@can_print
def test_layout_check_finds_each_kind_of_fault(tmp_path):
    """LAYOUT_FAULTS on made-up pages shaped like Paged.js's: each fault is found."""
    from playwright.sync_api import sync_playwright

    box = 'class="pagedjs_page_content" style="width:400px;height:600px;border:1px solid"'

    def page(*content: str) -> str:
        return f'<div class="pagedjs_page"><div {box}>{"".join(content)}</div></div>'

    tall = '<div style="height:450px">Text.</div>'
    document = tmp_path / "faults.html"
    document.write_text(
        "<!doctype html><html><body>"
        + page("Cover")
        + page("Contents")
        + page("<p>One short line, then nothing.</p>")
        + page(
            tall,
            '<table style="width:60px"><tr><td style="overflow-wrap:anywhere">line_too_long</td>',
            '<td style="width:40px">Key-value</td></tr></table>',
            '<p style="width:90px"><code>a-very-long-command-name</code></p>',
            '<pre style="height:40px"></pre>',
        )
        + page(tall, "<h2>A lonely heading</h2>", '<div class="admonition question">Q?</div>')
        + page("<p>Short, but a new part follows.</p>")
        + page('<section class="paper-part">', tall, "</section>")
        + "</body></html>",
        encoding="utf-8",
    )
    with sync_playwright() as playwright:
        running = pdf_hook.launch(playwright, pdf_hook.find_browser())
        try:
            tab = running.new_page()
            tab.goto(document.as_uri())
            faults = tab.evaluate(pdf_hook.LAYOUT_FAULTS)
        finally:
            running.close()
    assert [f.split(" is only")[0] for f in faults if "% full" in f] == ["page 3"], faults
    assert 'page 4: "line_too_long" breaks inside a table cell' in faults, faults
    assert not any("Key-value" in f for f in faults), faults  # a hyphen is a fine place to break
    assert 'page 4: inline code "a-very-long-command-name" breaks across lines' in faults
    assert "page 4 ends with an empty pre box" in faults, faults
    assert 'page 5 ends with the heading "A lonely heading"' in faults, faults
    assert len(faults) == 5, faults


def test_paper_numbers_headings_and_links_pages_as_cross_references():
    """hooks/paper.py's pieces on small pages: ids, numbers, links, wording, code, sources."""
    doc = paper_hook._Doc(page=None, key="case-study-x", number="2.3", depth=1)
    html_text, entries = paper_hook._number_headings(
        paper_hook._prefix_ids(
            '<h1 id="t">(c) Title<a class="headerlink" href="#t">&para;</a></h1>'
            '<h2 id="s">Sub</h2><p><a href="#s">back</a></p><svg><use href="#g"/>'
            '<g id="g" clip-path="url(#g)"/></svg>',
            doc.key,
        ),
        doc,
    )
    assert [(e.number, e.title, e.anchor) for e in entries] == [
        ("2.3", "(c) Title", "case-study-x--t"),
        ("2.3.1", "Sub", "case-study-x--s"),
    ]
    assert '<h2 id="case-study-x--t" class="paper-numbered">2.3 (c) Title</h2>' in html_text
    assert '<h3 id="case-study-x--s" class="paper-numbered">2.3.1 Sub</h3>' in html_text
    assert 'href="#case-study-x--s"' in html_text and "url(#case-study-x--g)" in html_text
    assert "headerlink" not in html_text
    # Web words become paper words in the text, never in code blocks.
    worded = paper_hook._paper_wording("<p>Everything on this page</p><pre>this page</pre>")
    assert worded == "<p>Everything in this section</p><pre>this page</pre>"
    # Inline code breaks between its words only; code blocks are left alone.
    kept = paper_hook._keep_code_whole("<p><code>uv run x</code></p><pre><code>a b</code></pre>")
    assert kept == (
        '<p><code><span class="paper-word">uv</span> <span class="paper-word">run</span> '
        '<span class="paper-word">x</span></code></p><pre><code>a b</code></pre>'
    )
    # The references keep what is cited; a group left empty goes with its heading.
    references = (
        '<h1 id="r">References</h1><h2 id="a">A</h2><ul>\n<li><a href="https://a.example/x">a</a></li>\n'
        '</ul><h2 id="b">B</h2><ul>\n<li><a href="https://b.example/">b</a></li>\n</ul>'
    )
    only = paper_hook._only_cited(references, {"https://a.example/x"})
    assert "a.example" in only and "b.example" not in only and '<h2 id="b">' not in only


def test_paper_links_become_cross_references_or_words_for_the_website():
    from types import SimpleNamespace

    page = SimpleNamespace(url="case-study/x/", file=SimpleNamespace(src_uri="case-study/x.md"))
    doc = paper_hook._Doc(page=page, key="case-study-x", number="2.3", depth=1)
    doc.html = (
        '<p><a href="../y/#z">(y)</a>, <a href="../../spike/protocol/#limits">limits</a>, '
        '<a href="https://s.example/">a source</a>, <img src="../../assets/a.png"></p>'
    )
    targets = {"case-study-y--z": "2.4.1"}
    pages = {"case-study/y/": "case-study-y--title"}
    site = {"spike/protocol/": object()}
    paper = paper_hook._link(doc, pages, targets, site, site_url="")
    assert (
        '<a href="#case-study-y--z" class="paper-xref paper-xref-section" '
        'data-xref="section 2.4.1">(y)</a>'
    ) in paper
    assert '<span class="paper-offprint">limits</span>' in paper
    assert '<a href="https://s.example/">a source</a>' in paper
    assert '<img src="../assets/a.png">' in paper
    # With site_url set, a page left out is a link to the website.
    online = paper_hook._link(doc, pages, targets, site, site_url="https://me.example/r/")
    assert (
        '<a href="https://me.example/r/spike/protocol/#limits" class="paper-offprint">limits</a>'
        in online
    )


@can_print
def test_spike_capture_is_in_the_pdf(printed):
    _, _, _, text, _ = printed
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
    lines = [line for line in result.stderr.splitlines() if re.search(r"-\s+PDF ", line)]
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
    lines = [line for line in result.stderr.splitlines() if re.search(r"-\s+PDF ", line)]
    assert len(lines) == 1, lines
    assert "no Chromium, Chrome or Edge found" in lines[0] and "SPIKE_PDF_BROWSER" in lines[0]


def test_only_build_prints(monkeypatch):
    monkeypatch.delenv("SPIKE_PDF", raising=False)
    for command in ("serve", None):
        pdf_hook._command = command
        assert pdf_hook._plan(ROOT / "site", None, None) == ""  # not printing, nothing to say
    # `mkdocs serve --clean` tells plugins the command is "build".
    monkeypatch.setattr(sys, "argv", ["mkdocs", "serve", "--clean"])
    pdf_hook._command = "build"
    assert pdf_hook._plan(ROOT / "site", None, None) == ""
    monkeypatch.setattr(sys, "argv", ["mkdocs", "build"])
    monkeypatch.setenv("SPIKE_PDF", "0")
    pdf_hook._command = "build"
    assert pdf_hook._plan(ROOT / "site", None, None) == "PDF skipped (SPIKE_PDF=0)."


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
        browser = pdf_hook.launch(playwright, pdf_hook.find_browser())
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
    url = urlsplit(pdf_hook.npm_files.pinned(ROOT).tarball_url())
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
    pin = pdf_hook.npm_files.pinned(ROOT)
    assert (site / "assets" / "javascripts" / f"mermaid-{pin.version}.min.js").is_file()
    reader = PdfReader(site / PDF_NAME)
    assert_diagrams_drawn(flat("\n".join(page.extract_text() or "" for page in reader.pages)))
