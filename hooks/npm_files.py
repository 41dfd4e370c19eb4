"""The two npm files the site and the PDF need, with or without Node.js.

- Mermaid (`MERMAID`), which draws the report's diagrams: Material for MkDocs
  loads it from a CDN unless the page already has it;
- Paged.js (`PAGEDJS`), which lays the print page out as numbered US Letter
  pages with a contents list (CSS Paged Media) before Chromium prints it.

`find(root, package)` returns a local copy of the package's one
self-contained file (`dist/mermaid.min.js`, `dist/paged.polyfill.min.js`),
trying in turn:

1. `node_modules/<package>`, when `npm ci` has been run (it always wins);
2. the user's cache folder, filled by an earlier download;
3. the npm registry: the tarball of the exact version that package-lock.json
   pins. The whole download is checked against the lock's `integrity`
   (sha512) before anything in it is read; only that one file is kept, in
   the cache, so later builds work offline.

A download whose checksum does not match raises `IntegrityError` (nothing
from it is used or cached); any other reason there is no local copy raises
`Unavailable` with a one-line explanation.

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
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlsplit

import platformdirs

log = logging.getLogger("mkdocs.hooks.npm")


@dataclass(frozen=True)
class Package:
    """An npm package of which the build uses one file."""

    name: str  # as in package.json and package-lock.json
    file: str  # the file used, relative to the package folder
    label: str  # how log lines name it

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.file).name

    @property
    def installed(self) -> str:
        """Where `npm ci` puts the file, relative to the project root."""
        return f"node_modules/{self.name}/{self.file}"

    @property
    def member(self) -> str:
        """The file's path inside the registry's tarball."""
        return f"package/{self.file}"


MERMAID = Package("mermaid", "dist/mermaid.min.js", "Mermaid")
PAGEDJS = Package("pagedjs", "dist/paged.polyfill.min.js", "Paged.js")

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


class Unavailable(Exception):
    """No local copy; str() is the reason, one line without a final period."""


class IntegrityError(Exception):
    """A download does not match package-lock.json; nothing from it was kept."""


@dataclass(frozen=True)
class Pin:
    """The lock file's entry for a package."""

    package: Package
    version: str
    integrity: str  # Subresource Integrity: "sha512-<base64>" (possibly several, space-separated)
    resolved: str | None  # the tarball URL npm recorded, if any

    def tarball_url(self) -> str:
        """Where the tarball is: SPIKE_NPM_REGISTRY, else the lock's URL, else npmjs.org."""
        registry = os.environ.get(REGISTRY_ENV, "").strip()
        if not registry and self.resolved:
            return self.resolved
        base = (registry or DEFAULT_REGISTRY).rstrip("/")
        name = self.package.name
        return f"{base}/{name}/-/{name}-{self.version}.tgz"

    @property
    def tarball_name(self) -> str:
        return f"{self.package.name}-{self.version}.tgz"


@dataclass(frozen=True)
class NpmFile:
    """A local copy of a package's file and where it came from."""

    package: Package
    path: Path
    version: str
    source: str  # "node_modules", "cache" or "download"

    @property
    def site_name(self) -> str:
        """Its file name in the built site (versioned, so browsers never mix versions)."""
        return f"{self.package.name}-{self.version}.min.js"


def find(root: Path, package: Package = MERMAID, *, download: bool = True) -> NpmFile:
    """The local copy of `package`'s file for the project at `root` (see the module docstring).

    Raises Unavailable (with the reason) or IntegrityError.
    """
    installed = root / package.installed
    if installed.is_file():
        return NpmFile(package, installed, _installed_version(root, package), "node_modules")
    pin = pinned(root, package)
    folder = cache_dir() / package.name / pin.version
    cached = _cached(folder, pin)
    if cached is not None:
        return NpmFile(package, cached, pin.version, "cache")
    if not download:
        raise Unavailable(f"neither {package.installed} nor a cached copy in {folder}")
    data, url = fetch(pin)
    return NpmFile(package, _store(folder, pin, url, data), pin.version, "download")


def cache_dir() -> Path:
    """The folder this project caches downloads in (SPIKE_CACHE_DIR overrides)."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def pinned(root: Path, package: Package = MERMAID) -> Pin:
    """The package's version, integrity and tarball URL in root/package-lock.json."""
    lock = root / "package-lock.json"
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Unavailable(
            f"no package-lock.json in {root} to pin {package.label}'s version"
        ) from None
    except (OSError, ValueError) as error:
        raise Unavailable(f"cannot read {lock} ({_one_line(error)})") from None
    entry = None
    if isinstance(data, dict):
        # lockfileVersion 2 and 3 list "packages"; version 1 only "dependencies".
        packages = data.get("packages")
        dependencies = data.get("dependencies")
        if isinstance(packages, dict):
            entry = packages.get(f"node_modules/{package.name}")
        if entry is None and isinstance(dependencies, dict):
            entry = dependencies.get(package.name)
    if not isinstance(entry, dict):
        raise Unavailable(f"{lock} has no entry for {package.name}")
    version, integrity = entry.get("version"), entry.get("integrity")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise Unavailable(f"{lock} gives {package.name} no plain version ({version!r})")
    if not isinstance(integrity, str) or not _sha512s(integrity):
        raise Unavailable(f"{lock} gives {package.name} {version} no sha512 integrity to check")
    resolved = entry.get("resolved")
    if not (isinstance(resolved, str) and resolved.startswith(("https://", "http://"))):
        resolved = None
    return Pin(package, version, integrity, resolved)


def fetch(pin: Pin) -> tuple[bytes, str]:
    """Download the pinned tarball, check it, return (the package's file, URL).

    The checksum covers the whole tarball and is compared before the tarball
    is opened. Raises IntegrityError or Unavailable.
    """
    url = pin.tarball_url()
    if url in _failed:
        raise Unavailable(_failed[url])
    if urlsplit(url).scheme not in {"http", "https"}:
        raise Unavailable(f"{url} is not an http(s) URL (check {REGISTRY_ENV})")
    log.info(
        f"{pin.package.label} {pin.version} is neither in {pin.package.installed} nor cached yet; "
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
            raise Unavailable(reason) from None
        expected = _sha512s(pin.integrity)
        if actual not in expected:
            raise IntegrityError(
                f"checksum mismatch for {pin.tarball_name} from {url}: package-lock.json "
                f"expects {' or '.join(expected)}, the download is {actual}; "
                "nothing from it was used or cached"
            )
        spool.seek(0)
        data = _extract(spool, url, pin.package.member)
    seconds = time.perf_counter() - started
    log.info(
        f"{pin.package.label} {pin.version}: {size / 1e6:.1f} MB in {seconds:.1f} s, "
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


def _extract(tarball: IO[bytes], url: str, name: str) -> bytes:
    """The member `name` of a (verified) npm tarball; nothing else is read out."""
    try:
        with tarfile.open(fileobj=tarball, mode="r:gz") as archive:
            member = archive.getmember(name)
            if not member.isfile() or member.size > MAX_FILE_BYTES:
                raise Unavailable(f"{name} in {url} is not a plain file")
            stream = archive.extractfile(member)
            if stream is None:
                raise Unavailable(f"{name} in {url} cannot be read")
            return stream.read()
    except KeyError:
        raise Unavailable(f"{url} holds no {name}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise Unavailable(f"{url} is not a readable .tgz ({_one_line(error)})") from None


def _cached(folder: Path, pin: Pin) -> Path | None:
    """The cached file if its record matches the pin and its content the record."""
    path, record = folder / pin.package.file_name, folder / RECORD_NAME
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        content = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("integrity") != pin.integrity:
        return None
    if saved.get("sha256") != hashlib.sha256(content).hexdigest():
        log.info(
            f"{pin.package.label} {pin.version}: the cached {path} changed since it was "
            "checked; ignored"
        )
        return None
    return path


def _store(folder: Path, pin: Pin, url: str, data: bytes) -> Path:
    """Put a verified file into the cache; return its path."""
    path = folder / pin.package.file_name
    record = {
        "package": pin.package.name,
        "version": pin.version,
        "integrity": pin.integrity,
        "tarball": url,
        "file": pin.package.member,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _replace(path, data)
        # The record last: a cache without it (an interrupted write) is a miss.
        _replace(folder / RECORD_NAME, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    except OSError as error:
        raise Unavailable(
            f"cannot write the cache folder {folder} ({_one_line(error)}); "
            f"set {CACHE_ENV} to a folder you can write to"
        ) from None
    log.info(f"{pin.package.label} {pin.version}: cached as {path}")
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


def _installed_version(root: Path, package: Package) -> str:
    """The version in node_modules/<package>/package.json ("installed" if unreadable)."""
    try:
        manifest = json.loads(
            (root / "node_modules" / package.name / "package.json").read_text(encoding="utf-8")
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
