"""MkDocs hook: the report as a paper, the page that hooks/pdf.py prints for Canvas.

The PDF is the submission and nothing else: a cover, the contents with page
numbers, then the nav's pages except those listed under
`extra.paper.leave_out` in mkdocs.yml (the answer sheet, the full answers to
Part 1 and Part 2, the references). The pages left out stay on the website;
the contents page names them in one line. After every build this hook writes
that document as `site/print_page/index.html` (the site's "Printable
version"), from the pages' own HTML:

- headings are numbered in the HTML itself (2, 2.1, 2.1.1), so the contents,
  the headings and the PDF's bookmarks read exactly the same;
- ids get the page's key in front, so the pages' anchors stay unique; a link
  to another page of the paper becomes a cross-reference ("section 2.3.2,
  page 10": Paged.js fills in the page); a link to a page left out becomes
  plain text;
- web wording becomes paper wording (PAPER_WORDING);
- the references keep only the sources that the paper's other pages cite.

The document loads Mermaid and Paged.js from the site (hooks/pdf.py puts
them there) and docs/assets/print/paper.js, which draws the diagrams and then
lets Paged.js lay out US Letter pages styled by docs/assets/print/paper.css:
page numbers on every page but the cover, and `target-counter()` page
numbers in the contents and the cross-references (CSS Paged Media). Opened in
a browser (`mkdocs serve`), it shows the same pages, and Ctrl+P prints them.

The student's name (`site_author`) and the cover's date (`extra.paper.date`,
else the build's date, which SOURCE_DATE_EPOCH fixes) are set in mkdocs.yml
and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.nav import Navigation
from mkdocs.structure.pages import Page
from mkdocs.utils import get_build_datetime

log = logging.getLogger("mkdocs.hooks.paper")

# Where the paper is written, relative to the site folder.
PAPER_PAGE = "print_page/index.html"
# Relative to mkdocs.yml: the paper's template and its cover.
TEMPLATES_DIR = "docs/overrides"
TEMPLATE = "paper.html"
# Relative to the site: the paper's own stylesheet and script (from docs/).
PAPER_CSS = "assets/print/paper.css"
PAPER_JS = "assets/print/paper.js"
# Material's stylesheets in the built site (their names carry a hash).
MATERIAL_CSS = ("assets/stylesheets/main.*.min.css", "assets/stylesheets/palette.*.min.css")
# Headings down to this depth of numbering are listed in the contents (2.1: 2).
CONTENTS_DEPTH = 2

# Web wording -> paper wording, applied to the text (never the markup) of
# every page in the paper. The site keeps its own words.
PAPER_WORDING = [
    (
        re.compile(r"\b([Oo])n this page\b"),
        lambda m: ("I" if m[1] == "O" else "i") + "n this section",
    ),
    (re.compile(r"\b([Tt])his page\b"), lambda m: m[1] + "his section"),
    (re.compile(r"\b([Tt])his site\b"), lambda m: m[1] + "his report"),
]


@dataclasses.dataclass
class Settings:
    """What the cover and the contents say, from mkdocs.yml."""

    author: str
    title: str
    course: str
    subtitle: str
    date: datetime.date
    leave_out: list[str]
    references: str
    site_url: str


def settings(config: MkDocsConfig) -> Settings:
    """The paper's settings: `site_author`, `site_name` and `extra.paper` in mkdocs.yml."""
    paper = config.extra.get("paper") or {}
    if not isinstance(paper, dict):
        raise PluginError("mkdocs.yml: extra.paper must be a mapping (see its comments)")
    author = (config.site_author or "").strip()
    if not author:
        raise PluginError(
            "mkdocs.yml: set site_author to your name; the PDF's cover and file name use it"
        )
    leave_out = paper.get("leave_out") or []
    if not isinstance(leave_out, list) or not all(isinstance(p, str) for p in leave_out):
        raise PluginError("mkdocs.yml: extra.paper.leave_out must be a list of page paths")
    return Settings(
        author=author,
        title=config.site_name,
        course=str(paper.get("course") or ""),
        subtitle=str(paper.get("subtitle") or ""),
        date=cover_date(paper.get("date")),
        leave_out=leave_out,
        references=str(paper.get("references") or "references.md"),
        site_url=config.site_url or "",
    )


def cover_date(value: Any) -> datetime.date:
    """`extra.paper.date` (YAML reads 2026-12-08 as a date), else the build's date.

    MkDocs takes the build's date from SOURCE_DATE_EPOCH when it is set.
    """
    if value in (None, ""):
        return get_build_datetime().date()
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value).strip())
    except ValueError:
        raise PluginError(
            f"mkdocs.yml: extra.paper.date is {value!r}; write it as YYYY-MM-DD (e.g. 2026-12-08)"
        ) from None


def long_date(day: datetime.date) -> str:
    """2026-12-08 -> 'December 8, 2026' (no zero padding on any OS)."""
    return f"{day:%B} {day.day}, {day.year}"


# --- MkDocs events -------------------------------------------------------------

_nav: Navigation | None = None
# Each page's HTML (the Markdown rendered, before the theme), by source path.
_content: dict[str, str] = {}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Check the settings once, before anything is built."""
    settings(config)
    _content.clear()
    return config


def on_nav(nav: Navigation, config: MkDocsConfig, files: Any) -> Navigation:
    global _nav
    _nav = nav
    return nav


def on_page_content(html_text: str, page: Page, config: MkDocsConfig, files: Any) -> str:
    _content[page.file.src_uri] = html_text
    return html_text


def on_post_build(config: MkDocsConfig) -> None:
    """Write the paper (site/print_page/index.html) from this build's pages."""
    if _nav is None:
        raise PluginError("hooks/paper.py: no navigation was built")
    site = Path(config.site_dir)
    paper = assemble(_nav, _content, settings(config))
    target = site / PAPER_PAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(paper, config, site), encoding="utf-8")
    log.debug(f"paper: {len(paper.parts)} parts, {len(paper.contents)} contents entries")


# --- Assembling the paper -------------------------------------------------------


@dataclasses.dataclass
class Entry:
    """A numbered heading: one line of the contents."""

    number: str
    title: str  # without the number
    anchor: str

    @property
    def text(self) -> str:
        return f"{self.number} {self.title}"

    @property
    def depth(self) -> int:
        return self.number.count(".") + 1


@dataclasses.dataclass
class Paper:
    settings: Settings
    parts: list[str]  # HTML of each top-level part, in order
    contents: list[Entry]
    left_out: list[str]  # titles of the pages left out, in nav order
    cited: set[str]  # external URLs the paper's pages link to (references aside)


@dataclasses.dataclass
class _Doc:
    """One page of the site on its way into the paper."""

    page: Page
    key: str
    number: str
    depth: int  # 0: a top-level page; 1: a page inside a part
    html: str = ""
    title_id: str = ""


def page_key(url: str) -> str:
    """'case-study/software/' -> 'case-study-software'; the home page -> 'index'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", url.strip("/")).strip("-") or "index"


def assemble(nav: Navigation, content: dict[str, str], config: Settings) -> Paper:
    """The paper's parts and contents from the nav's pages (see the module docstring)."""
    leave_out = {path.replace("\\", "/") for path in config.leave_out}
    docs: list[_Doc] = []
    left_out: list[str] = []
    layout: list[tuple[str, str, list[_Doc]] | _Doc] = []  # parts (number, title, pages) or pages

    def keep(item: Any) -> bool:
        if item.file.src_uri in leave_out:
            left_out.append(_title_of(item, content))
            return False
        return True

    number = 0
    for item in nav.items:
        if item.is_page and keep(item):
            number += 1
            doc = _Doc(item, page_key(item.url), str(number), 0)
            docs.append(doc)
            layout.append(doc)
        elif item.is_section:
            children = [c for c in item.children if c.is_page and keep(c)]
            if not children:  # a part whose pages are all left out is left out too
                continue
            number += 1
            part = [
                _Doc(child, page_key(child.url), f"{number}.{n}", 1)
                for n, child in enumerate(children, start=1)
            ]
            docs.extend(part)
            layout.append((str(number), item.title, part))
    unknown = leave_out - {p.file.src_uri for p in nav.pages}
    if unknown:
        raise PluginError(
            f"mkdocs.yml: extra.paper.leave_out names pages that are not in the nav: "
            f"{', '.join(sorted(unknown))}"
        )

    # Pass 1: each page's ids and headings, and every target a link may point at.
    targets: dict[str, str | None] = {}  # prefixed id -> its section number (None: unnumbered)
    page_targets: dict[str, str] = {}  # page URL -> the id of its title heading
    entries: dict[str, list[Entry]] = {}
    for doc in docs:
        source = content.get(doc.page.file.src_uri)
        if source is None:
            raise PluginError(f"hooks/paper.py: {doc.page.file.src_uri} was not rendered")
        doc.html, found = _number_headings(_prefix_ids(source, doc.key), doc)
        entries[doc.key] = [entry for entry in found if entry.depth <= CONTENTS_DEPTH]
        for entry in found:
            targets[entry.anchor] = entry.number
        for anchor in re.findall(r'\bid="([^"]+)"', doc.html):
            targets.setdefault(anchor, None)
        page_targets[doc.page.url] = doc.title_id

    # Pass 2: links, then wording.
    site_pages = {page.url: page for page in nav.pages}
    cited: set[str] = set()
    for doc in docs:
        doc.html = _link(doc, page_targets, targets, site_pages, config.site_url)
        doc.html = _keep_code_whole(_paper_wording(doc.html))
        if doc.page.file.src_uri != config.references:
            cited |= _external_links(doc.html)
    for doc in docs:
        if doc.page.file.src_uri == config.references:
            doc.html = _only_cited(doc.html, cited)

    parts: list[str] = []
    contents: list[Entry] = []
    for piece in layout:
        if isinstance(piece, _Doc):
            contents.extend(entries[piece.key])
            parts.append(_section(piece))
        else:
            part_number, title, pages = piece
            anchor = f"part-{part_number}"
            contents.append(Entry(part_number, title, anchor))
            heading = (
                f'<h1 id="{anchor}" class="paper-numbered">{part_number} {html.escape(title)}</h1>'
            )
            inner = "".join(_section(doc) for doc in pages)
            for doc in pages:
                contents.extend(entries[doc.key])
            parts.append(
                f'<section class="paper-part" id="{anchor}-part">{heading}{inner}</section>'
            )
    return Paper(config, parts, contents, left_out, cited)


def _title_of(page: Any, content: dict[str, str]) -> str:
    """A page's title as its first heading says it (the nav title otherwise)."""
    found = re.search(r"<h1[^>]*>(.*?)</h1>", content.get(page.file.src_uri, ""), re.S)
    return _text(found[1]) if found else str(page.title)


def _text(fragment: str) -> str:
    """The text of an HTML fragment, without its permalink sign, whitespace folded."""
    fragment = re.sub(r'<a class="headerlink".*?</a>', "", fragment, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _section(doc: _Doc) -> str:
    css = "paper-part" if doc.depth == 0 else "paper-page"
    return f'<section class="{css}" id="{doc.key}">{_keep_title_with_text(doc.html)}</section>'


# Attributes whose values are ids (space-separated lists for aria-*).
def _keep_title_with_text(source: str) -> str:
    """The page's title, its question and its first subsection's first paragraph
    in one block that is never split (paper.css), so that a title never ends a page.

    Only when that stretch holds nothing but headings, boxes and paragraphs: a
    table or a picture could make the block too tall to move.
    """
    first = re.search(r"<h[3-6]\b", source)
    if first is None:
        return source
    end = source.find("</p>", first.end())
    if end < 0 or re.search(r"<(table|pre|figure|img|svg)\b", source[first.start() : end]):
        return source
    end += len("</p>")
    return f'<div class="paper-keep">{source[:end]}</div>{source[end:]}'


_ID_ATTRS = re.compile(
    r'\b(id|for|aria-labelledby|aria-describedby|aria-controls|aria-owns|headers)="([^"]*)"'
)


def _prefix_ids(source: str, key: str) -> str:
    """Every id of a page, and every reference to one, with `key--` in front."""
    ids = set(re.findall(r'\bid="([^"]+)"', source))
    if not ids:
        return source

    def one(value: str) -> str:
        return f"{key}--{value}" if value in ids else value

    source = _ID_ATTRS.sub(lambda m: f'{m[1]}="{" ".join(one(v) for v in m[2].split())}"', source)
    source = re.sub(r'\b((?:xlink:)?href)="#([^"]*)"', lambda m: f'{m[1]}="#{one(m[2])}"', source)
    return re.sub(r"url\(#([^)\s]+)\)", lambda m: f"url(#{one(m[1])})", source)


_HEADING = re.compile(r"<h([1-6])(\s[^>]*)?>(.*?)</h\1>", re.S)


def _number_headings(source: str, doc: _Doc) -> tuple[str, list[Entry]]:
    """Headings one level down inside a part, numbered where the paper numbers them.

    The page's title (its first h1) gets the page's number; inside a part,
    its h2s get the next level (2.1.1). The permalink signs go.
    """
    found: list[Entry] = []
    sub = 0

    def one(match: re.Match[str]) -> str:
        nonlocal sub
        level, attrs, inner = int(match[1]), match[2] or "", match[3]
        inner = re.sub(r'<a class="headerlink".*?</a>', "", inner, flags=re.S).strip()
        anchor_match = re.search(r'\bid="([^"]+)"', attrs)
        anchor = anchor_match[1] if anchor_match else ""
        number = ""
        if level == 1 and not doc.title_id:
            number = doc.number
            if not anchor:
                anchor = f"{doc.key}--title"
                attrs += f' id="{anchor}"'
            doc.title_id = anchor
        elif level == 2 and doc.depth == 1 and anchor:
            sub += 1
            number = f"{doc.number}.{sub}"
        new_level = min(level + doc.depth, 6)
        if number:
            found.append(Entry(number, _text(inner), anchor))
            attrs = _add_class(attrs, "paper-numbered")
            # Plain text: Chromium leaves a span out of an h1's bookmark.
            inner = f"{number} {inner}"
        return f"<h{new_level}{attrs}>{inner}</h{new_level}>"

    return _HEADING.sub(one, source), found


def _add_class(attrs: str, name: str) -> str:
    if re.search(r'\bclass="', attrs):
        return re.sub(r'\bclass="([^"]*)"', lambda m: f'class="{m[1]} {name}"', attrs, count=1)
    return f'{attrs} class="{name}"'


_LINK = re.compile(r"<a\s([^>]*)>(.*?)</a>", re.S)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def _link(
    doc: _Doc,
    page_targets: dict[str, str],
    targets: dict[str, str | None],
    site_pages: dict[str, Any],
    site_url: str,
) -> str:
    """Links to the paper's own pages as cross-references; links to other pages as text.

    Images and other files of the site are found from print_page/.
    """
    here = doc.page.url if doc.page.url.endswith("/") else posixpath.dirname(doc.page.url)

    def resolve(url: str) -> tuple[str, str]:
        """(site path, fragment) of a relative URL on this page."""
        path, _, fragment = url.partition("#")
        joined = posixpath.normpath(posixpath.join(here, path)) if path else here.rstrip("/")
        joined = "" if joined in {".", ""} else joined
        if path.endswith("/") or (not path and here.endswith("/")):
            joined = f"{joined}/" if joined else ""
        return joined, fragment

    def xref(attrs: str, inner: str, anchor: str) -> str:
        number = targets.get(anchor)
        label = f' data-xref="section {number}"' if number else ""
        kind = "paper-xref paper-xref-section" if number else "paper-xref paper-xref-page"
        attrs = re.sub(r'\bhref="[^"]*"', f'href="#{anchor}"', attrs)
        return f"<a {_add_class(attrs, kind).strip()}{label}>{inner}</a>"

    def one(match: re.Match[str]) -> str:
        attrs, inner = match[1], match[2]
        href_match = re.search(r'\bhref="([^"]*)"', attrs)
        if not href_match:
            return match[0]
        href = html.unescape(href_match[1])
        if href.startswith("#"):
            anchor = href[1:]
            return xref(attrs, inner, anchor) if anchor in targets else match[0]
        if _SCHEME.match(href):
            return match[0]
        path, fragment = resolve(href)
        if path in page_targets:
            anchor = f"{page_key(path)}--{fragment}" if fragment else page_targets[path]
            if anchor not in targets:
                raise PluginError(
                    f"hooks/paper.py: {doc.page.file.src_uri} links to {href}, "
                    "which is not in the paper"
                )
            return xref(attrs, inner, anchor)
        if site_url and (path in site_pages or "." in posixpath.basename(path)):
            absolute = site_url.rstrip("/") + "/" + path + (f"#{fragment}" if fragment else "")
            attrs = re.sub(r'\bhref="[^"]*"', f'href="{html.escape(absolute)}"', attrs, count=1)
            return f"<a {_add_class(attrs, 'paper-offprint').strip()}>{inner}</a>"
        # A page left out of the paper (or a file of the site): its words stay.
        return f'<span class="paper-offprint">{inner}</span>'

    linked = _LINK.sub(one, doc.html)
    # Pictures and other files the page loads, found from print_page/.
    return re.sub(
        r'\bsrc="([^"#:]+)"',
        lambda m: f'src="{posixpath.relpath(resolve(m[1])[0] or ".", "print_page")}"',
        linked,
    )


def _paper_wording(source: str) -> str:
    """PAPER_WORDING applied to the text between tags (never inside <pre>)."""
    parts = re.split(r"(<pre\b.*?</pre>|<[^>]+>)", source, flags=re.S)
    for index in range(0, len(parts), 2):
        for pattern, replacement in PAPER_WORDING:
            parts[index] = pattern.sub(replacement, parts[index])
    return "".join(parts)


def _keep_code_whole(source: str) -> str:
    """Each word of inline code in a span that never breaks (paper.css): a line
    may break between the words of `uv run spike-server`, never inside one."""
    parts = re.split(r"(<pre\b.*?</pre>)", source, flags=re.S)

    def words(match: re.Match[str]) -> str:
        inner = re.sub(r"(\S+)", r'<span class="paper-word">\1</span>', match[2])
        return f"<code{match[1] or ''}>{inner}</code>"

    for index in range(0, len(parts), 2):
        parts[index] = re.sub(r"<code(\s[^>]*)?>([^<]*)</code>", words, parts[index])
    return "".join(parts)


def _external_links(source: str) -> set[str]:
    return {
        html.unescape(href).split("#")[0].rstrip("/")
        for href in re.findall(r'<a\s[^>]*\bhref="(https?://[^"]+)"', source)
    }


def _only_cited(source: str, cited: set[str]) -> str:
    """The references page with only the entries whose sources the paper cites."""

    def entry(match: re.Match[str]) -> str:
        return match[0] if _external_links(match[0]) & cited else ""

    kept = re.sub(r"<li>.*?</li>\s*", entry, source, flags=re.S)
    # A group whose entries were all dropped goes with its heading.
    kept = re.sub(r"<ul>\s*</ul>\s*", "", kept)
    heading = r"<h([2-6])\b[^>]*>(?:(?!</h\1>).)*</h\1>"
    return re.sub(heading + r"\s*(?=<h[2-6]\b|</section>|\Z)", "", kept, flags=re.S)


# --- Rendering -------------------------------------------------------------------


def render(paper: Paper, config: MkDocsConfig, site: Path) -> str:
    """The paper as one HTML document, from docs/overrides/paper.html."""
    root = Path(config.config_file_path).parent
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root / TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    scripts = (config.extra.get("pdf_export") or {}).get("scripts") or {}
    styles = []
    for pattern in MATERIAL_CSS:
        styles.extend(sorted(p.relative_to(site).as_posix() for p in site.glob(pattern)))
    styles += [str(css) for css in config.extra_css] + [PAPER_CSS]
    return env.get_template(TEMPLATE).render(
        config=config,
        paper=paper,
        settings=paper.settings,
        date=long_date(paper.settings.date),
        footer=_css_string(f"{paper.settings.course} \u00b7 {paper.settings.author}"),
        # Inline, so that Paged.js reads them without fetching anything: the
        # paper then lays out even when opened from disk (file://).
        styles=[(path, Markup(_inline_css(site / path))) for path in styles],
        scripts=[
            # paper.js between them: it stops Mermaid drawing on its own and
            # tells Paged.js to wait for the diagrams.
            f"../{path}"
            for path in (scripts.get("mermaid"), PAPER_JS, scripts.get("pagedjs"))
            if path
        ],
        # The pages' own HTML, assembled above: already markup.
        parts=[Markup(part) for part in paper.parts],
    )


def _inline_css(path: Path) -> str:
    """A stylesheet's text, safe inside <style> (it never closes the element)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PluginError(f"hooks/paper.py: cannot read {path} for the paper ({error})") from None
    return text.replace("</style", "<\\/style")


def _css_string(text: str) -> str:
    """`text` as a quoted CSS string."""
    escaped = "".join(
        ch if ch.isalnum() or ch in " .,:;()&-" else f"\\{ord(ch):x} " for ch in text
    )
    return f'"{escaped}"'
