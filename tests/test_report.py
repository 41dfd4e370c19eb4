"""The report as a graded submission: answers first, real pictures, budgets, corrected facts.

Everything here reads one real `mkdocs build --strict` of the project (the
HTML site and, where a Chromium-family browser and `npm ci` are available,
the PDF for Canvas), built once into a temporary folder. Words are counted on
the built pages, not on the Markdown, the way a reader meets them.
"""

from __future__ import annotations

import datetime
import html
import itertools
import json
import os
import platform
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import copy_parts, import_hook, load_file, mkdocs_build, why_no_pdf

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT_S = 300

# The assignment's six questions, in its own words and order.
QUESTIONS = [
    ("1(a)", "What is the name of the software and what is it for?"),
    ("1(b)", "Why was the microservices architecture used for this software?"),
    ("1(c)", "How does communication happen between the software's microservices?"),
    (
        "1(d)",
        "Name and describe a few microservices that are part of the software. (3+ microservices)",
    ),
    ("2(a)", "Which approach did you spike?"),
    (
        "2(b)",
        "Get the approach working. Upload screenshots that show the approach being used "
        'to send and receive this message: "A message from CS361"',
    ),
]
MESSAGE = "A message from CS361"
# The pages whose short answer the answer sheet includes, in question order.
ANSWER_PAGES = [
    "case-study/software",
    "case-study/why-microservices",
    "case-study/communication",
    "case-study/example-services",
    "spike/approach",
]
PART1_PAGES = ANSWER_PAGES[:4]
# Pages outside the word budget: the list of sources and the credits.
NOT_COUNTED = {"references", "credits"}
# Pages written in the student's voice (the appendix pages are reference material).
STUDENT_PAGES = ["", *ANSWER_PAGES, "spike/demo", "revision-notes", "credits"]

PART1_BUDGET = 3_500
# Prose only (code blocks and captures are real files the tests run): the
# old 12,000 words with code held about 10,500 of prose.
SITE_BUDGET = 10_500
PDF_PAGE_BUDGET = 16
ANSWER_SHEET_PAGES = 5  # cover, contents, then all six answers by page 5
MIN_ANSWER_WORDS = 40


_pdf_hook = load_file(ROOT / "hooks" / "pdf.py", "pdf_hook_for_report")


_captures = import_hook("captures")
_AUTHOR = yaml.safe_load(
    "\n".join(
        line
        for line in (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines()
        if line.startswith("site_author:")
    )
)["site_author"]
PDF_NAME = _pdf_hook.pdf_name(_AUTHOR)


def _why_no_pdf() -> str | None:
    why = why_no_pdf(_pdf_hook)
    if why is not None:
        return why
    try:  # node_modules (npm ci) or the copy a build downloaded and cached
        _pdf_hook.npm_files.find(ROOT, download=False)
    except _pdf_hook.npm_files.Unavailable as error:
        return f"no local Mermaid yet ({error}): run `npm ci` or `uv run mkdocs build` once"
    return None


needs_pdf = pytest.mark.skipif(_why_no_pdf() is not None, reason=str(_why_no_pdf()))


# --- Reading built pages ---------------------------------------------------


class _ArticleText(HTMLParser):
    """The visible text of a page's article, without pictures (<svg>) or scripts."""

    SKIP: frozenset[str] = frozenset({"svg", "script", "style"})

    def __init__(self, skip: frozenset[str] = frozenset()) -> None:
        super().__init__(convert_charrefs=True)
        self.skip = self.SKIP | skip
        self.depth = 0  # > 0 inside <article>
        self.skipping = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "article":
            self.depth += 1
        elif self.depth and tag in self.skip:
            self.skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self.depth -= 1
        elif self.depth and tag in self.skip and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skipping:
            self.parts.append(data)


def article_text(page_html: str, *, prose: bool = False) -> str:
    """A page's article as text; ``prose`` leaves out code blocks and terminal
    captures (<pre>): examples are real files the tests run, not words to read."""
    parser = _ArticleText(frozenset({"pre"}) if prose else frozenset())
    parser.feed(page_html)
    return " ".join(" ".join(parser.parts).split())


def words(text: str) -> int:
    return len(text.split())


def flat(text: str) -> str:
    """Text with ligatures unfolded, no-break spaces as spaces, whitespace runs as one."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@dataclass
class Built:
    """One real build: its log, its site folder, and the PDF when one was printed."""

    log: str
    site: Path
    dates: set[str]
    pdf_pages: list[str] = field(default_factory=list)
    pdf_reader: Any = None

    def page(self, name: str) -> str:
        return (self.site / name / "index.html").read_text(encoding="utf-8")

    def article(self, name: str) -> str:
        return article_text(self.page(name))

    def counted_pages(self) -> dict[str, int]:
        """Words of prose per built page of the site (code and captures left
        out), outside the word budget's exceptions."""
        counts = {}
        for built in sorted(self.site.rglob("index.html")):
            name = built.parent.relative_to(self.site).as_posix()
            name = "" if name == "." else name
            if name.split("/")[0] in {"print_page", "search", "assets", *NOT_COUNTED}:
                continue
            counts[name] = words(article_text(built.read_text(encoding="utf-8"), prose=True))
        return counts


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    site = tmp_path_factory.mktemp("report") / "site"
    env = {key: value for key, value in os.environ.items() if key != "SPIKE_PDF"}
    before = _today()
    done = mkdocs_build(ROOT, site, env, timeout=BUILD_TIMEOUT_S)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    result = Built(log=log, site=site, dates={before, _today()})
    pdf = site / PDF_NAME
    if pdf.is_file():
        from pypdf import PdfReader

        result.pdf_reader = PdfReader(pdf)
        result.pdf_pages = [flat(page.extract_text() or "") for page in result.pdf_reader.pages]
    return result


# --- The answer sheet --------------------------------------------------------


@needs_pdf
def test_answer_sheet_comes_first_with_the_six_questions_in_order(built: Built) -> None:
    assert built.pdf_pages, "the build printed no PDF"
    # Cover, contents, then the answer sheet.
    assert "Answer sheet" in built.pdf_pages[2]
    text = " ".join(built.pdf_pages[:ANSWER_SHEET_PAGES])
    found = []
    position = 0
    for label, question in QUESTIONS:
        at = text.find(f"{label} {question}", position)
        assert at >= 0, f"{label} missing, or out of order, in the PDF's first 5 pages"
        found.append((at, at + len(label) + 1 + len(question)))
        position = at + 1
    # Each of the first five is followed by an answer of at least 40 words.
    for (_, end), (next_start, _) in itertools.pairwise(found):
        answer = text[end:next_start]
        assert words(answer) >= MIN_ANSWER_WORDS, answer
    # 2(b) is followed by the screenshots' caption, and then its answer, on the sheet.
    after_2b = text[found[-1][1] :]
    assert "Screenshots (PNG) of the server's and the client's terminal windows" in after_2b
    assert "Full answer: (b) Demonstration" in after_2b


def _short_answer(page_html: str) -> list[str]:
    return [
        flat(html.unescape(re.sub(r"<[^>]+>", " ", block)))
        for block in re.findall(r'<div class="short-answer">(.*?)</div>', page_html, re.S)
    ]


def test_answer_sheet_includes_each_pages_short_answer(built: Built) -> None:
    sheet = _short_answer(built.page(""))
    assert len(sheet) == len(ANSWER_PAGES)
    for number, name in enumerate(ANSWER_PAGES):
        (own,) = _short_answer(built.page(name))
        assert sheet[number] == own, f"the sheet's answer differs from {name}"
        assert words(own) >= MIN_ANSWER_WORDS
    # One source of truth: the sheet includes the answers, it does not retype them.
    source = (DOCS / "index.md").read_text(encoding="utf-8")
    for name in ANSWER_PAGES:
        assert f'--8<-- "docs/{name}.md:answer"' in source, name


def test_each_answer_ends_with_a_link_to_its_full_page(built: Built) -> None:
    sheet = built.page("")
    for (label, _), target in zip(QUESTIONS, [*ANSWER_PAGES, "spike/demo"], strict=True):
        anchor = "q" + label.replace("(", "").replace(")", "")
        section = sheet.split(f'id="{anchor}"', 1)[1]
        section = re.split(r"<h[23] ", section, maxsplit=1)[0]
        last = re.findall(r"<p>(.*?)</p>", section, re.S)[-1]
        assert f'href="{target}/"' in last, (label, last)


def _statements(block_html: str) -> list[str]:
    """Sentences of one paragraph or list item, still as HTML."""
    text = " ".join(block_html.split())
    return [part for part in re.split(r"(?<=[.!?])\s+(?=[A-Z\"“(<*])", text) if part.strip()]


def test_every_statement_on_the_answer_sheet_carries_a_link(built: Built) -> None:
    page = built.page("")
    body = page.split("<article", 1)[1].split("</article>", 1)[0]
    # Quotations of the assignment are its words, not my claims; the 2(b)
    # pictures' caption says what this build did, not what a source says.
    body = re.sub(r"<blockquote>.*?</blockquote>", "", body, flags=re.S)
    body = re.sub(
        r'<div class="spike-shots-block">.*?</figure>\s*<p>.*?</p>', "", body, flags=re.S
    )
    blocks = re.findall(r"<(p|li)>(.*?)</\1>", body, re.S)
    assert len(blocks) >= 2 * len(QUESTIONS)
    unlinked = [
        sentence for _, block in blocks for sentence in _statements(block) if "<a " not in sentence
    ]
    assert not unlinked, unlinked


# --- 2(b): pictures of the real run ---------------------------------------------


def _pictures(page_html: str) -> list[tuple[str, list[str]]]:
    """(title, lines) of each 2(b) picture on a page: the window each shows and its lines.

    A photograph (PNG) says them in its text alternative, a drawing (SVG,
    without a browser) in its <title> and <desc>; both come from the lines
    the real run printed, which are what the picture shows.
    """
    pictures = []
    figure = re.search(r'<figure class="spike-shots.*?</figure>', page_html, re.S)
    assert figure, "no 2(b) pictures on the page"
    for alt in re.findall(r'<img [^>]*\balt="([^"]*)"', figure[0]):
        title, _, rest = html.unescape(alt).partition(":\n")
        pictures.append((title.removeprefix("Screenshot of "), rest.splitlines()))
    for svg in re.findall(r"<svg .*?</svg>", figure[0], re.S):
        named = re.search(r"<title[^>]*>Screenshot of (.*?)</title>", svg)
        desc = re.search(r"<desc[^>]*>(.*?)</desc>", svg, re.S)
        assert named and desc, svg[:300]
        pictures.append((html.unescape(named[1]), html.unescape(desc[1]).splitlines()))
    return pictures


def _picture_rows(svg: str) -> list[str]:
    """The rows of a Rich terminal drawing, each as a terminal shows it.

    Each run of text sits at its own x (column) and y (row), so the rows are
    rebuilt cell by cell; spaces between runs are not drawn at all.
    """
    runs = re.findall(r"<text([^>]*)>(.*?)</text>", svg, re.S)
    rows: dict[float, dict[int, str]] = {}
    for attrs, raw in runs[1:]:  # the first is the window's title
        text = html.unescape(raw)
        x, y, length = (
            float(re.findall(rf'\b{name}="([\d.]+)"', attrs)[0])
            for name in ("x", "y", "textLength")
        )
        cell = length / len(text)
        row = rows.setdefault(y, {})
        for offset, char in enumerate(text):
            row[round(x / cell) + offset] = char
    return [
        # Rich draws spaces as no-break spaces.
        "".join(row.get(col, " ") for col in range(max(row) + 1)).replace("\xa0", " ").rstrip()
        for _, row in sorted(rows.items())
    ]


@pytest.mark.parametrize("page", ["", "spike/demo"], ids=["answer sheet", "demonstration"])
def test_2b_pages_show_pictures_of_this_builds_run(built: Built, page: str) -> None:
    page_html = built.page(page)
    pictures = _pictures(page_html)
    assert [title for title, _ in pictures] == ["Terminal 1: the server", "Terminal 2: the client"]
    (_, server), (_, client) = pictures
    assert f"Received: {MESSAGE}" in server
    assert f"Sent: {MESSAGE}" in client and f"Received: {MESSAGE}" in client
    # The same run as the text captures: its id, and the port its server got.
    logged = re.search(r"spike capture: run ([0-9a-f]+), server port (\d+)", built.log)
    assert logged, "the capture hook logged no run"
    run, port = logged.groups()
    assert re.search(rf'<figure class="spike-shots[^"]*"[^>]* data-spike-run="{run}"', page_html)
    assert f"Serving on 127.0.0.1:{port} (press Ctrl+C to stop)" in server
    # The commands the README gives, with --port only when 3000 was taken.
    extra = "" if port == "3000" else f" --port {port}"
    assert server[0] == f"$ uv run spike-server{extra}" or server[0].startswith("> ")
    assert f'uv run spike-client{extra} "{MESSAGE}"' in client[0]
    # Photographed by this build when a browser is there: PNG files in the site.
    photographed = "spike-shots--photographed" in page_html
    assert photographed == (why_no_pdf(_pdf_hook) is None)
    if photographed:
        sources = re.findall(r'<img src="([^"]+)"', page_html.split("spike-shots", 1)[1])[:2]
        assert len(sources) == 2, sources
        for source in sources:
            assert f"assets/spike-run/{run}-" in source
            png = built.site / ("assets/" + source.split("assets/", 1)[1])
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Labelled honestly: what they are, when, which Python, which OS.
    label = re.search(r"run on (\S+) \(UTC\) · Python (\S+) · ([^<]+)<", html.unescape(page_html))
    assert label, "the pictures have no date/Python/OS label"
    date, python, os_name = label.groups()
    assert date in built.dates
    assert python == platform.python_version()
    assert platform.system() in os_name or platform.system() == "Darwin"
    text = article_text(page_html)
    assert (
        "Screenshots (PNG) of the server's and the client's terminal windows" in text
        or "Drawings of the server's and the client's terminal windows" in text
    )
    assert "as python -m spike.server and python -m spike.client" in text, text[-900:]


@pytest.mark.parametrize("page", ["", "spike/demo"], ids=["answer sheet", "demonstration"])
def test_2b_pictures_agree_and_send_the_assignments_exact_words(built: Built, page: str) -> None:
    page_html = built.page(page)
    (_, server), (_, client) = _pictures(page_html)
    # The same moment in both windows: one connection per client command, all closed.
    commands = sum(line.startswith(("$ uv run spike-client", "> uv run")) for line in client)
    assert commands == 2, client
    opened = sum(line.startswith("Connection opened:") for line in server)
    closed = sum(line.startswith("Connection closed:") for line in server)
    assert opened == closed == commands
    # "A message from CS361", never with the draft's "!", in the pictures and the page.
    assert "CS361!" not in html.unescape(page_html)
    assert sum(line == f"Received: {MESSAGE}" for line in server) == 1


def test_2b_pictures_break_long_lines_between_tokens(built: Built) -> None:
    """The client's window, drawn again from its lines as the build drew it: the JSON
    reply breaks between members, continuation rows under the JSON."""
    (_, _), (title, client) = _pictures(built.page(""))
    terminal = _captures.Terminal(title, client)
    svg = _captures.terminal_svg(terminal, "probe")
    rows = _picture_rows(svg)
    start = next(i for i, row in enumerate(rows) if row.startswith("Received: {"))
    reply = [rows[start], *itertools.takewhile(lambda row: row.startswith(" "), rows[start + 1 :])]
    assert len(reply) > 1, "the JSON reply fits one row: nothing to check"
    # Each row ends after a JSON separator; the continuation rows line up under the JSON.
    assert all(row.endswith((",", ":", "{", "[")) for row in reply[:-1]), reply
    assert all(row.startswith(" " * len("Received: ")) for row in reply[1:]), reply
    joined = reply[0] + "".join(row.strip() for row in reply[1:])
    assert json.loads(joined.removeprefix("Received: "))["ok"] is True
    # Nothing clips the last row's underscores (Rich's box ends at its baseline).
    assert "-clip-terminal)" not in svg


def test_own_screenshots_replace_the_builds(tmp_path: Path) -> None:
    """PNG or JPEG files in docs/assets/screenshots/ are the 2(b) pictures, in name order."""
    folder = tmp_path / "docs" / _captures.OWN_SHOTS_DIR
    folder.mkdir(parents=True)
    for name in ("2-client.jpg", "1-server.png", "notes.txt"):
        (folder / name).write_bytes(b"not looked at")
    shots = _captures.own_screenshots(tmp_path / "docs")
    assert [shot.site_path for shot in shots] == [
        "assets/screenshots/1-server.png",
        "assets/screenshots/2-client.jpg",
    ]
    assert _captures.own_screenshots(tmp_path / "nothing") == []


def test_a_build_with_own_screenshots_shows_them_and_says_whose_they_are(tmp_path: Path) -> None:
    project = copy_parts(tmp_path / "project")
    folder = project / "docs" / _captures.OWN_SHOTS_DIR
    folder.mkdir(parents=True)
    (folder / "terminal-1.png").write_bytes(b"\x89PNG\r\n\x1a\n stands in for a screenshot")
    env = {**os.environ, "SPIKE_PDF": "0"}
    done = mkdocs_build(project, tmp_path / "site", env, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    sheet = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    demo = (tmp_path / "site" / "spike" / "demo" / "index.html").read_text(encoding="utf-8")
    assert '<img src="assets/screenshots/terminal-1.png"' in sheet
    assert '<img src="../../assets/screenshots/terminal-1.png"' in demo
    assert "Screenshots I took of my own terminals" in article_text(sheet)
    assert "assets/spike-run/" not in sheet  # the build's own pictures are not made
    assert (tmp_path / "site" / "assets" / "screenshots" / "terminal-1.png").is_file()


# --- Budgets -----------------------------------------------------------------


def test_part1_pages_stay_within_their_word_budget(built: Built) -> None:
    counts = {name: words(built.article(name)) for name in PART1_PAGES}
    assert sum(counts.values()) <= PART1_BUDGET, counts


def test_site_stays_within_its_word_budget(built: Built) -> None:
    counts = built.counted_pages()
    assert set(PART1_PAGES) <= set(counts), counts
    assert sum(counts.values()) <= SITE_BUDGET, counts


@needs_pdf
def test_pdf_stays_within_its_page_budget(built: Built) -> None:
    assert 0 < len(built.pdf_pages) <= PDF_PAGE_BUDGET


# --- Facts that were wrong once ----------------------------------------------


def _blocks(page_html: str) -> list[str]:
    body = page_html.split("<article", 1)[1].split("</article>", 1)[0]
    return [
        flat(html.unescape(re.sub(r"<[^>]+>", "", block)))
        for _, block in re.findall(r"<(p|li|td|th)>(.*?)</\1>", body, re.S)
    ]


def test_grpc_prioritisation_is_never_presented_as_a_feature(built: Built) -> None:
    mentions = []
    for name in built.counted_pages():
        for block in _blocks(built.page(name)):
            for sentence in re.split(r"(?<=[.!?])\s+", block):
                if re.search(r"prioriti[sz]", sentence, re.I):
                    mentions.append(sentence)
                    assert "deprecat" in sentence, sentence
    grpc = built.article("case-study/communication")
    assert mentions and "RFC 9113" in grpc and "RFC 9218" in grpc
    # What gRPC does gain from HTTP/2.
    assert "many concurrent calls on one connection" in grpc and "streaming" in grpc


def test_twitter_is_partly_true_and_dated(built: Built) -> None:
    everywhere = " ".join(built.article(name) for name in built.counted_pages())
    assert "True for 2020" not in everywhere
    rows = [
        row
        for row in re.findall(r"<tr>(.*?)</tr>", built.page("revision-notes"), re.S)
        if "Twitter" in row
    ]
    assert len(rows) == 1
    (row,) = rows
    text = flat(html.unescape(re.sub(r"<[^>]+>", "", row)))
    assert text.endswith("Partly true")
    assert "December 2020" in text and "never happened" in text
    assert "cloud7.news" in row and "press.aboutamazon.com" in row


def test_benchmark_ratio_tables_say_how_their_ratios_are_computed(built: Built) -> None:
    text = built.article("spike/benchmark")
    tables = built.page("spike/benchmark").count("÷")
    assert tables, "no ratio columns on the benchmark page"
    assert "the median of those per-round ratios" in text
    assert "not that the pipe costs nothing" in text


def test_student_pages_speak_in_the_first_person_singular(built: Built) -> None:
    for name in STUDENT_PAGES:
        text = built.article(name)
        # Quotations keep their authors' words.
        unquoted = re.sub(r"\"[^\"]*\"|“[^”]*”", " ", text)
        plural = re.findall(r"\b(?:[Ww]e|[Oo]ur|[Oo]urs|us)\b", unquoted)
        assert not plural, (name, plural)


# --- Citations ----------------------------------------------------------------

# "(Gray & Vogels, 2006)", "(DeCandia et al., 2007)", "(AWS, n.d.-a)"
CITATION = re.compile(r"^(?P<who>[A-Za-z][\w&.' -]*?), (?P<when>\d{4}|n\.d\.)(?P<suffix>-[a-z])?$")


def _citations(page_html: str) -> list[tuple[str, str]]:
    """(link text, URL) of every link to a source on a page's article."""
    body = page_html.split("<article", 1)[1].split("</article>", 1)[0]
    return [
        (flat(html.unescape(re.sub(r"<[^>]+>", "", text))), html.unescape(url))
        for url, text in re.findall(r'<a [^>]*href="(https?://[^"]+)"[^>]*>(.*?)</a>', body, re.S)
    ]


def test_every_source_in_part_1_is_cited_by_author_and_year_as_the_references_list_it(
    built: Built,
) -> None:
    """Author (or organisation) and year, or n.d., the same in the text and the list."""
    references = built.page("references")
    keys = {
        flat(html.unescape(key))
        for key in re.findall(r"<li><strong>(.*?)\.</strong>", references, re.S)
    }
    assert len(keys) > 20, keys
    # The answer sheet up to Part 2 (the spike's pages cite in their own way).
    sheet = built.page("").split('id="part-2-pipe-spike"', 1)[0] + "</article>"
    for page, page_html in [("", sheet), *((name, built.page(name)) for name in PART1_PAGES)]:
        for text, url in _citations(page_html):
            match = CITATION.match(text)
            assert match, f"{page or 'answer sheet'}: link {text!r} ({url}) is not (Author, Year)"
            key = f"{match['who']} ({match['when']}{match['suffix'] or ''})"
            assert key in keys, f"{page or 'answer sheet'}: {text!r} has no entry {key!r}"
            # The entry lists the very address the text links to.
            entry = re.search(
                rf"<li><strong>{re.escape(html.escape(key, quote=False))}\.</strong>(.*?)</li>",
                references,
                re.S,
            )
            assert entry and url.split("#")[0] in html.unescape(entry[1]), (page, key, url)


def test_the_papers_references_are_the_sources_it_cites(built: Built) -> None:
    """The PDF's references list every source its pages link to, and nothing else."""
    paper = (built.site / "print_page" / "index.html").read_text(encoding="utf-8")
    before, _, references = paper.partition('<section class="paper-part" id="references">')
    assert references, "the paper has no references"

    def sources(fragment: str) -> set[str]:
        return {
            html.unescape(url).split("#")[0].rstrip("/")
            for url in re.findall(r'<a [^>]*href="(https?://[^"]+)"', fragment)
        }

    cited, listed = sources(before), sources(references)
    assert cited - listed == set(), "cited in the PDF but not in its references"
    # Each entry is kept for a source the PDF cites (an entry may list several addresses).
    entries = re.findall(r"<li>.*?</li>", references, re.S)
    assert entries and all(sources(entry) & cited for entry in entries)
    # The site's own list keeps the sources of the pages left out of the PDF.
    assert "netflix.com" in built.page("references") and "netflix.com" not in references


# --- Print layout ------------------------------------------------------------


@needs_pdf
def test_the_pdf_build_reports_no_layout_fault(built: Built) -> None:
    """hooks/pdf.py checks every laid-out page (LAYOUT_FAULTS) and warns about each fault."""
    assert "PDF written:" in built.log
    assert "PDF layout:" not in built.log, built.log[-3000:]
