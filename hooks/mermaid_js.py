"""Mermaid for the site and the PDF, with or without Node.js.

Material for MkDocs draws the report's diagrams with Mermaid, which it loads
from a CDN unless the page already has it. `find()` returns a local copy of
Mermaid's self-contained bundle (`dist/mermaid.min.js`), trying in turn:

1. `node_modules/mermaid`, when `npm ci` has been run (it always wins);
2. the user's cache folder, filled by an earlier download;
3. the npm registry: the tarball of the exact version that package-lock.json
   pins. The whole download is checked against the lock's `integrity`
   (sha512) before anything in it is read; only `package/dist/mermaid.min.js`
   is kept, in the cache, so later builds work offline.

A download whose checksum does not match raises `IntegrityError` (nothing
from it is used or cached); any other reason there is no local Mermaid
raises `MermaidUnavailable` with a one-line explanation.

Environment:
    SPIKE_NPM_REGISTRY  the registry's base URL (default https://registry.npmjs.org)
    SPIKE_CACHE_DIR     the cache folder (default: the user cache folder that
                        platformdirs names, e.g. ~/.cache/cs361-pipe-spike,
                        ~/Library/Caches/cs361-pipe-spike or
                        %LOCALAPPDATA%\\cs361-pipe-spike\\Cache)
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import re
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import platformdirs

log = logging.getLogger("mkdocs.hooks.mermaid")

PACKAGE = "mermaid"
# Relative to the project root (where package-lock.json is).
NODE_MODULES_JS = "node_modules/mermaid/dist/mermaid.min.js"
# The one file taken from the registry's tarball.
TARBALL_MEMBER = "package/dist/mermaid.min.js"
FILE_NAME = "mermaid.min.js"
# Written next to the cached file once it is in place: what it came from
# and its own sha256, checked on every use.
RECORD_NAME = "verified.json"

REGISTRY_ENV = "SPIKE_NPM_REGISTRY"
CACHE_ENV = "SPIKE_CACHE_DIR"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
APP_NAME = "cs361-pipe-spike"

# Per socket operation; a machine without a network fails at once (DNS).
TIMEOUT_S = 20
# mermaid 11 is an 18 MB tarball holding a 3.6 MB bundle.
MAX_TARBALL_BYTES = 200_000_000
MAX_FILE_BYTES = 50_000_000
# Plain semver: the version also names a cache folder and the URL.
_VERSION = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")

# Downloads that failed in this process, by URL: `mkdocs serve` rebuilds
# often and should not wait on an unreachable registry each time.
_failed: dict[str, str] = {}


class MermaidUnavailable(Exception):
    """No local Mermaid; str() is the reason, one line without a final period."""


class IntegrityError(Exception):
    """A download does not match package-lock.json; nothing from it was kept."""


@dataclass(frozen=True)
class Pin:
    """The lock file's entry for mermaid."""

    version: str
    integrity: str  # Subresource Integrity: "sha512-<base64>" (possibly several, space-separated)
    resolved: str | None  # the tarball URL npm recorded, if any

    def tarball_url(self) -> str:
        """Where the tarball is: SPIKE_NPM_REGISTRY, else the lock's URL, else npmjs.org."""
        registry = os.environ.get(REGISTRY_ENV, "").strip()
        if not registry and self.resolved:
            return self.resolved
        base = (registry or DEFAULT_REGISTRY).rstrip("/")
        return f"{base}/{PACKAGE}/-/{PACKAGE}-{self.version}.tgz"

    @property
    def tarball_name(self) -> str:
        return f"{PACKAGE}-{self.version}.tgz"


@dataclass(frozen=True)
class Mermaid:
    """A local mermaid.min.js and where it came from."""

    path: Path
    version: str
    source: str  # "node_modules", "cache" or "download"

    @property
    def site_name(self) -> str:
        """Its file name in the built site (versioned, so browsers never mix versions)."""
        return f"mermaid-{self.version}.min.js"


def find(root: Path, *, download: bool = True) -> Mermaid:
    """The local Mermaid for the project at `root` (see the module docstring).

    Raises MermaidUnavailable (with the reason) or IntegrityError.
    """
    installed = root / NODE_MODULES_JS
    if installed.is_file():
        return Mermaid(installed, _installed_version(root), "node_modules")
    pin = pinned(root)
    folder = cache_dir() / PACKAGE / pin.version
    cached = _cached(folder, pin)
    if cached is not None:
        return Mermaid(cached, pin.version, "cache")
    if not download:
        raise MermaidUnavailable(f"neither {NODE_MODULES_JS} nor a cached copy in {folder}")
    data, url = fetch(pin)
    return Mermaid(_store(folder, pin, url, data), pin.version, "download")


def cache_dir() -> Path:
    """The folder this project caches downloads in (SPIKE_CACHE_DIR overrides)."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def pinned(root: Path) -> Pin:
    """mermaid's version, integrity and tarball URL in root/package-lock.json."""
    lock = root / "package-lock.json"
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MermaidUnavailable(
            f"no package-lock.json in {root} to pin Mermaid's version"
        ) from None
    except (OSError, ValueError) as error:
        raise MermaidUnavailable(f"cannot read {lock} ({_one_line(error)})") from None
    entry = None
    if isinstance(data, dict):
        # lockfileVersion 2 and 3 list "packages"; version 1 only "dependencies".
        packages = data.get("packages")
        dependencies = data.get("dependencies")
        if isinstance(packages, dict):
            entry = packages.get(f"node_modules/{PACKAGE}")
        if entry is None and isinstance(dependencies, dict):
            entry = dependencies.get(PACKAGE)
    if not isinstance(entry, dict):
        raise MermaidUnavailable(f"{lock} has no entry for {PACKAGE}")
    version, integrity = entry.get("version"), entry.get("integrity")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise MermaidUnavailable(f"{lock} gives {PACKAGE} no plain version ({version!r})")
    if not isinstance(integrity, str) or not _sha512s(integrity):
        raise MermaidUnavailable(f"{lock} gives {PACKAGE} {version} no sha512 integrity to check")
    resolved = entry.get("resolved")
    if not (isinstance(resolved, str) and resolved.startswith(("https://", "http://"))):
        resolved = None
    return Pin(version, integrity, resolved)


def fetch(pin: Pin) -> tuple[bytes, str]:
    """Download the pinned tarball, check it, return (mermaid.min.js, URL).

    The checksum covers the whole tarball and is compared before the tarball
    is opened. Raises IntegrityError or MermaidUnavailable.
    """
    url = pin.tarball_url()
    if url in _failed:
        raise MermaidUnavailable(_failed[url])
    if urlsplit(url).scheme not in {"http", "https"}:
        raise MermaidUnavailable(f"{url} is not an http(s) URL (check {REGISTRY_ENV})")
    log.info(
        f"Mermaid {pin.version} is neither in {NODE_MODULES_JS} nor cached yet; "
        f"downloading {url} (once per machine)"
    )
    started = time.perf_counter()
    request = urllib.request.Request(url, headers={"User-Agent": f"{APP_NAME} (mkdocs hook)"})
    with tempfile.TemporaryFile() as spool:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                size, actual = _spool(response, spool)
        except (OSError, http.client.HTTPException, ValueError) as error:
            reason = f"downloading {url} failed: {_reason(error)}"
            _failed[url] = reason
            raise MermaidUnavailable(reason) from None
        expected = _sha512s(pin.integrity)
        if actual not in expected:
            raise IntegrityError(
                f"checksum mismatch for {pin.tarball_name} from {url}: package-lock.json "
                f"expects {' or '.join(expected)}, the download is {actual}; "
                "nothing from it was used or cached"
            )
        spool.seek(0)
        data = _extract(spool, url)
    log.info(
        f"Mermaid {pin.version}: {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s, "
        "sha512 matches package-lock.json"
    )
    return data, url


def _spool(response: IO[bytes], spool: IO[bytes]) -> tuple[int, str]:
    """Copy the response into spool; return (bytes, "sha512-<base64>")."""
    digest = hashlib.sha512()
    size = 0
    while chunk := response.read(1 << 16):
        size += len(chunk)
        if size > MAX_TARBALL_BYTES:
            raise ValueError(f"more than {MAX_TARBALL_BYTES // 1_000_000} MB, stopped")
        digest.update(chunk)
        spool.write(chunk)
    return size, "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def _extract(tarball: IO[bytes], url: str) -> bytes:
    """package/dist/mermaid.min.js from a (verified) npm tarball; nothing else is read out."""
    try:
        with tarfile.open(fileobj=tarball, mode="r:gz") as archive:
            member = archive.getmember(TARBALL_MEMBER)
            if not member.isfile() or member.size > MAX_FILE_BYTES:
                raise MermaidUnavailable(f"{TARBALL_MEMBER} in {url} is not a plain file")
            stream = archive.extractfile(member)
            if stream is None:
                raise MermaidUnavailable(f"{TARBALL_MEMBER} in {url} cannot be read")
            return stream.read()
    except KeyError:
        raise MermaidUnavailable(f"{url} holds no {TARBALL_MEMBER}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise MermaidUnavailable(f"{url} is not a readable .tgz ({_one_line(error)})") from None


def _cached(folder: Path, pin: Pin) -> Path | None:
    """The cached file if its record matches the pin and its content the record."""
    path, record = folder / FILE_NAME, folder / RECORD_NAME
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        content = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("integrity") != pin.integrity:
        return None
    if saved.get("sha256") != hashlib.sha256(content).hexdigest():
        log.info(f"Mermaid {pin.version}: the cached {path} changed since it was checked; ignored")
        return None
    return path


def _store(folder: Path, pin: Pin, url: str, data: bytes) -> Path:
    """Put a verified mermaid.min.js into the cache; return its path."""
    path = folder / FILE_NAME
    record = {
        "package": PACKAGE,
        "version": pin.version,
        "integrity": pin.integrity,
        "tarball": url,
        "file": TARBALL_MEMBER,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _replace(path, data)
        # The record last: a cache without it (an interrupted write) is a miss.
        _replace(folder / RECORD_NAME, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    except OSError as error:
        raise MermaidUnavailable(
            f"cannot write the cache folder {folder} ({_one_line(error)}); "
            f"set {CACHE_ENV} to a folder you can write to"
        ) from None
    log.info(f"Mermaid {pin.version}: cached as {path}")
    return path


def _replace(path: Path, data: bytes) -> None:
    """Write path all at once: readers see the old file or the new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _installed_version(root: Path) -> str:
    """The version in node_modules/mermaid/package.json ("installed" if unreadable)."""
    try:
        manifest = json.loads(
            (root / "node_modules" / PACKAGE / "package.json").read_text(encoding="utf-8")
        )
        version = manifest.get("version") if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        version = None
    return version if isinstance(version, str) and _VERSION.fullmatch(version) else "installed"


def _sha512s(integrity: str) -> list[str]:
    """The sha512 hashes in an SRI string, as "sha512-<base64>" (options dropped)."""
    return [token.split("?", 1)[0] for token in integrity.split() if token.startswith("sha512-")]


def _reason(error: BaseException) -> str:
    """Why a download failed, in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    elif isinstance(error, urllib.error.URLError):
        return _one_line(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return _one_line(error.strerror)  # without the "[Errno 111]" prefix
    return _one_line(error)


def _one_line(error: object) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
