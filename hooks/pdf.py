"""MkDocs hook: `mkdocs build` also writes the whole report as one PDF.

mkdocs-print-site-plugin puts every page of the site, in navigation order,
on one print page (cover, table of contents, numbered sections). After the
build this hook opens that page in a Chromium-family browser that is already
installed (Debian `chromium`, Google Chrome, Microsoft Edge) through
Playwright, waits until every Mermaid diagram is drawn and prints it to
`site/cs361-assignment5-brian-dy.pdf` (US Letter, page numbers).

Mermaid is local, for the PDF and the site alike (hooks/mermaid_js.py): from
`node_modules` after `npm ci`, else from the user's cache, else downloaded
once from the npm registry (the version package-lock.json pins, checked
against its sha512). The hook copies it into the site and adds it to
`extra_javascript`, so Material uses it instead of its CDN and no page makes
a third-party request. Without a local Mermaid the site falls back to
Material's CDN and one line says why.

Printing works offline: every request that leaves the machine (web fonts,
analytics, a CDN) is refused, except that a request for Mermaid is answered
from the local file, so the browser never waits on the network.

Only `mkdocs build` and `mkdocs gh-deploy` print; `mkdocs serve` does not.
`SPIKE_PDF=0` skips printing; `SPIKE_PDF_BROWSER=/path/to/browser` picks
the browser (a path that does not exist means "no browser"). Without a
browser (or without Mermaid) the HTML site is still built and one line says
how to get the PDF.
"""

from __future__ import annotations

import datetime
import html
import importlib.util
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.utils import get_build_datetime

try:
    import mermaid_js  # hooks/mermaid_js.py: MkDocs puts hooks/ on sys.path to load a hook
except ModuleNotFoundError:  # this file loaded by its path from elsewhere (a test)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import mermaid_js
    finally:
        sys.path.pop(0)

if TYPE_CHECKING:
    from playwright.sync_api import Route

log = logging.getLogger("mkdocs.hooks.pdf")

PDF_NAME = "cs361-assignment5-brian-dy.pdf"
PRINT_PAGE = "print_page/index.html"
# Relative to mkdocs.yml (the repository root).
TEMPLATES_DIR = "docs/overrides"
# Where the local Mermaid goes in the built site.
MERMAID_SITE_DIR = "assets/javascripts"
# Where Material (and anyone else) would fetch Mermaid from on the web.
CDN_HOSTS = {"unpkg.com", "cdn.jsdelivr.net", "fastly.jsdelivr.net"}
# A healthy run draws all diagrams in about a second.
RENDER_TIMEOUT_S = 30

# Without the networking flags Chromium keeps retrying refused connections
# to Google services and the page never settles; the sandbox cannot start
# as root (containers, CI).
BROWSER_FLAGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Material draws each diagram into a *closed* shadow root; opening it lets
# the wait below check that an <svg> really is there.
OPEN_SHADOW_ROOTS = """
const attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
  return attach.call(this, Object.assign({}, init, { mode: "open" }));
};
"""
# After a script error (a diagram Mermaid cannot parse) the other diagrams
# get this long to finish before the build fails with that error.
AFTER_ERROR_S = 3

# Counts the Mermaid diagrams that are drawn (an <svg> in the shadow root
# of Material's div.mermaid); done when that equals the number in the page.
DRAWN_DIAGRAMS = """
() => [...document.querySelectorAll("div.mermaid")].filter(
  (d) => d.shadowRoot && d.shadowRoot.querySelector("svg")
).length
"""

# Numbers (1-based, in page order) of the drawn diagrams that stick out of
# the bottom of their parent block: on paper they overlap the next content.
# (A tab set laid out as a wrapping flex box did this.)
OVERFLOWING_DIAGRAMS = """
() => [...document.querySelectorAll("div.mermaid")].flatMap((d, i) =>
  d.getBoundingClientRect().bottom > d.parentElement.getBoundingClientRect().bottom + 1
    ? [i + 1] : []
)
"""

FOOTER = """
<div style="width:100%; font-size:8px; color:#666; padding:0 0.6in;
            display:flex; justify-content:space-between;
            font-family:Roboto, 'Helvetica Neue', Arial, sans-serif;">
  <span>{title}</span>
  <span>Page <span class="pageNumber"></span> of <span class="totalPages"></span></span>
</div>
"""

_command: str | None = None
# The local Mermaid of the current build (None: pages use Material's CDN).
_mermaid: mermaid_js.Mermaid | None = None
# Lines already logged by this process: `mkdocs serve` rebuilds often.
_said: set[str] = set()


def on_startup(command: str, dirty: bool) -> None:
    """Remember which mkdocs command runs: only builds print the PDF."""
    global _command
    _command = command


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Make the cover template, the "Download PDF" button and local Mermaid available.

    Also decides now whether this build will print, so that the button links
    to the PDF when there will be one and to the print page when not.
    """
    global _mermaid
    root = Path(config.config_file_path).parent
    templates = str(root / TEMPLATES_DIR)
    # After the site's own custom_dir, before Material: our main.html adds
    # the print stylesheet and the button without touching other overrides.
    if templates not in config.theme.dirs:
        position = 1 if config.theme.custom_dir else 0
        config.theme.dirs.insert(position, templates)

    _mermaid, missing = _find_mermaid(root)
    if _mermaid is not None:
        # Material draws with a `mermaid` that a page already has instead of
        # fetching its own from unpkg.com.
        script = f"{MERMAID_SITE_DIR}/{_mermaid.site_name}"
        if script not in [str(item) for item in config.extra_javascript]:
            config.extra_javascript.append(script)

    plan = _plan(Path(config.site_dir), missing)
    if missing and missing not in (plan or ""):
        # No PDF line names the problem: say what the pages do instead.
        _say_once(
            f"Mermaid: {missing}; pages load it from Material's CDN instead "
            "(run `npm ci`, or `mkdocs build` once online, for a local copy)"
        )
    config.extra["pdf_export"] = {
        "name": PDF_NAME,
        "printing": plan is None,
        "skip_reason": plan,
        "date": _long_date(get_build_datetime()),
    }
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Keep the theme templates in docs/overrides out of the built site; add local Mermaid."""
    if _mermaid is not None:
        files.append(
            File.generated(
                config,
                f"{MERMAID_SITE_DIR}/{_mermaid.site_name}",
                abs_src_path=str(_mermaid.path),
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
    """Print the print-site page to the PDF (runs after print-site wrote it)."""
    settings = config.extra.get("pdf_export", {})
    if not settings.get("printing"):
        reason = settings.get("skip_reason")
        if reason:
            log.info(reason)
        return

    site = Path(config.site_dir)
    page = site / PRINT_PAGE
    if not page.is_file():
        raise PluginError(f"PDF: {page} is missing; is the print-site plugin enabled?")
    if _mermaid is None:  # _plan() prints only with a local Mermaid
        raise PluginError("PDF: no local Mermaid to print with")
    target = site / PDF_NAME
    try:
        pages, seconds = print_pdf(
            page,
            target,
            browser=find_browser(),
            mermaid_file=_mermaid.path,
            title=f"CS361 Assignment 5 \u00b7 {config.site_author or 'Brian Dy'}",
        )
    except BrowserUnavailable as error:
        log.info(f"PDF not written: {error}; {_by_hand(site)}.")
        return
    # Chromium writes the title only; a reader's document properties (and a
    # screen reader) also show who wrote it and what it is.
    target.write_bytes(
        with_document_info(
            target.read_bytes(),
            {
                "Author": config.site_author or "Brian Dy",
                "Subject": config.site_description or config.site_name,
            },
        )
    )
    log.info(f"PDF written: {_shown(target)} ({pages} pages, {seconds:.1f} s)")


class BrowserUnavailable(Exception):
    """No usable Chromium-family browser: the PDF is skipped, not the build."""


def _find_mermaid(root: Path) -> tuple[mermaid_js.Mermaid | None, str | None]:
    """(local Mermaid, None) or (None, why there is none).

    A command run from the terminal downloads Mermaid when it has to; a
    build started from Python only uses what is already there. A download
    that does not match package-lock.json stops the build.
    """
    try:
        found = mermaid_js.find(root, download=_command is not None)
    except mermaid_js.MermaidUnavailable as error:
        return None, str(error)
    except mermaid_js.IntegrityError as error:
        raise PluginError(f"Mermaid: {error}") from None
    log.debug(f"Mermaid {found.version} from {found.source}: {found.path}")
    return found, None


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        log.info(line)


def _plan(site: Path, mermaid_missing: str | None) -> str | None:
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
    if mermaid_missing:
        return (
            f"PDF not written: no local Mermaid ({mermaid_missing}): run `npm ci`, or run "
            f"`mkdocs build` once while online to download and cache it; {_by_hand(site)}."
        )
    return None


def _by_hand(site: Path) -> str:
    """The manual way to the same PDF, for the line that says none was written."""
    return (
        f"to make it by hand, open {_shown(site / PRINT_PAGE)} in a browser, press Ctrl+P "
        "(Cmd+P on macOS) and choose 'Save as PDF'"
    )


def find_browser() -> Path:
    """The Chromium, Chrome or Edge executable to print with.

    SPIKE_PDF_BROWSER wins; otherwise the usual commands on PATH and the
    usual install places on Windows and macOS are tried in turn.
    """
    chosen = os.environ.get("SPIKE_PDF_BROWSER")
    if chosen:
        path = Path(chosen).expanduser()
        if path.is_file():
            return path
        raise BrowserUnavailable(f"SPIKE_PDF_BROWSER={chosen} is not a file")
    for name in (
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
        "microsoft-edge",
        "microsoft-edge-stable",
        "msedge",
        "chrome",
    ):
        found = shutil.which(name)
        if found:
            return Path(found)
    for path in _install_places():
        if path.is_file():
            return path
    raise BrowserUnavailable(
        "no Chromium, Chrome or Edge found (install one, e.g. `apt-get install chromium`, "
        "or set SPIKE_PDF_BROWSER to its path)"
    )


def _install_places() -> list[Path]:
    """Where Edge and Chrome install themselves when they are not on PATH."""
    if sys.platform == "darwin":
        apps = [Path("/Applications"), Path.home() / "Applications"]
        names = [
            "Google Chrome.app/Contents/MacOS/Google Chrome",
            "Microsoft Edge.app/Contents/MacOS/Microsoft Edge",
            "Chromium.app/Contents/MacOS/Chromium",
        ]
        return [app / name for app in apps for name in names]
    if sys.platform == "win32":
        bases = [
            os.environ.get(var) for var in ("PROGRAMFILES(X86)", "PROGRAMFILES", "LOCALAPPDATA")
        ]
        names = [
            "Microsoft/Edge/Application/msedge.exe",
            "Google/Chrome/Application/chrome.exe",
        ]
        return [Path(base) / name for base in bases if base for name in names]
    return []


def print_pdf(
    page: Path, target: Path, *, browser: Path, mermaid_file: Path, title: str
) -> tuple[int, float]:
    """Print `page` to `target` with `browser`; return (pages, seconds).

    Raises BrowserUnavailable if the browser cannot be started and
    PluginError if the page cannot be drawn completely.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    html_text = page.read_text(encoding="utf-8")
    diagrams = len(_mermaid_sources(html_text))
    mermaid = mermaid_file.read_bytes()
    flags = list(BROWSER_FLAGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")

    def answer(route: Route) -> None:
        """Mermaid from the local file; nothing else from the network."""
        url = urlsplit(route.request.url)
        if url.hostname in CDN_HOSTS and "mermaid" in url.path:
            log.debug(f"PDF: answered {route.request.url} from {mermaid_file}")
            route.fulfill(body=mermaid, content_type="application/javascript")
        else:
            log.debug(f"PDF: refused {route.request.url}")
            route.abort()

    started = time.perf_counter()
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(browser), args=flags, timeout=30_000
            )
        except PlaywrightError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else "unknown error"
            raise BrowserUnavailable(f"{browser} did not start ({first})") from None
        try:
            context = chromium.new_context(color_scheme="light", service_workers="block")
            # The site's own files (file://) load directly; every web request
            # goes through answer().
            context.route(re.compile(r"^https?://"), answer)
            tab = context.new_page()
            tab.add_init_script(OPEN_SHADOW_ROOTS)
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error).strip()))
            # Print media before the page loads, so Mermaid sizes every
            # diagram in the layout that is printed (where all tabs show).
            tab.emulate_media(media="print")
            tab.goto(page.resolve().as_uri(), wait_until="load")
            _wait_for_diagrams(tab, diagrams, errors, html_text)
            overflowing = tab.evaluate(OVERFLOWING_DIAGRAMS)
            if overflowing:
                log.warning(
                    f"PDF: diagram(s) {', '.join(map(str, overflowing))} (in page order) "
                    "are taller than the block they sit in and overlap what follows on paper"
                )
            tab.evaluate("() => document.fonts.ready.then(() => true)")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tab.pdf(
                path=str(target),
                format="Letter",
                print_background=True,
                display_header_footer=True,
                header_template="<span></span>",
                footer_template=FOOTER.format(title=html.escape(title)),
                margin={"top": "0.6in", "bottom": "0.7in", "left": "0.6in", "right": "0.6in"},
                outline=True,
                tagged=True,
            )
        finally:
            chromium.close()
    seconds = time.perf_counter() - started
    return _count_pages(data), seconds


def _wait_for_diagrams(tab, expected: int, errors: list[str], page_html: str) -> None:
    """Return once all `expected` diagrams are drawn; else raise PluginError.

    Gives up RENDER_TIMEOUT_S after the start, or AFTER_ERROR_S after the
    first script error, whichever comes first.
    """
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while tab.evaluate(DRAWN_DIAGRAMS) < expected:
        if errors:
            deadline = min(deadline, time.monotonic() + AFTER_ERROR_S)
        if time.monotonic() > deadline:
            raise PluginError(_undrawn(tab, page_html, expected, errors))
        tab.wait_for_timeout(50)


def _mermaid_sources(page_html: str) -> list[str]:
    """The source text of every Mermaid diagram on the print page."""
    return [
        html.unescape(source).strip()
        for source in re.findall(r'<pre class="mermaid"><code>(.*?)</code></pre>', page_html, re.S)
    ]


def _undrawn(tab, page_html: str, expected: int, errors: list[str]) -> str:
    """Why the wait for the diagrams timed out, naming the diagrams not drawn."""
    state = tab.evaluate(
        f"""() => ({{
          drawn: ({DRAWN_DIAGRAMS.strip()})(),
          loaded: typeof window.mermaid === "object" && !(window.mermaid instanceof Element),
          blocks: [...document.querySelectorAll("pre")].map((pre) => pre.textContent.trim()),
        }})"""
    )
    stuck = [
        source.splitlines()[0:2]
        for source in _mermaid_sources(page_html)
        if source in state["blocks"]
    ]
    if errors:
        reason = "; " + " ".join(errors[0].split())
    elif not state["loaded"]:
        reason = f"; Mermaid did not load within {RENDER_TIMEOUT_S} s"
    else:
        reason = f"; still drawing after {RENDER_TIMEOUT_S} s"
    named = "; not drawn: " + " | ".join(" ".join(lines) for lines in stuck[:3]) if stuck else ""
    return f"PDF: only {state['drawn']} of {expected} Mermaid diagrams were drawn{reason}{named}"


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


def _long_date(moment: datetime.datetime) -> str:
    """27 November 2026 -> 'November 27, 2026' (no zero padding on any OS)."""
    return f"{moment:%B} {moment.day}, {moment.year}"


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
