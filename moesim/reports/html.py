"""A small self-contained HTML report: sections, tables and matplotlib figures embedded as base64 PNG.

Every figure is also written as a PNG file beside the page (``figures/``) so it can be reused in a
paper or slide; the page itself needs nothing but the one HTML file. Each figure carries a title
with units and one sentence saying what question it answers, so a reader who did not run it can
follow it.
"""

from __future__ import annotations

import base64
import html
import io
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.io import atomic_write_bytes, atomic_write_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin-bottom:.2em} p.sub{color:#555;margin-top:0}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:.93em;margin-top:.3em}
div.tablewrap{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:.88em} th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f4f4f4;text-align:left;vertical-align:bottom}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{background:#fff8e1;border-left:4px solid #f0c000;padding:.4em .8em}
code{background:#f4f4f4;padding:0 3px}
"""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (headless, deterministic)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No timestamps in the PNG metadata: the same data gives the same bytes.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    return buf.getvalue()


def fmt(value: Any) -> str:
    """A table cell: integers (also integral floats, e.g. counts read back from a table with gaps)
    with thousands separators and no decimals; other floats with 4 significant digits."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1e5:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.4g}"
    return str(value)


def fmt_bytes(n: Any) -> str:
    """Bytes for a reader: GiB with 3 significant digits at least (MiB below 1 GiB)."""
    if n is None or (isinstance(n, float) and n != n):
        return "–"
    n = float(n)
    if abs(n) >= 2**30:
        g = n / 2**30
        return f"{g:,.0f} GiB" if abs(g) >= 1000 else f"{g:.3g} GiB" if abs(g) < 100 else f"{g:.1f} GiB"
    if abs(n) >= 2**20:
        return f"{n / 2**20:.3g} MiB"
    return f"{n:,.0f} B"


@dataclass
class HtmlReport:
    title: str
    subtitle: str = ""
    figures_dir: Path | None = None  # PNG copies of the figures; None = embed only
    parts: list[str] = field(default_factory=list)
    figure_files: list[Path] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, cls: str | None = None) -> None:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{html.escape(text)}</p>")

    def html(self, raw: str) -> None:
        self.parts.append(raw)

    def table(self, df: pd.DataFrame, caption: str | None = None, max_rows: int = 200) -> None:
        """A table that scrolls sideways inside the page when it is wider; columns named ``bytes*``
        are shown in GiB (the CSVs keep bytes)."""
        rows = df.head(max_rows)
        out = ["<div class='tablewrap'><table>"]
        if caption:
            out.append(f"<caption style='caption-side:top;text-align:left'>{html.escape(caption)}</caption>")
        # long snake_case headers may wrap after an underscore, never inside a word
        out.append(
            "<tr>"
            + "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in rows.columns)
            + "</tr>"
        )
        for rec in rows.itertuples(index=False):
            cells = []
            for col, v in zip(rows.columns, rec):
                num = isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_))
                text = fmt_bytes(v) if num and str(col).startswith("bytes") else fmt(v)
                cells.append(f"<td{' class=num' if num else ''}>{html.escape(text)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table></div>")
        if len(df) > max_rows:
            out.append(f"<p>({len(df) - max_rows} more rows in the CSV)</p>")
        self.parts.append("\n".join(out))

    def figure(self, fig: Any, name: str, title: str, question: str) -> None:
        """Embed ``fig``; ``question`` is the one sentence saying what the figure answers."""
        data = png_bytes(fig)
        if self.figures_dir is not None:
            path = self.figures_dir / f"{name}.png"
            atomic_write_bytes(path, data)
            self.figure_files.append(path)
        b64 = base64.b64encode(data).decode("ascii")
        self.parts.append(
            f"<figure id='{html.escape(name)}'><h3>{html.escape(title)}</h3>"
            f"<img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(question)}</figcaption></figure>"
        )

    def render(self) -> str:
        sub = f"<p class='sub'>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n"
            f"<body><h1>{html.escape(self.title)}</h1>{sub}\n{body}\n</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        atomic_write_text(path, self.render())
        return path
