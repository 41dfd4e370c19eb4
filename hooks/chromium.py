"""The installed Chromium-family browser that the build prints and photographs with.

hooks/pdf.py prints the paper with it and hooks/captures.py photographs the
2(b) terminal windows with it, both through Playwright. Nothing is ever
downloaded: `find_browser()` looks for Chromium, Google Chrome or Microsoft
Edge where they are usually installed; SPIKE_PDF_BROWSER picks one (a path
that does not exist means "no browser").
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

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


class BrowserUnavailable(Exception):
    """No usable Chromium-family browser: the PDF is skipped, not the build."""


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


def launch(playwright: Any, browser: Path) -> Any:
    """`browser` started headless through Playwright; BrowserUnavailable if it will not start."""
    from playwright.sync_api import Error as PlaywrightError

    flags = list(BROWSER_FLAGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")
    try:
        return playwright.chromium.launch(executable_path=str(browser), args=flags, timeout=30_000)
    except PlaywrightError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unknown error"
        raise BrowserUnavailable(f"{browser} did not start ({first})") from None
