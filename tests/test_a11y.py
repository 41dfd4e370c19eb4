"""Accessibility: axe-core finds no serious or critical WCAG 2.1 A/AA violation.

One real `mkdocs build --strict` of the project (HTML only), served on
127.0.0.1, and every page opened in the installed Chromium-family browser
(the one hooks/pdf.py prints with; nothing is downloaded) in the light and
the dark palette, and the paper (print_page/), which becomes the PDF, with
print media emulated, once Paged.js has laid out its pages. axe-core comes
from node_modules, pinned by package-lock.json (`npm ci`). Mermaid diagrams
are drawn first (on site pages their shadow roots are opened), so axe checks
the diagrams' text too.

Skipped, with the reason, where there is no browser, no Playwright or no
`node_modules/axe-core`; CI runs `npm ci` and has a browser, so it runs there.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import load_file, mkdocs_build, why_no_pdf

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# The WCAG 2.1 level A and AA rules (axe-core's tags for them).
WCAG21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}
# Material's palette for each emulated colour scheme (mkdocs.yml).
SCHEMES = {"light": "default", "dark": "slate"}
DRAW_TIMEOUT_MS = 30_000

_pdf_hook = load_file(ROOT / "hooks" / "pdf.py", "pdf_hook_for_a11y")


def _why_skip() -> str | None:
    why = why_no_pdf(_pdf_hook)
    if why is not None:
        return why
    if not AXE.is_file():
        return f"axe-core is not installed ({AXE} is missing): run `npm ci`"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, list[str]]]:
    """(site folder, its URL, every page but the print page) of one real build, served."""
    site = tmp_path_factory.mktemp("a11y") / "site"
    done = mkdocs_build(ROOT, site, {**os.environ, "SPIKE_PDF": "0"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    pages = sorted(
        path.relative_to(site).as_posix().removesuffix("index.html")
        for path in site.rglob("*.html")
        if path.name in {"index.html", "404.html"}
        and path.relative_to(site).parts[0] not in {"print_page", "assets", "search"}
    )
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site, f"http://127.0.0.1:{server.server_address[1]}/", pages
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(_pdf_hook.find_browser()),
            args=[*_pdf_hook.BROWSER_FLAGS, "--no-sandbox"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def audit(
    browser, url: str, *, scheme: str, media: str = "screen", paper: bool = False
) -> list[dict]:
    """axe-core's WCAG 2.1 A/AA violations on one page, as it is drawn in `scheme` and `media`.

    `paper`: the page is the paper, whose own script (paper.js) draws the
    diagrams and lays out the pages; the audit waits until it is done.
    """
    context = browser.new_context(color_scheme=scheme, service_workers="block")
    try:
        # The page and its own files only: web fonts and CDNs are refused.
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith("http://127.0.0.1:")
                else route.abort()
            ),
        )
        tab = context.new_page()
        tab.add_init_script(_pdf_hook.OPEN_SHADOW_ROOTS)
        tab.emulate_media(media=media)
        tab.goto(url, wait_until="load")
        palette = tab.evaluate("() => document.body.dataset.mdColorScheme")
        assert palette == SCHEMES[scheme], f"{url}: {scheme} shows palette {palette!r}"
        if paper:
            tab.wait_for_function(
                "() => window.paperStatus && window.paperStatus.state !== 'working'",
                timeout=DRAW_TIMEOUT_MS,
            )
            status = tab.evaluate("() => window.paperStatus")
            assert status["state"] == "ready" and status["pages"] > 3, status
        else:
            diagrams = tab.evaluate("() => document.querySelectorAll('.mermaid').length")
            tab.wait_for_function(
                f"() => ({_pdf_hook.DRAWN_DIAGRAMS.strip()})() >= {diagrams}",
                timeout=DRAW_TIMEOUT_MS,
            )
        tab.add_script_tag(path=str(AXE))
        result = tab.evaluate(
            """(tags) => axe.run(document, {
                 runOnly: { type: "tag", values: tags }, resultTypes: ["violations"],
               }).then((r) => r.violations.map((v) => ({
                 id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.map((n) => ({
                   target: n.target.join(" "), summary: n.failureSummary,
                 })),
               })))""",
            WCAG21_AA,
        )
    finally:
        context.close()
    return list(result)


def _blocking(violations: list[dict]) -> list[str]:
    """One line per serious or critical rule broken, with its count and first elements."""
    lines = []
    for violation in violations:
        if violation["impact"] in BLOCKING:
            nodes = violation["nodes"]
            first = "; ".join(
                f"{node['target']} ({' '.join(str(node['summary']).split())[:160]})"
                for node in nodes[:3]
            )
            lines.append(f"{violation['id']} [{violation['impact']}] x{len(nodes)}: {first}")
    return lines


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_wcag21_aa(served, browser, scheme: str) -> None:
    _, base, pages = served
    assert "" in pages and "case-study/communication/" in pages, pages
    failures = {}
    for page in pages:
        lines = _blocking(audit(browser, base + page, scheme=scheme))
        if lines:
            failures[page or "(answer sheet)"] = lines
    assert not failures, json.dumps(failures, indent=1)


def test_print_page_passes_wcag21_aa(served, browser) -> None:
    _, base, _ = served
    lines = _blocking(
        audit(browser, base + "print_page/", scheme="light", media="print", paper=True)
    )
    assert not lines, "\n".join(lines)


def test_audit_finds_what_it_is_looking_for(served, browser) -> None:
    """The audit itself: a page with known faults, served like the others, fails it by rule."""
    site, base, _ = served
    (site / "a11y-probe.html").write_text(
        '<!doctype html><html lang="en"><head><title>Probe</title></head>'
        '<body data-md-color-scheme="default"><main>'
        '<p style="color:#bbb;background:#fff">Pale grey text on white</p>'
        '<svg role="img" width="10" height="10"></svg></main></body></html>',
        encoding="utf-8",
    )
    lines = _blocking(audit(browser, base + "a11y-probe.html", scheme="light"))
    assert {line.split()[0] for line in lines} == {"color-contrast", "svg-img-alt"}, lines
