"""HTML of the sandbox's pages, as pure functions of the catalog (no server, no I/O).

The gallery listing and detail pages are rendered here for both the sandbox server
(``/gallery/?page=N``) and the static benchmark site (``tests/static_site.py``,
``/gallery/page/N.html``); a :class:`GalleryLayout` says where the pages of one of them live.
The bundled ``sandbox`` gallery profile parses both.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from tests.sandbox.catalog import Entry


def document(title: str, body: str, *, lang: str | None = "en", head: str = "") -> str:
    """A whole HTML document: UTF-8, escaped ``title``, extra ``head`` markup, ``body`` as given."""
    lang_attr = f' lang="{lang}"' if lang else ""
    return (
        f'<!DOCTYPE html>\n<html{lang_attr}><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{head}</head>\n<body>\n{body}\n</body></html>\n"
    )


@dataclass(frozen=True, slots=True)
class GalleryLayout:
    """Where a gallery's pages live and what frames them."""

    page_href: str  # listing page N, a format string with ``{page}``
    home_href: str  # the "Back to the gallery" link of detail pages
    lang: str | None = "en"  # the <html lang> attribute (None: none)
    footer: bool = True  # listing pages end with a footer (Home; on page 1 also a robots-disallowed link)


#: The sandbox server's gallery.
SANDBOX_GALLERY = GalleryLayout(page_href="/gallery/?page={page}", home_href="/gallery/")


def gallery_listing(layout: GalleryLayout, entries: Sequence[Entry], page: int, n_pages: int) -> str:
    """Listing page ``page`` of ``n_pages``: a ``div.grid`` of ``a.card`` links and a pager."""
    cards = "\n".join(
        f'<a class="card" href="/gallery/item/{html.escape(e.id)}">'
        f'<img class="thumb" src="{html.escape(e.image_path)}" alt=""></a>'
        for e in entries
    )
    parts = [
        f'<h1>Gallery</h1>\n<p class="page">Page {page} of {n_pages}</p>',
        f'<div class="grid">\n{cards}\n</div>',
    ]
    nav = []
    if page > 1:
        nav.append(f'<a class="prev" rel="prev" href="{layout.page_href.format(page=page - 1)}">Previous</a>')
    if page < n_pages:
        nav.append(f'<a class="next" rel="next" href="{layout.page_href.format(page=page + 1)}">Next</a>')
    parts.append(f'<nav class="pager">{" ".join(nav)}</nav>')
    if layout.footer:
        footer = '<footer><a href="/">Home</a>'
        if page == 1:
            footer += ' <a class="staff" href="/private/staff.html">Staff only</a>'
        parts.append(footer + "</footer>")
    return document(f"Gallery page {page}", "\n".join(parts), lang=layout.lang)


def gallery_detail(layout: GalleryLayout, entry: Entry) -> str:
    """The detail page of ``entry``: the image, author and time, and (when shown) prompt and parameters."""
    esc = html.escape
    parts = [
        f"<h1>{esc(entry.id)}</h1>",
        f'<figure class="artwork"><img class="main" src="{esc(entry.image_path)}" '
        f'width="{entry.width}" height="{entry.height}" alt=""></figure>',
        f'<p class="author">by <span class="username">{esc(entry.username)}</span> '
        f'<time datetime="{esc(entry.created_at)}">{esc(entry.created_at)}</time></p>',
    ]
    if entry.show_meta:
        parts.append(f'<p class="prompt">{esc(entry.prompt)}</p>')
        if entry.negative_prompt is not None:
            parts.append(f'<p class="negative-prompt">{esc(entry.negative_prompt)}</p>')
        params = (
            ("Steps", entry.steps),
            ("Sampler", entry.sampler),
            ("CFG scale", entry.cfg_scale),
            ("Seed", entry.seed),
            ("Model", entry.model),
        )
        dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in params)
        parts.append(f'<dl class="params">{dl}</dl>')
    parts.append(f'<p><a href="{layout.home_href}">Back to the gallery</a></p>')
    return document(f"Gallery item {entry.id}", "\n".join(parts), lang=layout.lang)
