"""Reduce a Sphinx-generated HTML page to plain text with the standard library only.

Keeps the article body (the RTD theme's itemprop="articleBody", the classic theme's div.body role=main),
drops navigation, scripts, styles and the pilcrow permalinks; <pre> keeps its line breaks, everything else
has its whitespace collapsed, and block elements end lines.
"""

import re
from html.parser import HTMLParser

_BLOCK = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "pre", "table", "tr", "h1", "h2", "h3", "h4", "h5",
          "h6", "blockquote", "section", "br", "hr", "figure", "figcaption", "caption", "th"}
_SKIP = {"script", "style", "noscript", "template"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


def _is_body(tag, attrs):
    a = dict(attrs)
    if a.get("itemprop") == "articleBody":
        return True
    return tag == "div" and a.get("role") == "main" and "body" in (a.get("class") or "").split()


class _Extractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # open elements inside the body; 0 = outside
        self.skip = 0  # open elements inside a skipped element
        self.pre = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if self.depth == 0:
            if _is_body(tag, attrs):
                self.depth = 1
            return
        if tag in _VOID:
            if tag in _BLOCK and not self.skip:
                self.parts.append("\n")
            return
        self.depth += 1
        cls = (dict(attrs).get("class") or "").split()
        if self.skip or tag in _SKIP or "headerlink" in cls or "linenos" in cls:
            self.skip += 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        elif tag == "td":
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if self.depth == 0 or tag in _VOID:
            return
        self.depth -= 1
        if self.skip:
            self.skip -= 1
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.depth == 0 or self.skip:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def html_to_text(html):
    """Plain text of the page's article body ('' when the page has none)."""
    p = _Extractor()
    p.feed(html)
    p.close()
    text = _CONTROL.sub("", "".join(p.parts)).replace("\u00b6", "")
    lines = [ln.rstrip() for ln in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text + "\n" if text else ""
