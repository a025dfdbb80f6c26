"""HTML assembly: one self-contained page. Figures are PNGs inlined as data: URIs and the CSS is inline, so
the file can be mailed, archived or opened offline; it references nothing outside itself (no scripts, no
fonts, no links but #anchors)."""

import base64
from dataclasses import dataclass, field
from html import escape

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #e3e6ec; --accent: #2f5fb3; --bg: #f5f6f8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
header { background: #1d2a44; color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c4cde0; font-size: 13px; word-break: break-all; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; position: sticky; top: 0; z-index: 1; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; font-size: 13px; white-space: nowrap; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 22px 18px;
  margin-bottom: 20px; }
h2 { font-size: 17px; margin: 0 0 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
p.intro { color: var(--muted); margin: 0 0 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 4px 28px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; }
table.kv th { width: 38%; font-weight: 500; }
.scroll { overflow-x: auto; }
figure { margin: 10px 0 4px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 6px; }
.note { background: #fff7e0; border-left: 3px solid #e0a800; padding: 6px 10px; margin: 8px 0; font-size: 13px; }
details summary { cursor: pointer; color: var(--accent); margin: 10px 0 4px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px; font-size: 12px;
      overflow-x: auto; max-height: 480px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 0 0 24px; }
"""


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)  # HTML fragments made by the functions below


def page(title: str, subtitle: str, sections: list[Section], footer: str) -> str:
    links = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}"><h2>{escape(s.title)}</h2>'
        + (f'<p class="intro">{escape(s.intro)}</p>' if s.intro else "")
        + "".join(s.blocks)
        + "</section>"
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: the page loads nothing from outside
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header><nav>{links}</nav>\n"
        f"<main>\n{body}\n</main><footer>{escape(footer)}</footer></body></html>\n"
    )


def image(png: bytes, id: str, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{id}"><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def key_values(title: str, pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in pairs)
    return f'<div><h3>{escape(title)}</h3><table class="kv">{rows}</table></div>'


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{escape(cell)}</td>' for cell in row) + "</tr>" for row in rows)
    heading = f"<h3>{escape(title)}</h3>" if title else ""
    return f'<div>{heading}<div class="scroll"><table><tr>{head}</tr>{body}</table></div></div>'


def grid(*blocks: str) -> str:
    return f'<div class="grid">{"".join(blocks)}</div>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def details(summary: str, text: str) -> str:
    return f"<details><summary>{escape(summary)}</summary><pre>{escape(text)}</pre></details>"
