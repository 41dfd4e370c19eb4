"""MkDocs hook: run the real spike once per build and show both terminals.

On every `mkdocs build` and every `mkdocs serve` rebuild, `on_pre_build`
runs the commands the README gives a student, for real: the server
(`spike-server`, on its default port 3000, or on a free port with
`--port 0` when 3000 is taken, and then the commands shown say so), the
client twice (`spike-client "A message from CS361"`, `spike-client --op
info`), then a client written the way Python's socket documentation writes
one (no newline, then wait for the reply), and stops the server with Ctrl+C
(CTRL_BREAK on Windows). The programs run as `python -m spike.server` and
`python -m spike.client` with this build's Python, which are the same
programs as the `spike-server` and `spike-client` commands. `on_page_markdown`
then puts that one run on two pages:

- `<!-- spike-capture -->` (docs/spike/demo.md): the terminals as text,
  which can be copied;
- `<!-- spike-screenshots -->` (the answer sheet, docs/index.md, and the
  demo page): screenshots of the server's and the client's terminal windows
  as they were when the client's second command returned (before the third
  client connects). Rich draws each window from the lines the programs
  printed (`Console.export_svg()`; a line too long for the window breaks
  between JSON members or words, never inside one), and the installed
  Chromium-family browser (hooks/chromium.py) photographs the drawing as a
  PNG, which the site and the PDF show. Without a browser the pages show the
  drawings themselves, and their caption says so. Each picture's text
  alternative is every line in the window.

A student who wants to hand in screenshots of their own puts PNG or JPEG
files in docs/assets/screenshots/ (OWN_SHOTS_DIR): the 2(b) pictures are then
those files, in name order, and the captions say they are the student's.

Every capture and picture is stamped with the date of the run, the Python
version and the OS. Nothing generated is committed or written into docs/:
the PNGs go into the built site only. If the spike cannot run, the build fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import html
import io
import logging
import os
import platform
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url
from rich.console import CONSOLE_SVG_FORMAT, Console
from rich.text import Text

try:  # hooks/chromium.py: MkDocs puts hooks/ on sys.path to load a hook
    import chromium
except ModuleNotFoundError:  # this file loaded by its path from elsewhere (a test)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import chromium
    finally:
        sys.path.pop(0)

log = logging.getLogger("mkdocs.hooks.captures")

MARKER = "<!-- spike-capture -->"
SHOTS_MARKER = "<!-- spike-screenshots -->"
DEMO_PAGE = "spike/demo.md"
ANSWER_SHEET = "index.md"
# Pages that must show the terminal screenshots.
SHOT_PAGES = (ANSWER_SHEET, DEMO_PAGE)
# A student's own 2(b) screenshots (PNG or JPEG), relative to docs/: when
# there are any, the pages show them instead of the build's.
OWN_SHOTS_DIR = "assets/screenshots"
OWN_SHOT_TYPES = (".png", ".jpg", ".jpeg")
# Where the build's screenshots go in the site (never into docs/).
SHOTS_SITE_DIR = "assets/spike-run"
# The pictured windows' width in CSS pixels, photographed at twice that
# resolution: sharp on paper at the width of a US Letter page.
SHOT_WIDTH_PX = 900
SHOT_SCALE = 2
# What the README tells a student to type (uv runs the project's console scripts).
SERVER_COMMAND = ["uv", "run", "spike-server"]
CLIENT_COMMAND = ["uv", "run", "spike-client"]
# The port spike-server listens on when not told otherwise.
DEFAULT_PORT = 3000
# Columns of the pictured terminal windows: a common terminal width, and
# what fits across a printed US Letter page at a readable size.
SHOT_COLUMNS = 80
# The assignment's message, in its exact words.
MESSAGE = "A message from CS361"
# Upper bound for every single wait; a healthy run takes well under a second.
STEP_TIMEOUT = 10.0

# Not spike.cli.SERVING_LINE: this hook treats the spike as a black box and
# never imports it, so a spike broken on purpose fails the build with its own traceback.
_SERVING = re.compile(r"^Serving on (?P<host>\S+):(?P<port>\d+) \(press Ctrl\+C to stop\)$")
_WINDOWS = sys.platform == "win32"


@dataclasses.dataclass
class Terminal:
    """One terminal's worth of a capture: the commands typed and what they printed."""

    title: str
    lines: list[str]


@dataclasses.dataclass
class Capture:
    """Everything one build's run of the spike produced."""

    run_id: str
    date: str
    python: str
    os_name: str
    port: int
    seconds: float
    server: Terminal
    client: Terminal
    raw_client: Terminal
    # The server's window as it was when the client's last command returned:
    # what the screenshot beside the client's window shows.
    server_shot: Terminal


@dataclasses.dataclass
class Shot:
    """One 2(b) picture as a page shows it."""

    title: str  # which window, for the alt text
    site_path: str  # the PNG or JPEG in the built site ("" for an inline drawing)
    alt: str
    width: int = 0
    height: int = 0
    svg: str = ""  # the drawing itself, when there is no picture of it


@dataclasses.dataclass
class Shots:
    """The 2(b) pictures of this build and what made them."""

    kind: str  # "photographed", "drawn" (no browser) or "own" (the student's files)
    shots: list[Shot]
    files: dict[str, bytes]  # site path -> PNG, for the build to add to the site
    why_drawn: str = ""


_capture: Capture | None = None
_shots: Shots | None = None


# --- MkDocs events -------------------------------------------------------


def on_pre_build(config) -> None:
    """Run the spike once for this build (not once per page), and picture it."""
    global _capture, _shots
    _capture, _shots = None, None
    root = Path(config.config_file_path).resolve().parent
    try:
        _capture = run_spike(root)
    except SpikeRunError as exc:
        raise PluginError(f"hooks/captures.py: the spike demo could not run: {exc}") from None
    log.info(
        "spike capture: run %s, server port %d, %.2f s",
        _capture.run_id,
        _capture.port,
        _capture.seconds,
    )
    own = own_screenshots(Path(config.docs_dir))
    if own:
        _shots = Shots("own", own, {})
        log.info(f"2(b) screenshots: the {len(own)} files in docs/{OWN_SHOTS_DIR}/")
    else:
        _shots = picture(_capture)
        if _shots.kind == "drawn":
            log.info(f"2(b) screenshots: drawings, not photographs ({_shots.why_drawn})")


def on_files(files: Files, config) -> Files:
    """Add this build's PNG screenshots to the site."""
    for site_path, data in (_shots.files if _shots else {}).items():
        files.append(File.generated(config, site_path, content=data))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Put this build's captures and pictures in place of the markers."""
    src = page.file.src_uri
    if src not in SHOT_PAGES:
        return markdown
    if SHOTS_MARKER not in markdown:
        raise PluginError(f"hooks/captures.py: {src} lost its picture marker {SHOTS_MARKER!r}")
    if src == DEMO_PAGE and MARKER not in markdown:
        raise PluginError(f"hooks/captures.py: {DEMO_PAGE} lost its capture marker {MARKER!r}")
    if _capture is None or _shots is None:  # on_pre_build failed or did not run
        raise PluginError("hooks/captures.py: no spike capture for this build")
    shots = render_screenshots(_capture, _shots, page_url=page.url, page_key=src)
    return markdown.replace(SHOTS_MARKER, shots).replace(MARKER, render(_capture))


# --- Running the spike ---------------------------------------------------


class SpikeRunError(Exception):
    """The spike did not behave as the demonstration needs."""


class _LineReader:
    """Collects a process's output lines on a thread so reads can time out."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\r\n"))
        self._queue.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line (None at end of output); SpikeRunError after `timeout`."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise SpikeRunError(
                f"no output for {timeout:.0f} s; server printed so far: {self.lines!r}"
            ) from None
        if line is not None:
            self.lines.append(line)
        return line

    def wait_for(self, predicate, timeout: float) -> None:
        """Read lines until `predicate(lines)` holds, within `timeout` overall."""
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.next_line(remaining) is None:
                raise SpikeRunError(f"server output ended early or stalled: {self.lines!r}")

    def drain(self, timeout: float) -> None:
        """Read the remaining lines up to end of output."""
        deadline = time.monotonic() + timeout
        while self.next_line(max(0.01, deadline - time.monotonic())) is not None:
            pass


def _child_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The pictures show a first run: no token the developer keeps for a teammate's server.
    env.pop("SPIKE_TOKEN", None)
    # The spike is imported from this checkout even if it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _start_server(root: Path, env: dict[str, str], args: list[str]) -> subprocess.Popen:
    kwargs: dict = {}
    if sys.platform == "win32":
        # Its own process group, so CTRL_BREAK reaches the server and not us.
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    return subprocess.Popen(
        [sys.executable, "-m", "spike.server", *args],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        **kwargs,
    )


def _run_client(root: Path, env: dict[str, str], port_args: list[str], *words: str) -> list[str]:
    """Run the real client CLI once; return the prompt line and its output."""
    args = ["-m", "spike.client", *port_args, *words]
    what = " ".join(words)
    try:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            encoding="utf-8",
            errors="replace",
            timeout=STEP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise SpikeRunError(f"client {what!r} did not finish in {STEP_TIMEOUT:.0f} s") from None
    output = (done.stdout + done.stderr).splitlines()
    if done.returncode != 0:
        raise SpikeRunError(f"client {what!r} exited with {done.returncode}: {output!r}")
    return [_prompt([*CLIENT_COMMAND, *port_args, *words]), *output]


def _socket_docs_client(host: str, port: int) -> list[str]:
    """Talk like the client in Python's socket docs; show it as a REPL session."""
    payload = MESSAGE.encode("utf-8")  # no trailing newline
    with socket.create_connection((host, port), timeout=STEP_TIMEOUT) as sock:
        sock.sendall(payload)
        # Only the server's flush-after rule ends this wait: no newline was sent.
        reply = sock.recv(1024)
    if not reply:
        raise SpikeRunError("the socket-docs style client got no reply")
    return [
        ">>> import socket",
        f">>> s = socket.create_connection(({host!r}, {port}))",
        f">>> s.sendall({payload!r})  # no newline",
        ">>> s.recv(1024)",
        repr(reply),
        ">>> s.close()",
    ]


def _stop_server(server: subprocess.Popen) -> None:
    if sys.platform == "win32":
        server.send_signal(signal.CTRL_BREAK_EVENT)
    else:
        server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SpikeRunError(f"server did not stop within {STEP_TIMEOUT:.0f} s of Ctrl+C") from None


def _kill(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.kill()
        server.wait(timeout=STEP_TIMEOUT)


def _serve(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, _LineReader, list[str]]:
    """The server on its default port, else (3000 taken) on a free one: (process, output, args).

    Nothing is checked in advance (another program could take the port in
    between): the server is started and its first line says whether it listens.
    """
    server = _start_server(root, env, [])
    output = _LineReader(server.stdout)
    first = output.next_line(STEP_TIMEOUT) or ""
    if "in use" not in first:
        return server, output, []
    # Port 3000 is taken (say, by the student's own server): a free port instead.
    _kill(server)
    log.info(f"spike capture: port {DEFAULT_PORT} is in use, so the run uses a free port")
    args = ["--port", "0"]
    server = _start_server(root, env, args)
    output = _LineReader(server.stdout)
    output.next_line(STEP_TIMEOUT)
    return server, output, args


def run_spike(root: Path) -> Capture:
    """Run server, clients and shutdown for real; return what each side printed."""
    started = time.monotonic()
    run_date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    env = _child_env(root)
    server, output, server_args = _serve(root, env)
    try:
        first = output.lines[0] if output.lines else None
        match = _SERVING.match(first or "")
        if not match:
            raise SpikeRunError(
                f"unexpected first server line {first!r} (is the spike importable?)"
            )
        host, port = match["host"], int(match["port"])
        # The client needs the port only when it is not the default one.
        port_args = [] if port == DEFAULT_PORT and not server_args else ["--port", str(port)]

        client_lines = _run_client(root, env, port_args, MESSAGE)
        client_lines += _run_client(root, env, port_args, "--op", "info")
        if f"Received: {MESSAGE}" not in client_lines:
            raise SpikeRunError(f"client did not get its message back: {client_lines!r}")
        # Both of the client's connections logged: the moment of the screenshots.
        output.wait_for(lambda lines: _closed(lines) >= 2, STEP_TIMEOUT)
        shot_lines = list(output.lines)
        raw_lines = _socket_docs_client(host, port)
        output.wait_for(lambda lines: _closed(lines) >= 3, STEP_TIMEOUT)
        _stop_server(server)
        output.drain(STEP_TIMEOUT)
    except (SpikeRunError, OSError) as exc:
        # Show what the server said (a traceback, say), not just its first
        # line: give a crashing server a moment to finish writing it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=1.0)
        _kill(server)
        with contextlib.suppress(SpikeRunError):
            output.drain(STEP_TIMEOUT)
        said = "\n    ".join(output.lines[-20:]) or "(nothing)"
        raise SpikeRunError(f"{exc}\n  server output:\n    {said}") from None
    finally:
        _kill(server)

    server_prompt = _prompt([*SERVER_COMMAND, *server_args])
    server_lines = [server_prompt]
    for line in output.lines:
        if line == "Server stopped.":
            server_lines.append("^C")  # what the terminal echoes for Ctrl+C
        server_lines.append(line)
    return Capture(
        run_id=uuid.uuid4().hex[:12],
        date=run_date,
        python=platform.python_version(),
        os_name=describe_os(),
        port=port,
        seconds=time.monotonic() - started,
        server=Terminal("Terminal 1: the server", server_lines),
        client=Terminal("Terminal 2: the client", client_lines),
        raw_client=Terminal("A client written like the one in Python's socket docs", raw_lines),
        server_shot=Terminal("Terminal 1: the server", [server_prompt, *shot_lines]),
    )


def _closed(lines: list[str]) -> int:
    """How many connections the server has logged as closed."""
    return sum(line.startswith("Connection closed:") for line in lines)


def _prompt(argv: list[str]) -> str:
    """The command as a user types it: words with spaces in double quotes, as in the README.

    Double quotes work the same in bash, zsh, PowerShell and cmd for these words.
    """
    words = [f'"{word}"' if re.search(r"\s", word) else word for word in argv]
    return ("> " if _WINDOWS else "$ ") + " ".join(words)


def describe_os() -> str:
    """A short, human name for the operating system this build ran on."""
    system = platform.system()
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]} ({platform.machine()})"
    if system == "Windows":
        return f"Windows {platform.release()} ({platform.version()}, {platform.machine()})"
    return f"{system} {platform.release()} ({platform.machine()})"


# --- Rendering -------------------------------------------------------------


def _fence(lines: list[str], lang: str, title: str) -> str:
    body = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f'{ticks} {lang} title="{title}"\n{body}\n{ticks}'


def _stamp(capture: Capture) -> str:
    return (
        f'<p class="spike-capture-meta" data-spike-run="{capture.run_id}">'
        f"Run on {capture.date} (UTC) &middot; Python {capture.python} &middot; {capture.os_name}"
        "</p>"
    )


def _panel(terminal: Terminal, lang: str, capture: Capture) -> str:
    return (
        '<div class="spike-capture" markdown>\n\n'
        f"{_fence(terminal.lines, lang, terminal.title)}\n\n"
        f"{_stamp(capture)}\n\n"
        "</div>"
    )


def render(capture: Capture) -> str:
    """Markdown for the two terminals side by side, then the raw-socket client."""
    return "\n\n".join(
        [
            f'<div class="spike-captures" data-spike-run="{capture.run_id}" markdown>',
            _panel(capture.server, "console", capture),
            _panel(capture.client, "console", capture),
            "</div>",
            _panel(capture.raw_client, "pycon", capture),
        ]
    )


# --- Pictures of the terminal windows ---------------------------------------

# Rich's SVG template without its @font-face rules: those fetch Fira Code
# from a CDN, which the offline PDF print refuses. Local monospace fonts
# draw the same cells (Rich places every run of text at its column).
_SVG_FORMAT = re.sub(r"@font-face \{\{.*?\}\}\s*", "", CONSOLE_SVG_FORMAT, flags=re.S).replace(
    "font-family: Fira Code, monospace;",
    "font-family: 'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace;",
)
_PROMPTS = ("$ ", "> ", ">>> ")
_LABELS = re.compile(r"^(Sent|Received|Serving on|Connection opened|Connection closed):")


def _styled(line: str) -> Text:
    """One terminal line, coloured the way a shell session usually looks."""
    text = Text(line)
    if line.startswith(_PROMPTS):
        text.stylize("bold green", 0, 2)
        text.stylize("bold", 2)
    elif match := _LABELS.match(line):
        text.stylize("cyan", 0, match.end())
    if MESSAGE in line and not line.startswith(_PROMPTS):
        start = line.index(MESSAGE)
        text.stylize("bold yellow", start, start + len(MESSAGE))
    return text


# A long line is continued under the text after its label ("Received: ...").
_CONTINUED = re.compile(r"^(?:Sent|Received): ")
# Where a long line may be broken, best first: after a comma or a space
# (between JSON members, between words), else after a JSON opener or colon.
_BREAKS = (", ", ":{[")


def _rows(line: str, width: int) -> list[tuple[int, int]]:
    """(start, end) of each row that `line` takes in a `width`-column picture.

    A line that does not fit is broken after the last separator that fits,
    never inside a token such as a JSON string or number (only a token
    longer than a whole row is cut), and its continuation rows are indented
    to the start of its text.
    """
    rows: list[tuple[int, int]] = []
    start, room = 0, width
    while len(line) - start > room:
        window = line[start : start + room]
        cut = start + room
        for separators in _BREAKS:
            found = max((i + 1 for i, ch in enumerate(window) if ch in separators), default=0)
            if found:
                cut = start + found
                break
        rows.append((start, cut))
        start, room = cut, width - _indent(line)
    rows.append((start, len(line)))
    return rows


def _indent(line: str) -> int:
    """Columns that a continuation row of `line` is indented by."""
    label = _CONTINUED.match(line)
    return label.end() if label else 0


def alt_text(terminal: Terminal) -> tuple[str, str]:
    """(title, description) for a screen reader: which window, then all its lines."""
    return f"Screenshot of {terminal.title}", "\n".join(terminal.lines)


def terminal_svg(terminal: Terminal, unique_id: str) -> str:
    """A picture of one terminal window (inline SVG) holding exactly its lines."""
    console = Console(
        record=True,
        width=SHOT_COLUMNS,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
    )
    for line in terminal.lines:
        rows = _rows(line, SHOT_COLUMNS)
        for number, part in enumerate(_styled(line).divide(end for _, end in rows[:-1])):
            row = Text(" " * _indent(line)) + part if number else part
            console.print(row, no_wrap=True, overflow="ignore", crop=False)
    svg = console.export_svg(title=terminal.title, code_format=_SVG_FORMAT, unique_id=unique_id)
    # One line, no comments: Markdown then passes the block through untouched.
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    # Rich clips the text to a box that ends at the last row's baseline, which
    # cuts off what hangs below it: an underscore there vanished.
    svg = re.sub(r'(<g [^>]*?) clip-path="url\(#[\w-]+-clip-terminal\)"', r"\1", svg, count=1)
    title, text = alt_text(terminal)
    # Each line of the window on a line of its own for a screen reader.
    desc = "&#10;".join(html.escape(line) for line in text.splitlines())
    svg = re.sub(
        r'<svg class="rich-terminal"([^>]*)>',
        lambda tag: (
            f'<svg class="rich-terminal" role="img" aria-labelledby="{unique_id}-alt" '
            f'aria-describedby="{unique_id}-text"{tag[1]}>'
            f'<title id="{unique_id}-alt">{html.escape(title)}</title>'
            f'<desc id="{unique_id}-text">{desc}</desc>'
        ),
        svg,
        count=1,
    )
    return " ".join(part.strip() for part in svg.splitlines() if part.strip())


def picture(capture: Capture) -> Shots:
    """Photographs (PNG) of the drawings of both windows; the drawings alone without a browser."""
    windows = (("server", capture.server_shot), ("client", capture.client))
    drawings = {
        name: terminal_svg(terminal, f"shot-{capture.run_id}-{name}") for name, terminal in windows
    }
    try:
        photos = photograph(list(drawings.values()))
    except (chromium.BrowserUnavailable, ImportError) as error:
        shots = [
            Shot(terminal.title, "", _alt(terminal), svg=drawings[name])
            for name, terminal in windows
        ]
        return Shots("drawn", shots, {}, why_drawn=str(error))
    shots, files = [], {}
    for (name, terminal), (png, width, height) in zip(windows, photos, strict=True):
        path = f"{SHOTS_SITE_DIR}/{capture.run_id}-{name}.png"
        files[path] = png
        shots.append(Shot(terminal.title, path, _alt(terminal), width, height))
    return Shots("photographed", shots, files)


def _alt(terminal: Terminal) -> str:
    """A picture's text alternative: which window, then every line in it."""
    title, text = alt_text(terminal)
    return f"{title}:\n{text}"


def photograph(svgs: list[str]) -> list[tuple[bytes, int, int]]:
    """Each drawing photographed by the installed browser: (PNG, width, height in CSS px).

    Raises chromium.BrowserUnavailable without a browser, ImportError without Playwright.
    """
    from playwright.sync_api import sync_playwright

    browser = chromium.find_browser()
    pictures = []
    with sync_playwright() as playwright:
        running = chromium.launch(playwright, browser)
        try:
            context = running.new_context(
                device_scale_factor=SHOT_SCALE, viewport={"width": SHOT_WIDTH_PX, "height": 800}
            )
            # The drawings need nothing from anywhere.
            context.route("**/*", lambda route: route.abort())
            tab = context.new_page()
            for svg in svgs:
                tab.set_content(
                    "<!doctype html><html><head><style>body{margin:0;background:#fff}"
                    f"svg{{display:block;width:{SHOT_WIDTH_PX}px;height:auto}}</style></head>"
                    f"<body>{svg}</body></html>"
                )
                element = tab.locator("svg").first
                box = element.bounding_box()
                png = element.screenshot(type="png")
                pictures.append((png, round(box["width"]), round(box["height"])))
        finally:
            running.close()
    return pictures


def own_screenshots(docs: Path) -> list[Shot]:
    """The student's own 2(b) screenshots in docs/assets/screenshots/, in name order."""
    folder = docs / OWN_SHOTS_DIR
    if not folder.is_dir():
        return []
    found = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in OWN_SHOT_TYPES
    )
    return [
        Shot(
            path.stem,
            f"{OWN_SHOTS_DIR}/{path.name}",
            f"My screenshot {path.name}: " + " ".join(re.split(r"[-_ ]+", path.stem)),
        )
        for path in found
    ]


def _label(capture: Capture, shots: Shots) -> str:
    """The caption: what the pictures are, plainly."""
    stamp = (
        f'<span class="spike-capture-meta" data-spike-run="{capture.run_id}">'
        f"run on {capture.date} (UTC) &middot; Python {capture.python} &middot; "
        f"{capture.os_name}</span>"
    )
    commands = (
        "The build ran them as `python -m spike.server` and `python -m spike.client`, "
        "the same programs as `spike-server` and `spike-client`"
    )
    if shots.kind == "own":
        names = ", ".join(f"`{shot.site_path.rsplit('/', 1)[-1]}`" for shot in shots.shots)
        return f"*Screenshots I took of my own terminals ({names}, in docs/{OWN_SHOTS_DIR}/).*"
    what = (
        "Screenshots (PNG) of the server's and the client's terminal windows as they were "
        "when the client's second command had returned, taken by this report's build: "
        "Chromium photographed a drawing of each window made from what the programs printed"
        if shots.kind == "photographed"
        else "Drawings of the server's and the client's terminal windows as they were when "
        "the client's second command had returned, made by this report's build from what "
        "the programs printed (no browser was found to photograph them)"
    )
    return f"*{what} in the real run ({stamp}). {commands}.*"


def render_screenshots(capture: Capture, shots: Shots, *, page_url: str, page_key: str) -> str:
    """Markdown for the 2(b) pictures of one page, with their caption."""
    slug = re.sub(r"[^a-z0-9]+", "-", page_key.lower()).strip("-")
    pictures = []
    for shot in shots.shots:
        if shot.svg:
            svg = shot.svg.replace(f"shot-{capture.run_id}-", f"shot-{slug}-")
            pictures.append(f'<div class="spike-shot">{svg}</div>')
            continue
        size = f' width="{shot.width}" height="{shot.height}"' if shot.width else ""
        alt = "&#10;".join(html.escape(line) for line in shot.alt.splitlines())
        src = get_relative_url(shot.site_path, page_url or ".")
        pictures.append(f'<div class="spike-shot"><img src="{src}" alt="{alt}"{size}></div>')
    figure = (
        # (No data-page attribute: Paged.js reads one as a named page and starts a new page.)
        f'<figure class="spike-shots spike-shots--{shots.kind}" '
        f'data-spike-run="{capture.run_id}">{"".join(pictures)}</figure>'
    )
    # One block, so that a page can style the pictures and their caption together.
    return (
        f'<div class="spike-shots-block" markdown>\n\n{figure}\n\n'
        f"{_label(capture, shots)}\n\n</div>"
    )
