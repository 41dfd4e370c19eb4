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
from typing import Any, ClassVar

import pytest
from helpers import load_file, mkdocs_build, why_no_pdf

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PDF_NAME = "cs361-assignment5-brian-dy.pdf"
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
SITE_BUDGET = 12_000
PDF_PAGE_BUDGET = 45
ANSWER_SHEET_PAGES = 8  # the six answers sit within the PDF's first 8 pages
MIN_ANSWER_WORDS = 40


_pdf_hook = load_file(ROOT / "hooks" / "pdf.py", "pdf_hook_for_report")


def _why_no_pdf() -> str | None:
    why = why_no_pdf(_pdf_hook)
    if why is not None:
        return why
    try:  # node_modules (npm ci) or the copy a build downloaded and cached
        _pdf_hook.mermaid_js.find(ROOT, download=False)
    except _pdf_hook.mermaid_js.MermaidUnavailable as error:
        return f"no local Mermaid yet ({error}): run `npm ci` or `uv run mkdocs build` once"
    return None


needs_pdf = pytest.mark.skipif(_why_no_pdf() is not None, reason=str(_why_no_pdf()))


# --- Reading built pages ---------------------------------------------------


class _ArticleText(HTMLParser):
    """The visible text of a page's article, without pictures (<svg>) or scripts."""

    SKIP: ClassVar[set[str]] = {"svg", "script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # > 0 inside <article>
        self.skipping = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "article":
            self.depth += 1
        elif self.depth and tag in self.SKIP:
            self.skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self.depth -= 1
        elif self.depth and tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skipping:
            self.parts.append(data)


def article_text(page_html: str) -> str:
    parser = _ArticleText()
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
        """Words per built page of the site, outside the word budget's exceptions."""
        counts = {}
        for built in sorted(self.site.rglob("index.html")):
            name = built.parent.relative_to(self.site).as_posix()
            name = "" if name == "." else name
            if name.split("/")[0] in {"print_page", "search", "assets", *NOT_COUNTED}:
                continue
            counts[name] = words(article_text(built.read_text(encoding="utf-8")))
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
        assert at >= 0, f"{label} missing, or out of order, in the PDF's first 8 pages"
        found.append((at, at + len(label) + 1 + len(question)))
        position = at + 1
    # Each of the first five is followed by an answer of at least 40 words.
    for (_, end), (next_start, _) in itertools.pairwise(found):
        answer = text[end:next_start]
        assert words(answer) >= MIN_ANSWER_WORDS, answer
    # 2(b) is followed by the two terminal pictures, drawn as vector text.
    after_2b = text[found[-1][1] :]
    for line in ("Terminal 1: the server", "Terminal 2: the client", f"Received: {MESSAGE}"):
        assert line in after_2b, line


@needs_pdf
def test_answer_sheet_pictures_are_vector_in_the_pdf(built: Built) -> None:
    pictures = [
        number
        for number, text in enumerate(built.pdf_pages[:ANSWER_SHEET_PAGES])
        if "Terminal 1: the server" in text
    ]
    assert pictures, "no page of the answer sheet holds the terminal pictures"
    for number in pictures:
        page = built.pdf_reader.pages[number]
        assert not list(page.images), f"page {number + 1} has raster images, not vector"


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
    # Quotations of the assignment are its words, not my claims.
    body = re.sub(r"<blockquote>.*?</blockquote>", "", body, flags=re.S)
    body = re.sub(r"<svg.*?</svg>", "", body, flags=re.S)
    blocks = re.findall(r"<(p|li)>(.*?)</\1>", body, re.S)
    assert len(blocks) >= 2 * len(QUESTIONS)
    unlinked = [
        sentence for _, block in blocks for sentence in _statements(block) if "<a " not in sentence
    ]
    assert not unlinked, unlinked


# --- 2(b): pictures of the real run ---------------------------------------------


def _pictures(page_html: str) -> list[tuple[str, str]]:
    """(title, text) of each terminal picture on a page, its rows joined by spaces."""
    return [(title, flat(" ".join(rows))) for title, rows in _picture_rows(page_html)]


def _picture_rows(page_html: str) -> list[tuple[str, list[str]]]:
    """(title, rows) of each terminal picture on a page, each row as a terminal shows it.

    Each run of text sits at its own x (column) and y (row), so the rows are
    rebuilt cell by cell; spaces between runs are not drawn at all.
    """
    pictures = []
    for svg in re.findall(r'<svg class="rich-terminal".*?</svg>', page_html, re.S):
        runs = re.findall(r"<text([^>]*)>(.*?)</text>", svg, re.S)
        title = flat(html.unescape(runs[0][1]))
        rows: dict[float, dict[int, str]] = {}
        for attrs, raw in runs[1:]:
            text = html.unescape(raw)
            x, y, length = (
                float(re.findall(rf'\b{name}="([\d.]+)"', attrs)[0])
                for name in ("x", "y", "textLength")
            )
            cell = length / len(text)
            row = rows.setdefault(y, {})
            for offset, char in enumerate(text):
                row[round(x / cell) + offset] = char
        lines = [
            # Rich draws spaces as no-break spaces.
            "".join(row.get(col, " ") for col in range(max(row) + 1)).replace("\xa0", " ").rstrip()
            for _, row in sorted(rows.items())
        ]
        pictures.append((title, lines))
    return pictures


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
    assert re.search(rf'<figure class="spike-shots"[^>]* data-spike-run="{run}"', page_html)
    assert f"--port {port}" in client and f"Serving on 127.0.0.1:{port}" in server
    # Labelled honestly: when, which Python, which OS.
    label = re.search(r"run on (\S+) \(UTC\) · Python (\S+) · ([^<]+)<", html.unescape(page_html))
    assert label, "the pictures have no date/Python/OS label"
    date, python, os_name = label.groups()
    assert date in built.dates
    assert python == platform.python_version()
    assert platform.system() in os_name or platform.system() == "Darwin"
    # Called what they are for a grader, with how they are made one link away.
    assert "Screenshots of the server's and the client's terminals" in article_text(page_html)
    assert re.search(r'href="[^"]*#how-the-screenshots-are-made"', page_html)


@pytest.mark.parametrize("page", ["", "spike/demo"], ids=["answer sheet", "demonstration"])
def test_2b_pictures_agree_and_send_the_assignments_exact_words(built: Built, page: str) -> None:
    page_html = built.page(page)
    (_, server), (_, client) = _pictures(page_html)
    # The same moment in both windows: one connection per client command, all closed.
    commands = client.count("spike.client --port")
    assert commands == 2, client
    assert server.count("Connection opened:") == server.count("Connection closed:") == commands
    # "A message from CS361", never with the draft's "!", in the pictures and the page.
    assert "CS361!" not in html.unescape(page_html)
    assert server.count(f"Received: {MESSAGE}") == 1


def test_2b_pictures_break_long_lines_between_tokens_and_have_text_alternatives(
    built: Built,
) -> None:
    page_html = built.page("")
    rows = dict(_picture_rows(page_html))["Terminal 2: the client"]
    start = next(i for i, row in enumerate(rows) if row.startswith("Received: {"))
    reply = [rows[start], *itertools.takewhile(lambda row: row.startswith(" "), rows[start + 1 :])]
    assert len(reply) > 1, "the JSON reply fits one row: nothing to check"
    # Each row ends after a JSON separator; the continuation rows line up under the JSON.
    assert all(row.endswith((",", ":", "{", "[")) for row in reply[:-1]), reply
    assert all(row.startswith(" " * len("Received: ")) for row in reply[1:]), reply
    joined = reply[0] + "".join(row.strip() for row in reply[1:])
    assert json.loads(joined.removeprefix("Received: "))["ok"] is True
    # Nothing clips the last row's underscores (Rich's box ends at its baseline).
    assert "-clip-terminal)" not in page_html
    # A screen reader hears which window it is, then every line in it.
    for svg in re.findall(r'<svg class="rich-terminal".*?</svg>', page_html, re.S):
        title = re.search(r'aria-labelledby="([^"]+)"', svg)
        desc = re.search(r'aria-describedby="([^"]+)"', svg)
        assert title and desc, svg[:300]
        said = re.search(
            rf'<title id="{title[1]}">Screenshot of Terminal \d: the \w+</title>', svg
        )
        lines = re.search(rf'<desc id="{desc[1]}">(.*?)</desc>', svg, re.S)
        assert said and lines, svg[:300]
        assert f"{MESSAGE}" in html.unescape(lines[1])


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


# --- Print layout ------------------------------------------------------------


@needs_pdf
def test_print_keeps_blocks_whole(built: Built) -> None:
    """On paper, no admonition, figure, picture, diagram or table row may break."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(_pdf_hook.find_browser()),
            args=[*_pdf_hook.BROWSER_FLAGS, "--no-sandbox"],
        )
        try:
            context = browser.new_context()
            context.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith("file:") else route.abort()
                ),
            )
            tab = context.new_page()
            tab.emulate_media(media="print")
            tab.goto((built.site / "print_page" / "index.html").as_uri(), wait_until="load")
            styles = tab.evaluate(
                """() => [...document.querySelectorAll(
                    "#print-site-page .admonition, #print-site-page figure,"
                    + " #print-site-page tr, #print-site-page .mermaid,"
                    + " #print-site-page .spike-shot, #print-site-page .short-answer")]
                  .map((el) => [
                    el.tagName + "." + el.className, getComputedStyle(el).breakInside,
                  ])"""
            )
        finally:
            browser.close()
    kinds = {kind.split(".")[0] for kind, _ in styles}
    assert {"FIGURE", "TR", "DIV"} <= kinds, kinds
    breaking = [kind for kind, value in styles if value != "avoid"]
    assert not breaking, breaking
