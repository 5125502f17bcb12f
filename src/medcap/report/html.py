"""HTML pieces of the report: escaping, embedded images, tables, the page template.

The page is one file: CSS inline (in ``template.html``), every image a ``data:`` URI, no
script and no external fetch, so ``report.html`` can be mailed or archived on its own.
"""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def esc(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def data_uri(path: str | Path) -> str:
    """A ``data:`` URI holding the file's bytes (PNG, JPEG or SVG)."""
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def image_data_uri(image, fmt: str = "PNG") -> str:
    """A ``data:`` URI of a PIL image (JPEG for photographs keeps the page small)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(path: str | Path, alt: str, cls: str = "figure") -> str:
    return f'<img class="{esc(cls)}" src="{data_uri(path)}" alt="{esc(alt)}">'


def figure(path: str | Path, caption: str) -> str:
    return (f'<figure>{img(path, caption)}<figcaption>{esc(caption)} '
            f'<span class="file">({esc(Path(path).name)})</span></figcaption></figure>')


def fmt_number(value: object, digits: int = 4) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return '<span class="na">n/a</span>'
        return f"{value:.{digits}f}"
    return esc(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, cls: str = "",
          numeric_from: int = 1, highlight: Sequence[int] = (), digits: int = 4) -> str:
    """An HTML table; cells are escaped unless they are already ``Markup`` strings."""
    head = "".join(f"<th{' class=num' if i >= numeric_from else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            content = cell if isinstance(cell, Markup) else fmt_number(cell, digits)
            cells.append(f"<td{' class=num' if i >= numeric_from else ''}>{content}</td>")
        body.append(f"<tr{' class=best' if r in highlight else ''}>{''.join(cells)}</tr>")
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class Markup(str):
    """A string that is already HTML (not escaped again by :func:`table`)."""


def note(text: str, kind: str = "muted") -> str:
    return f'<p class="note {esc(kind)}">{esc(text)}</p>'


def render_page(*, title: str, subtitle: str, banner: str, nav: Sequence[tuple[str, str]], body: str,
                footer: str) -> str:
    """Fill ``template.html`` (shipped as package data) with the page parts."""
    template = Template((resources.files("medcap.report") / "template.html").read_text(encoding="utf-8"))
    nav_html = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in nav)
    return template.substitute(title=esc(title), subtitle=subtitle, banner=banner, nav=nav_html, body=body,
                               footer=footer)


def section(section_id: str, title: str, content: str, intro: str = "") -> str:
    intro_html = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{intro_html}{content}</section>'


def chips(items: Sequence[tuple[str, str]]) -> str:
    """Concept chips: (label, kind) with kind one of hit, miss, extra, plain."""
    if not items:
        return '<span class="na">none</span>'
    return "".join(f'<span class="chip {esc(kind)}">{esc(label)}</span>' for label, kind in items)
