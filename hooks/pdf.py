"""MkDocs hook: `mkdocs build` also prints the paper as the PDF for Canvas.

hooks/paper.py writes the paper, `site/print_page/index.html`: the
submission only, as one document. After the build this hook opens it in a
Chromium-family browser that is already installed (Debian `chromium`, Google
Chrome, Microsoft Edge) through Playwright, waits until its script
(docs/assets/print/paper.js) has drawn every Mermaid diagram and Paged.js
has laid out the pages, checks the layout (LAYOUT_FAULTS), and prints it to
`site/cs361-assignment5-<student>.pdf` (the name follows `site_author` in
mkdocs.yml): US Letter, page numbers, bookmarks, tagged.

Mermaid and Paged.js are local, for the PDF and the site alike
(hooks/npm_files.py): from `node_modules` after `npm ci`, else from the
user's cache, else downloaded once from the npm registry (the versions
package-lock.json pins, checked against their sha512). The hook copies them
into the site and adds Mermaid to `extra_javascript`, so Material uses it
instead of its CDN and no page makes a third-party request. Without a local
Mermaid the site falls back to Material's CDN and one line says why.

Printing works offline: the browser gets the site's files from the site
folder (under a made-up origin, so that Paged.js may read the stylesheets),
and every other request is refused.

Only `mkdocs build` and `mkdocs gh-deploy` print; `mkdocs serve` does not.
`SPIKE_PDF=0` skips printing; `SPIKE_PDF_BROWSER=/path/to/browser` picks
the browser (a path that does not exist means "no browser"). Without a
browser (or without Mermaid or Paged.js) the HTML site is still built and
one line says how to get the PDF.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import mimetypes
import os
import re
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

try:  # hooks/npm_files.py and hooks/chromium.py: MkDocs puts hooks/ on sys.path to load a hook
    import chromium
    import npm_files
except ModuleNotFoundError:  # this file loaded by its path from elsewhere (a test)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import chromium
        import npm_files
    finally:
        sys.path.pop(0)
# What tests and the other hooks use, under the names they always had.
BROWSER_FLAGS = chromium.BROWSER_FLAGS
BrowserUnavailable = chromium.BrowserUnavailable
find_browser = chromium.find_browser
launch = chromium.launch

if TYPE_CHECKING:
    from playwright.sync_api import Route

log = logging.getLogger("mkdocs.hooks.pdf")

# The PDF's name: this course's prefix and the student's name (site_author).
PDF_PREFIX = "cs361-assignment5"
# The paper that hooks/paper.py writes, relative to the site.
PAPER_PAGE = "print_page/index.html"
# Relative to mkdocs.yml (the repository root).
TEMPLATES_DIR = "docs/overrides"
# Where the local Mermaid and Paged.js go in the built site.
SCRIPTS_SITE_DIR = "assets/javascripts"
# The made-up origin the site's files are served under while printing.
PRINT_ORIGIN = "https://paper.invalid/"
# A healthy run draws all diagrams and lays out the pages in a few seconds.
RENDER_TIMEOUT_S = 60

# Material draws each diagram of a site page into a *closed* shadow root;
# opening it lets a test check that an <svg> really is there.
OPEN_SHADOW_ROOTS = """
const attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
  return attach.call(this, Object.assign({}, init, { mode: "open" }));
};
"""

# Counts the Mermaid diagrams that Material has drawn on a site page (an
# <svg> in the shadow root of its div.mermaid).
DRAWN_DIAGRAMS = """
() => [...document.querySelectorAll("div.mermaid")].filter(
  (d) => d.shadowRoot && d.shadowRoot.querySelector("svg")
).length
"""

# Numbers (1-based, in page order) of the drawn diagrams that stick out of
# the bottom of their parent block: on paper they overlap the next content.
OVERFLOWING_DIAGRAMS = """
() => [...document.querySelectorAll("div.mermaid")].flatMap((d, i) =>
  d.getBoundingClientRect().bottom > d.parentElement.getBoundingClientRect().bottom + 1
    ? [i + 1] : []
)
"""

# The paper's layout rules, checked on the pages Paged.js laid out; one line
# per fault. A page may be less than half full only before a new part (or
# at the end); no box that Paged.js split may be left empty on a page; no
# word in a table cell and no token of inline code may break across lines.
LAYOUT_FAULTS = r"""
() => {
  const faults = [];
  const pages = [...document.querySelectorAll(".pagedjs_page")];
  // Pieces of the words in `element` that are drawn on more than one line.
  // In prose a word may break after a hyphen, a dash or a slash; `whole`
  // pieces (code) may not break at all.
  const brokenWords = (element, whole) => {
    const broken = [];
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const pieces = whole ? /\S+/g : /[^\s\-–—\/]+[\-–—\/]*/g;
      for (const match of node.data.matchAll(pieces)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const tops = new Set([...range.getClientRects()]
          .filter((r) => r.width > 0).map((r) => Math.round(r.top)));
        if (tops.size > 1) broken.push(match[0]);
      }
    }
    return broken;
  };
  pages.forEach((page, index) => {
    const number = index + 1;
    const area = page.querySelector(".pagedjs_page_content");
    if (!area) return;
    const box = area.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(area);
    const used = (range.getBoundingClientRect().bottom - box.top) / box.height;
    const next = pages[index + 1];
    const partFollows = !next || next.querySelector(
      ".paper-part:not([data-split-from]), .paper-contents:not([data-split-from])");
    if (number > 2 && used < 0.5 && !partFollows) {
      faults.push(`page ${number} is only ${Math.round(used * 100)}% full`);
    }
    for (const block of area.querySelectorAll(
        "pre, table, .highlight, .admonition, figure, .short-answer")) {
      const visible = block.textContent.trim() || block.querySelector("img, svg");
      if (!visible && block.getBoundingClientRect().height > 2) {
        faults.push(`page ${number} ends with an empty ${block.tagName.toLowerCase()} box`);
      }
    }
    // The last heading on the page must have text of its own after it (the
    // question box under a title does not count).
    const headings = area.querySelectorAll("h1, h2, h3, h4");
    const last = headings[headings.length - 1];
    if (last) {
      const after = document.createTreeWalker(area, NodeFilter.SHOW_TEXT);
      let text = "";
      for (let node = after.nextNode(); node; node = after.nextNode()) {
        const beyond = last.compareDocumentPosition(node) & Node.DOCUMENT_POSITION_FOLLOWING;
        const question = node.parentElement.closest(".admonition.question");
        if (beyond && !last.contains(node) && !question) text += node.data.trim();
      }
      if (!text && next) {
        faults.push(`page ${number} ends with the heading "${last.textContent.trim()}"`);
      }
    }
    for (const cell of area.querySelectorAll("td, th")) {
      for (const word of brokenWords(cell, false)) {
        faults.push(`page ${number}: "${word}" breaks inside a table cell`);
      }
    }
    for (const code of area.querySelectorAll(":not(pre) > code")) {
      for (const word of brokenWords(code, true)) {
        faults.push(`page ${number}: inline code "${word}" breaks across lines`);
      }
    }
  });
  return faults;
}
"""

_command: str | None = None
# The local Mermaid and Paged.js of the current build (None: not found).
_mermaid: npm_files.NpmFile | None = None
_pagedjs: npm_files.NpmFile | None = None
# Lines already logged by this process: `mkdocs serve` rebuilds often.
_said: set[str] = set()


def pdf_name(author: str) -> str:
    """'Zoë O'Neil' -> 'cs361-assignment5-zoe-o-neil.pdf' (ASCII, lower case, dashes)."""
    ascii_name = unicodedata.normalize("NFKD", author).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return f"{PDF_PREFIX}-{slug}.pdf" if slug else f"{PDF_PREFIX}.pdf"


def on_startup(command: str, dirty: bool) -> None:
    """Remember which mkdocs command runs: only builds print the PDF."""
    global _command
    _command = command


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Make the templates, the "Download PDF" button, Mermaid and Paged.js available.

    Also decides now whether this build will print, so that the button links
    to the PDF when there will be one and to the printable page when not.
    """
    global _mermaid, _pagedjs
    root = Path(config.config_file_path).parent
    templates = str(root / TEMPLATES_DIR)
    # After the site's own custom_dir, before Material: our main.html adds
    # the print stylesheet and the button without touching other overrides.
    if templates not in config.theme.dirs:
        position = 1 if config.theme.custom_dir else 0
        config.theme.dirs.insert(position, templates)

    _mermaid, missing = _find(root, npm_files.MERMAID)
    _pagedjs, missing_pagedjs = _find(root, npm_files.PAGEDJS)
    scripts = {}
    if _mermaid is not None:
        # Material draws with a `mermaid` that a page already has instead of
        # fetching its own from unpkg.com.
        scripts["mermaid"] = f"{SCRIPTS_SITE_DIR}/{_mermaid.site_name}"
        if scripts["mermaid"] not in [str(item) for item in config.extra_javascript]:
            config.extra_javascript.append(scripts["mermaid"])
    if _pagedjs is not None:  # only the paper loads it
        scripts["pagedjs"] = f"{SCRIPTS_SITE_DIR}/{_pagedjs.site_name}"

    plan = _plan(Path(config.site_dir), missing, missing_pagedjs)
    if missing and missing not in (plan or ""):
        # No PDF line names the problem: say what the pages do instead.
        _say_once(
            f"Mermaid: {missing}; pages load it from Material's CDN instead "
            "(run `npm ci`, or `mkdocs build` once online, for a local copy)"
        )
    config.extra["pdf_export"] = {
        "name": pdf_name(config.site_author or ""),
        "printing": plan is None,
        "skip_reason": plan,
        "scripts": scripts,
    }
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Keep docs/overrides out of the built site; add Mermaid and Paged.js to it."""
    for found in (_mermaid, _pagedjs):
        if found is not None:
            files.append(
                File.generated(
                    config, f"{SCRIPTS_SITE_DIR}/{found.site_name}", abs_src_path=str(found.path)
                )
            )
    templates = Path(config.config_file_path).parent / TEMPLATES_DIR
    try:
        prefix = templates.resolve().relative_to(Path(config.docs_dir).resolve()).as_posix() + "/"
    except ValueError:  # the templates are not inside docs_dir: nothing to hide
        return files
    for file in files:
        if file.src_uri.startswith(prefix) and not file.generated_by:
            file.inclusion = InclusionLevel.EXCLUDED
    return files


def on_post_build(config: MkDocsConfig) -> None:
    """Print the paper (written by hooks/paper.py, listed before this hook) to the PDF."""
    settings = config.extra.get("pdf_export", {})
    if not settings.get("printing"):
        reason = settings.get("skip_reason")
        if reason:
            log.info(reason)
        return

    site = Path(config.site_dir)
    page = site / PAPER_PAGE
    if not page.is_file():
        raise PluginError(f"PDF: {page} is missing; is hooks/paper.py listed before hooks/pdf.py?")
    target = site / settings["name"]
    try:
        pages, seconds, faults = print_pdf(site, PAPER_PAGE, target, browser=find_browser())
    except BrowserUnavailable as error:
        log.info(f"PDF not written: {error}; {_by_hand(site)}.")
        return
    for fault in faults:
        log.warning(f"PDF layout: {fault}")
    # Chromium writes the title only; a reader's document properties (and a
    # screen reader) also show who wrote it and what it is.
    target.write_bytes(
        with_document_info(
            target.read_bytes(),
            {
                "Author": config.site_author or "",
                "Subject": config.site_description or config.site_name,
            },
        )
    )
    log.info(f"PDF written: {_shown(target)} ({pages} pages, {seconds:.1f} s)")


def _find(root: Path, package: npm_files.Package) -> tuple[npm_files.NpmFile | None, str | None]:
    """(local copy, None) or (None, why there is none).

    A command run from the terminal downloads it when it has to; a build
    started from Python only uses what is already there. A download that
    does not match package-lock.json stops the build.
    """
    try:
        found = npm_files.find(root, package, download=_command is not None)
    except npm_files.Unavailable as error:
        return None, str(error)
    except npm_files.IntegrityError as error:
        raise PluginError(f"{package.label}: {error}") from None
    log.debug(f"{package.label} {found.version} from {found.source}: {found.path}")
    return found, None


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        log.info(line)


def _plan(site: Path, mermaid_missing: str | None, pagedjs_missing: str | None) -> str | None:
    """None if this build prints the PDF, else the line saying why not."""
    if os.environ.get("SPIKE_PDF", "1").strip().lower() in {"0", "no", "false", "off"}:
        return "PDF skipped (SPIKE_PDF=0)."
    # `mkdocs serve` (which says "build" to plugins when run with --clean),
    # or a build started from Python: no PDF, no message.
    if _command not in {"build", "gh-deploy"} or sys.argv[1:2] == ["serve"]:
        return ""
    if importlib.util.find_spec("playwright") is None:
        return (
            "PDF not written: the Python package playwright is missing (run `uv sync`); "
            f"{_by_hand(site)}."
        )
    try:
        find_browser()
    except BrowserUnavailable as error:
        return f"PDF not written: {error}; {_by_hand(site)}."
    for label, missing in (("Mermaid", mermaid_missing), ("Paged.js", pagedjs_missing)):
        if missing:
            return (
                f"PDF not written: no local {label} ({missing}): run `npm ci`, or run "
                f"`mkdocs build` once while online to download and cache it; {_by_hand(site)}."
            )
    return None


def _by_hand(site: Path) -> str:
    """The manual way to the same PDF, for the line that says none was written."""
    return (
        f"to make it by hand, open {_shown(site / PAPER_PAGE)} in a browser, wait for its "
        "pages, press Ctrl+P (Cmd+P on macOS) and choose 'Save as PDF'"
    )


def print_pdf(
    site: Path, page: str, target: Path, *, browser: Path
) -> tuple[int, float, list[str]]:
    """Print the paper `page` of `site` to `target`; return (pages, seconds, layout faults).

    Raises BrowserUnavailable if the browser cannot be started and
    PluginError if the paper cannot be drawn and laid out completely.
    """
    started = time.perf_counter()
    with laid_out(site, page, browser=browser) as (tab, status):
        faults = layout_faults(tab)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = tab.pdf(
            path=str(target),
            prefer_css_page_size=True,
            print_background=True,
            outline=True,
            tagged=True,
        )
    seconds = time.perf_counter() - started
    pages = _count_pages(data)
    if pages != status["pages"]:
        raise PluginError(
            f"PDF: Paged.js laid out {status['pages']} pages but Chromium printed {pages}"
        )
    return pages, seconds, faults


@contextlib.contextmanager
def laid_out(site: Path, page: str, *, browser: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The paper `page` of `site` open in `browser`, drawn and laid out: (tab, status).

    The browser gets the site's files under PRINT_ORIGIN and nothing from
    the network. Raises BrowserUnavailable or PluginError (see print_pdf).
    """
    from playwright.sync_api import sync_playwright

    root = site.resolve()

    def answer(route: Route) -> None:
        """The site's own files under PRINT_ORIGIN; nothing from the network."""
        url = route.request.url
        if not url.startswith(PRINT_ORIGIN):
            log.debug(f"PDF: refused {url}")
            route.abort()
            return
        path = (root / unquote(urlsplit(url).path).lstrip("/")).resolve()
        if path.is_dir():
            path = path / "index.html"
        if not path.is_relative_to(root) or not path.is_file():
            route.fulfill(status=404, body="")
            return
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        route.fulfill(body=path.read_bytes(), content_type=kind)

    with sync_playwright() as playwright:
        running = launch(playwright, browser)
        try:
            context = running.new_context(color_scheme="light", service_workers="block")
            context.route("**/*", answer)
            tab = context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(" ".join(str(error).split())))
            # Print media before the page loads, so the diagrams are drawn and
            # the pages laid out as they are printed.
            tab.emulate_media(media="print")
            tab.goto(PRINT_ORIGIN + page, wait_until="load")
            yield tab, _wait_for_paper(tab, errors)
        finally:
            running.close()


def layout_faults(tab: Any) -> list[str]:
    """The laid-out paper's faults: overlapping diagrams, then LAYOUT_FAULTS."""
    faults = [
        f"diagram {number} (in page order) is taller than the block it sits in "
        "and overlaps what follows"
        for number in tab.evaluate(OVERFLOWING_DIAGRAMS)
    ]
    return faults + list(tab.evaluate(LAYOUT_FAULTS))


def _wait_for_paper(tab: Any, errors: list[str]) -> dict[str, Any]:
    """The paper's status once paper.js is done; PluginError if it failed or timed out."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while True:
        status = tab.evaluate("() => window.paperStatus || null")
        if status is None:
            raise PluginError(
                "PDF: the paper did not load its script (docs/assets/print/paper.js)"
            )
        if status["state"] != "working":
            break
        if time.monotonic() > deadline:
            raise PluginError(
                f"PDF: the paper was not laid out within {RENDER_TIMEOUT_S} s "
                f"({status['diagrams']} diagrams drawn)" + (f"; {errors[0]}" if errors else "")
            )
        tab.wait_for_timeout(50)
    if status["state"] != "ready":
        raise PluginError("PDF: " + "; ".join([*status["errors"], *errors][:3]))
    return dict(status)


_TRAILER = re.compile(
    rb"trailer\s*<<(?P<dict>.*?)>>\s*startxref\s*(?P<xref>\d+)\s*%%EOF\s*$", re.S
)


def with_document_info(pdf: bytes, entries: dict[str, str]) -> bytes:
    """`pdf` with `entries` (Author, Subject...) added to its document information.

    An incremental update, as the PDF standard allows: the information
    dictionary is written again with the new entries, followed by a cross-reference section
    for it (and the usual free entry 0) and a trailer pointing back at the original one.
    Nothing before it changes. Handles the classic cross-reference table that
    Chromium (Skia) writes; anything else raises PluginError.
    """
    trailer = _TRAILER.match(pdf, max(pdf.rfind(b"trailer"), 0))
    info = trailer and re.search(rb"/Info\s+(\d+)\s+(\d+)\s+R", trailer["dict"])
    if trailer is None or info is None:
        raise PluginError("PDF: no classic trailer with /Info; cannot add Author and Subject")
    number, generation = int(info[1]), int(info[2])
    objects = list(
        re.finditer(
            rb"(?<![0-9])%d\s+%d\s+obj\s*<<(.*?)>>\s*endobj" % (number, generation), pdf, re.S
        )
    )
    if not objects:
        raise PluginError(f"PDF: information dictionary {number} {generation} R not found")
    kept = objects[-1][1]
    for key in entries:  # an entry given again replaces the old one
        kept = re.sub(rb"/%s\s*(\((?:\\.|[^\\)])*\)|<[0-9A-Fa-f]*>)" % key.encode(), b"", kept)
    added = b"".join(
        b"\n/%s <%s>"
        % (key.encode(), ("\ufeff" + value).encode("utf-16-be").hex().upper().encode())
        for key, value in entries.items()
    )
    body = pdf if pdf.endswith(b"\n") else pdf + b"\n"
    offset = len(body)
    obj = b"%d %d obj\n<<%s%s>>\nendobj\n" % (number, generation, kept.strip(), added)
    xref_at = offset + len(obj)
    rest = re.sub(rb"/Prev\s+\d+", b"", trailer["dict"]).strip()
    return (
        body
        + obj
        + b"xref\n0 1\n0000000000 65535 f \n%d 1\n%010d %05d n \n" % (number, offset, generation)
        + b"trailer\n<<%s\n/Prev %s>>\nstartxref\n%d\n%%%%EOF\n" % (rest, trailer["xref"], xref_at)
    )


def _count_pages(pdf: bytes) -> int:
    """Pages in a PDF that Chromium wrote (one /Type /Page object each)."""
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
