"""fetch_page's page to text: what kind of content a body is, its charset, and readable text.

Pure functions over bytes and strings (no I/O). HTML is reduced to its main
content (``<main>``/``<article>``, else the body without navigation chrome)
with block structure kept as line and paragraph breaks; JSON is indented
when that fits the character budget; everything is clipped at a word.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Literal

from lxml import etree  # type: ignore[import-untyped]
from lxml import html as lxml_html

__all__ = ["ContentKind", "clip", "decode", "html_to_text", "kind_of", "pretty_json", "sniff"]

ContentKind = Literal["html", "json", "text", "binary", "unknown"]

_TEXT_TYPES = {
    "application/javascript",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/rss+xml",
    "application/atom+xml",
    "application/x-sh",
    "application/toml",
}


def kind_of(mime: str) -> ContentKind:
    if mime in ("text/html", "application/xhtml+xml"):
        return "html"
    if mime == "application/json" or mime.endswith("+json"):
        return "json"
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+xml"):
        return "text"
    if not mime:
        return "unknown"
    return "binary"


def sniff(head: bytes) -> ContentKind:
    sample = head[:1024]
    if b"\x00" in sample:
        return "binary"
    lowered = sample.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<body" in lowered:
        return "html"
    return "text"


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode(body: bytes, content_type: str, truncated: bool, *, html: bool) -> str:
    charset = None
    match = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
    if match:
        charset = match.group(1)
    elif body.startswith(codecs.BOM_UTF8):
        charset = "utf-8-sig"
    elif html and (meta := _META_CHARSET.search(body[:4096])):
        charset = meta.group(1).decode("ascii")
    candidates = [charset] if charset else ["utf-8", "cp1252"]
    for name in candidates:
        try:
            decoder = codecs.getincrementaldecoder(name)(errors="strict" if name == "utf-8" and not charset else "replace")
            # final=False when cut short: a multi-byte character split by the
            # cut is dropped instead of becoming garbage.
            return decoder.decode(body, final=not truncated)
        except LookupError:
            continue
        except UnicodeDecodeError:
            continue
    return body.decode("utf-8", errors="replace")


def pretty_json(text: str, max_chars: int) -> str:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    # Indentation can multiply the size of dense JSON; fall back to compact
    # rather than spend the character budget on spaces.
    return pretty if len(pretty) <= max_chars else json.dumps(value, ensure_ascii=False)


def clip(text: str, max_chars: int) -> tuple[str, bool]:
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ", max_chars - 200)
    return (cut[:space] if space > 0 else cut).rstrip() + " […]", True


# fmt: off
# Never part of the readable text.
_SKIP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "embed",
    "head", "button", "select", "option", "textarea", "input", "dialog",
})
# Page chrome dropped when no <main>/<article> tells us where the content is.
_CHROME_TAGS = frozenset({"nav", "header", "footer", "aside"})
# Line breaks around these; paragraph breaks (a blank line) around the second set.
_BLOCK_TAGS = frozenset({
    "address", "aside", "body", "caption", "dd", "div", "dt", "fieldset", "figcaption", "form", "li",
    "nav", "summary", "tr",
})
_PARAGRAPH_TAGS = frozenset({
    "article", "blockquote", "details", "dl", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "main", "ol", "p", "section", "table", "ul",
})
# fmt: on
_PARA = "\x01"  # a paragraph break, resolved by _tidy into at most one blank line
_PRE_MARK = "\x00"  # tags lines from <pre> so _tidy keeps their indentation


def html_to_text(html: str) -> tuple[str, str]:
    """(title, readable text) of an HTML document."""
    # libxml2 rather than an HTML5 parser: lexbor (selectolax) went quadratic
    # on deeply nested blocks (a 400 kB page of nested <li> took 8 s of
    # uncancellable CPU); libxml2 stays linear and gives up past depth 2048.
    parser = lxml_html.HTMLParser(remove_comments=True, remove_pis=True, no_network=True, encoding="utf-8", huge_tree=True)
    try:
        doc = lxml_html.document_fromstring(html.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, ValueError):
        return "", ""
    title_node = doc.find(".//title")
    title = " ".join((title_node.text_content() if title_node is not None else "").split())
    if not title:
        og = doc.xpath('string(//meta[@property="og:title"]/@content)')
        title = " ".join(str(og).split())
    root = _main_content(doc)
    if root is None:
        return title[:300], ""
    if not title and (h1 := root.find(".//h1")) is not None:
        title = " ".join(h1.text_content().split())
    return title[:300], _render(root, drop_chrome=root.tag == "body")


def _visible_length(node: lxml_html.HtmlElement) -> int:
    return len("".join(node.itertext()).split())


def _main_content(doc: lxml_html.HtmlElement) -> lxml_html.HtmlElement | None:
    body = doc.find("body")
    candidates = doc.xpath("//main | //*[@role='main']") or doc.xpath("//article")
    if candidates:
        best = max(candidates, key=_visible_length)
        # A tiny <main> (a cookie notice, an app shell) is worse than the whole body.
        if body is None or _visible_length(best) >= 30 or _visible_length(body) < 60:
            return best
    return body if body is not None else doc


def _render(root: lxml_html.HtmlElement, *, drop_chrome: bool) -> str:
    parts: list[str] = []
    # An explicit stack of elements still to visit and strings to emit: pages
    # nest deeper than Python's recursion limit allows.
    stack: list[lxml_html.HtmlElement | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        tail = _inline(item.tail or "") if item is not root else ""
        tag = item.tag if isinstance(item.tag, str) else ""
        if not tag or tag in _SKIP_TAGS or (drop_chrome and tag in _CHROME_TAGS) or _hidden(item):
            parts.append(tail)  # the text after a skipped element still belongs to its parent
            continue
        if tag == "br":
            parts.append("\n" + tail)
            continue
        if tag == "pre":
            lines = item.text_content().splitlines()
            parts.append(f"\n{_PARA}\n" + "\n".join(_PRE_MARK + line for line in lines) + f"\n{_PARA}\n")
            parts.append(tail)
            continue
        opening, closing = "", ""
        if tag in _PARAGRAPH_TAGS:
            opening, closing = f"\n{_PARA}\n", f"\n{_PARA}\n"
        elif tag in _BLOCK_TAGS:
            opening, closing = "\n", "\n"
        if tag == "li":
            opening += "- "
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            opening += "#" * int(tag[1]) + " "
        elif tag in ("td", "th"):
            closing = " | "
        parts.append(opening + _inline(item.text or ""))
        stack.append(closing + tail)
        stack.extend(reversed(item))
    return _tidy("".join(parts))


def _hidden(node: lxml_html.HtmlElement) -> bool:
    return node.get("hidden") is not None or node.get("aria-hidden") == "true"


_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+|\n")


def _inline(text: str) -> str:
    # Source newlines inside running text are just spaces; block structure
    # comes from the tags.
    return _SPACES.sub(" ", text)


def _tidy(text: str) -> str:
    lines: list[str] = []
    pending_break = False
    for raw in text.split("\n"):
        if raw.startswith(_PRE_MARK):
            line = raw[1:].rstrip()
        else:
            line = " ".join(raw.split()).strip(" |")
            if line == _PARA:
                pending_break = bool(lines)
                continue
            if line in ("-", "#", "##", "###", "####", "#####", "######"):
                continue
            if not line:
                continue
        if pending_break:
            lines.append("")
            pending_break = False
        lines.append(line)
    return "\n".join(lines).strip("\n")
