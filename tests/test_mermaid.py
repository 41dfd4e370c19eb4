"""Mermaid without Node.js (hooks/npm_files.py, used by hooks/pdf.py).

With no `node_modules`, a build downloads the tarball that package-lock.json
pins, checks it against the lock's sha512 and caches `dist/mermaid.min.js`.
Here a real HTTP server on loopback stands in for the npm registry
(SPIKE_NPM_REGISTRY) and every test gets its own cache folder
(SPIKE_CACHE_DIR), so nothing touches the real registry or the user's cache.
The builds are real `mkdocs build --strict` runs on a copy of the project
without `node_modules`. The end-to-end build against the real registry,
with the PDF, is in tests/test_pdf.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import queue
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest
from helpers import copy_parts, free_port, load_file, mkdocs_build, mkdocs_serve

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 180
# What the site build reads, without node_modules and package-lock.json.
VERSION = "11.99.0-test.1"  # never a real release: the cache folder and file names show it
STAND_IN = b"/* stands in for mermaid.min.js in these tests */ window.mermaidStandIn = true;\n"
SCRIPT = f"assets/javascripts/mermaid-{VERSION}.min.js"


def _load_module() -> ModuleType:
    """hooks/npm_files.py, imported the way the pdf hook imports it."""
    sys.path.insert(0, str(ROOT / "hooks"))
    try:
        return importlib.import_module("npm_files")
    finally:
        sys.path.remove(str(ROOT / "hooks"))


npm_files = _load_module()


# --- a registry on loopback ---------------------------------------------------


class Registry:
    """Files served over HTTP on 127.0.0.1, and the paths that were asked for."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []

    def publish(self, tarball: bytes, version: str = VERSION) -> str:
        """Serve `tarball` where npm keeps mermaid's; return its URL path."""
        path = f"/mermaid/-/mermaid-{version}.tgz"
        self.files[path] = tarball
        return path


@contextlib.contextmanager
def loopback_registry() -> Iterator[Registry]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    registry = Registry(server.server_address[1])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            registry.requests.append(self.path)
            body = registry.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port with nothing listening: connecting is refused, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def npm_tarball(mermaid_min_js: bytes, *, member: str = "package/dist/mermaid.min.js") -> bytes:
    """A .tgz laid out like npm's (package/...), with a few more files than the one used."""
    files = {
        "package/package.json": json.dumps({"name": "mermaid", "version": VERSION}).encode(),
        "package/dist/mermaid.js": b"/* the unminified build: never extracted */\n",
        "package/README.md": b"# mermaid\n",
        member: mermaid_min_js,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def write_lock(project: Path, integrity: str, **extra: str) -> None:
    """A package-lock.json (lockfileVersion 3) that pins mermaid VERSION."""
    entry = {"version": VERSION, "integrity": integrity, "license": "MIT", **extra}
    lock = {
        "name": "cs361-assignment5-pdf",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {"": {"dependencies": {"mermaid": VERSION}}, "node_modules/mermaid": entry},
    }
    (project / "package-lock.json").write_text(json.dumps(lock, indent=2), encoding="utf-8")


def copy_project(dest: Path, integrity: str) -> Path:
    """The site's sources with a lock pinning the test version; no node_modules."""
    copy_parts(dest)
    write_lock(dest, integrity)
    return dest


def env_for(registry_url: str, cache: Path, **changes: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SPIKE_NPM_REGISTRY", "SPIKE_CACHE_DIR", "SPIKE_PDF_BROWSER"}
    }
    env.update(
        NO_MKDOCS_2_WARNING="1",
        SPIKE_PDF="0",
        SPIKE_NPM_REGISTRY=registry_url,
        SPIKE_CACHE_DIR=str(cache),
        # A proxy set for the real internet must not get the loopback requests.
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(changes)
    return env


def build(project: Path, site: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return mkdocs_build(project, site, env, timeout=BUILD_TIMEOUT_S)


def log_lines(result: subprocess.CompletedProcess[str], word: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if word in line]


def script_tags(page_html: str) -> list[str]:
    return re.findall(r'<script src="([^"]+)"', page_html)


# --- builds against the loopback registry --------------------------------------


def test_download_is_checked_used_and_cached_then_builds_work_offline(tmp_path: Path) -> None:
    tarball = npm_tarball(STAND_IN)
    project = copy_project(tmp_path / "project", sri(tarball))
    cache = tmp_path / "cache"
    with loopback_registry() as registry:
        path = registry.publish(tarball)
        online = build(project, tmp_path / "site1", env_for(registry.url, cache))
        assert online.returncode == 0, online.stderr[-3000:]
        assert registry.requests == [path]  # one download, of the pinned version
    said = " ".join(log_lines(online, "Mermaid"))
    assert f"downloading {registry.url}{path}" in said
    assert "sha512 matches package-lock.json" in said
    # The site carries the downloaded file, and every page loads it.
    site = tmp_path / "site1"
    assert (site / SCRIPT).read_bytes() == STAND_IN
    for page in ("index.html", "case-study/communication/index.html", "print_page/index.html"):
        html = (site / page).read_text(encoding="utf-8")
        prefix = "../" * page.count("/")
        assert f"{prefix}{SCRIPT}" in script_tags(html), page
        assert "unpkg.com" not in html
    # Only dist/mermaid.min.js was kept, with a record of what it was checked against.
    folder = cache / "mermaid" / VERSION
    assert sorted(p.name for p in folder.iterdir()) == ["mermaid.min.js", "verified.json"]
    assert (folder / "mermaid.min.js").read_bytes() == STAND_IN
    record = json.loads((folder / "verified.json").read_text(encoding="utf-8"))
    assert record["integrity"] == sri(tarball)
    assert record["sha256"] == hashlib.sha256(STAND_IN).hexdigest()

    # Offline now (the registry is gone, its port refuses): the cache serves.
    offline = build(
        project, tmp_path / "site2", env_for(f"http://127.0.0.1:{closed_port()}", cache)
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert not log_lines(offline, "Mermaid"), offline.stderr  # nothing to say
    assert (tmp_path / "site2" / SCRIPT).read_bytes() == STAND_IN


def test_wrong_checksum_fails_the_build_naming_file_and_both_hashes(tmp_path: Path) -> None:
    tarball = npm_tarball(STAND_IN)
    tampered = npm_tarball(b"/* not what the lock pinned */\n")
    project = copy_project(tmp_path / "project", sri(tarball))
    cache = tmp_path / "cache"
    with loopback_registry() as registry:
        path = registry.publish(tampered)
        result = build(project, tmp_path / "site", env_for(registry.url, cache))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = log_lines(result, "checksum mismatch")
    assert len(errors) == 1, result.stderr[-3000:]
    line = errors[0]
    assert line.startswith("ERROR")
    assert f"mermaid-{VERSION}.tgz" in line and f"{registry.url}{path}" in line
    assert f"expects {sri(tarball)}" in line
    assert f"the download is {sri(tampered)}" in line
    # Nothing unverified was kept or published.
    assert not (cache / "mermaid" / VERSION / "mermaid.min.js").exists()
    assert not (tmp_path / "site" / SCRIPT).exists()


def test_offline_without_cache_the_site_builds_and_one_line_names_both_fixes(
    tmp_path: Path,
) -> None:
    project = copy_project(tmp_path / "project", sri(npm_tarball(STAND_IN)))
    offline = f"http://127.0.0.1:{closed_port()}"
    # Any existing file passes the hook's "is there a browser" check; with
    # no Mermaid the hook never starts it.
    env = env_for(offline, tmp_path / "cache", SPIKE_PDF_BROWSER=sys.executable)
    del env["SPIKE_PDF"]
    result = build(project, tmp_path / "site", env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # The attempt, then one line with the reason and both ways to fix it.
    attempt, line = log_lines(result, "Mermaid")
    assert f"downloading {offline}/" in attempt
    assert "PDF not written: no local Mermaid" in line
    assert f"downloading {offline}/mermaid/-/mermaid-{VERSION}.tgz failed: " in line
    assert "`npm ci`" in line and "once while online" in line  # both fixes
    assert "Ctrl+P" in line
    # The pages fall back to Material's own Mermaid loading.
    assert not list((tmp_path / "site").glob("*.pdf"))
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert not any("mermaid" in src for src in script_tags(index))


# --- the served site -----------------------------------------------------------


def _real_mermaid() -> bytes | None:
    """The real Mermaid, as `mkdocs build` gets it here (None when offline and not cached)."""
    try:
        return bytes(npm_files.find(ROOT).path.read_bytes())
    except npm_files.Unavailable:
        return None


def _browser() -> str | None:
    pdf = load_file(ROOT / "hooks" / "pdf.py", "pdf_for_mermaid_tests")
    try:
        return str(pdf.find_browser())
    except pdf.BrowserUnavailable:
        return None


def test_served_pages_load_the_local_mermaid_and_draw_without_a_cdn(tmp_path: Path) -> None:
    """`mkdocs serve` with Mermaid from the (loopback) registry: pages use that copy.

    With a browser and a real Mermaid on this machine, the page is also
    opened: every diagram is drawn and no request goes to a CDN.
    """
    real = _real_mermaid()
    content = real if real is not None else STAND_IN
    tarball = npm_tarball(content)
    project = copy_project(tmp_path / "project", sri(tarball))
    port = free_port()
    with loopback_registry() as registry:
        registry.publish(tarball)
        serve = mkdocs_serve(project, port, env_for(registry.url, tmp_path / "cache"))
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in serve.stdout or []:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        log: list[str] = []
        try:
            deadline = time.monotonic() + BUILD_TIMEOUT_S
            while not any("Serving on" in line for line in log):
                assert serve.poll() is None, "".join(log)
                with contextlib.suppress(queue.Empty):
                    log.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
                assert time.monotonic() < deadline, "".join(log)
            base = f"http://127.0.0.1:{port}/"
            page = "case-study/communication/"
            with urllib.request.urlopen(base + page, timeout=10) as response:
                html = response.read().decode("utf-8")
            assert f"../../{SCRIPT}" in script_tags(html)
            with urllib.request.urlopen(base + SCRIPT, timeout=10) as response:
                assert response.read() == content
            browser = _browser()
            if real is None or browser is None:
                pytest.skip(
                    "pages load the local Mermaid; drawing them needs "
                    + ("a browser" if browser is None else "the real Mermaid (offline)")
                )
            drawn, outside = _open_in_browser(browser, base + page)
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    assert drawn > 0
    assert not [url for url in outside if "mermaid" in url or "unpkg" in url or "jsdelivr" in url]
    # What still leaves the machine is Material's web font (Google Fonts), not Mermaid.
    hosts = {re.sub(r"^https?://([^/]+).*", r"\1", url) for url in outside}
    assert hosts <= {"fonts.googleapis.com", "fonts.gstatic.com"}, outside


def _open_in_browser(browser: str, url: str) -> tuple[int, list[str]]:
    """(diagrams drawn, requests to other hosts, which are refused) for one page."""
    from playwright.sync_api import Route, sync_playwright

    outside: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=browser, args=["--disable-gpu", "--no-sandbox"]
        )
        try:
            context = chromium.new_context()

            def route(route_: Route) -> None:
                if route_.request.url.startswith("http://127.0.0.1:"):
                    route_.continue_()
                else:
                    outside.append(route_.request.url)
                    route_.abort()

            context.route("**/*", route)
            tab = context.new_page()
            # Material draws into closed shadow roots; open them to count the <svg>s.
            tab.add_init_script(
                "const a = Element.prototype.attachShadow;"
                "Element.prototype.attachShadow = function (i) {"
                " return a.call(this, Object.assign({}, i, { mode: 'open' })); };"
            )
            tab.goto(url, wait_until="load")
            expected = tab.evaluate("() => document.querySelectorAll('.mermaid').length")
            assert expected > 0
            tab.wait_for_function(
                """(n) => [...document.querySelectorAll("div.mermaid")].filter(
                     (d) => d.shadowRoot && d.shadowRoot.querySelector("svg")).length >= n""",
                arg=expected,
                timeout=30_000,
            )
            drawn = int(
                tab.evaluate(
                    """() => [...document.querySelectorAll("div.mermaid")].filter(
                         (d) => d.shadowRoot && d.shadowRoot.querySelector("svg")).length"""
                )
            )
        finally:
            chromium.close()
    return drawn, outside


# --- the module on its own (in-process, same loopback registry) ---------------


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private cache folder and a registry that refuses connections."""
    # Failed downloads are remembered per URL for the process; start afresh.
    monkeypatch.setattr(npm_files, "_failed", {})
    monkeypatch.setenv("SPIKE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPIKE_NPM_REGISTRY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path / "cache"


def test_node_modules_wins_without_asking_the_registry(
    offline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    installed = root / "node_modules" / "mermaid"
    (installed / "dist").mkdir(parents=True)
    (installed / "dist" / "mermaid.min.js").write_bytes(b"/* from npm ci */")
    (installed / "package.json").write_text('{"version": "11.1.0"}', encoding="utf-8")
    write_lock(root, sri(b"something else"))
    with loopback_registry() as registry:
        monkeypatch.setenv("SPIKE_NPM_REGISTRY", registry.url)
        found = npm_files.find(root)
    assert (found.source, found.version, found.path) == (
        "node_modules",
        "11.1.0",
        installed / "dist" / "mermaid.min.js",
    )
    assert found.site_name == "mermaid-11.1.0.min.js"
    assert registry.requests == []


def test_a_changed_cache_file_is_not_used_but_fetched_again(
    offline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = npm_tarball(STAND_IN)
    root = tmp_path / "project"
    root.mkdir()
    write_lock(root, sri(tarball))
    with loopback_registry() as registry:
        registry.publish(tarball)
        monkeypatch.setenv("SPIKE_NPM_REGISTRY", registry.url)
        first = npm_files.find(root)
        assert first.source == "download"
        first.path.write_bytes(b"/* edited after the check */")
        again = npm_files.find(root)
        assert again.source == "download" and again.path.read_bytes() == STAND_IN
        assert npm_files.find(root).source == "cache"
        assert len(registry.requests) == 2


def test_the_lock_files_resolved_url_is_used_when_no_registry_is_set(
    offline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = npm_tarball(STAND_IN)
    root = tmp_path / "project"
    root.mkdir()
    with loopback_registry() as registry:
        registry.files["/elsewhere/mermaid.tgz"] = tarball
        write_lock(root, sri(tarball), resolved=f"{registry.url}/elsewhere/mermaid.tgz")
        monkeypatch.delenv("SPIKE_NPM_REGISTRY")
        found = npm_files.find(root)
    assert found.source == "download" and registry.requests == ["/elsewhere/mermaid.tgz"]


def test_any_listed_sha512_may_match(
    offline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = npm_tarball(STAND_IN)
    root = tmp_path / "project"
    root.mkdir()
    write_lock(root, f"sha1-AAAA {sri(b'older')} {sri(tarball)}")
    with loopback_registry() as registry:
        registry.publish(tarball)
        monkeypatch.setenv("SPIKE_NPM_REGISTRY", registry.url)
        assert npm_files.find(root).path.read_bytes() == STAND_IN


@pytest.mark.parametrize(
    "serve, reason",
    [
        (None, "HTTP 404"),
        (
            npm_tarball(STAND_IN, member="package/dist/other.js"),
            "holds no package/dist/mermaid.min.js",
        ),
    ],
)
def test_a_download_that_cannot_be_used_is_a_one_line_reason(
    offline_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: bytes | None,
    reason: str,
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    write_lock(root, sri(serve or b""))
    with loopback_registry() as registry:
        if serve is not None:
            registry.publish(serve)
        monkeypatch.setenv("SPIKE_NPM_REGISTRY", registry.url)
        with pytest.raises(npm_files.Unavailable) as caught:
            npm_files.find(root)
    assert reason in str(caught.value) and "\n" not in str(caught.value)
    assert not (offline_env / "mermaid" / VERSION / "mermaid.min.js").exists()


def test_a_lock_without_sha512_is_never_downloaded(
    offline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    write_lock(root, "sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=")
    with loopback_registry() as registry:
        registry.publish(npm_tarball(STAND_IN))
        monkeypatch.setenv("SPIKE_NPM_REGISTRY", registry.url)
        with pytest.raises(npm_files.Unavailable, match="no sha512 integrity"):
            npm_files.find(root)
    assert registry.requests == []


def test_without_download_only_node_modules_or_the_cache_count(
    offline_env: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    write_lock(root, sri(b"x"))
    with pytest.raises(npm_files.Unavailable) as caught:
        npm_files.find(root, download=False)
    assert "node_modules/mermaid/dist/mermaid.min.js" in str(caught.value)
    assert str(offline_env) in str(caught.value)


def test_no_lock_file_says_so(offline_env: Path, tmp_path: Path) -> None:
    with pytest.raises(npm_files.Unavailable, match=r"no package-lock\.json"):
        npm_files.find(tmp_path)


def test_the_projects_lock_pins_mermaid_with_a_sha512() -> None:
    pin = npm_files.pinned(ROOT)
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin.version)
    assert pin.integrity.startswith("sha512-")
    package = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    assert "mermaid" in package["dependencies"]


def test_the_default_cache_is_the_platforms_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("SPIKE_CACHE_DIR", raising=False)
    assert npm_files.cache_dir() == Path(
        platformdirs.user_cache_dir("cs361-pipe-spike", appauthor=False)
    )
