"""Small inline SVG charts, rendered on the server: no JavaScript charting library."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

COLOURS = ("#2563eb", "#d97706", "#dc2626", "#16a34a", "#7c3aed", "#0891b2")


def chart(series: dict[str, list[int]], width: int = 260, height: int = 56,
          colours: dict[str, str] | None = None) -> Markup:
    """One polyline per series over the same minutes (oldest first), scaled to the largest
    value; a title per series says its total, for hover and for screen readers."""
    top = max((max(values, default=0) for values in series.values()), default=0) or 1
    lines = []
    for i, (name, values) in enumerate(series.items()):
        colour = (colours or {}).get(name, COLOURS[i % len(COLOURS)])
        step = width / max(len(values) - 1, 1)
        points = " ".join(f"{x * step:.1f},{height - 2 - v / top * (height - 4):.1f}"
                          for x, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{points}"><title>{escape(name)}: {sum(values)} in the window'
                     f"</title></polyline>")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="per-minute chart, peak {top}">'
        f'<line x1="0" y1="{height - 1}" x2="{width}" y2="{height - 1}" class="axis"/>'
        + "".join(lines) + f'<text x="2" y="10" class="peak">{top}/min</text></svg>'
    )


def legend(names: list[str], colours: dict[str, str] | None = None) -> Markup:
    items = [f'<span class="key" style="--c:{(colours or {}).get(n, COLOURS[i % len(COLOURS)])}">'
             f"{escape(n)}</span>" for i, n in enumerate(names)]
    return Markup(" ".join(items))


DELIVERY_COLOURS = {"ok": "#16a34a", "retrying": "#d97706", "failed": "#dc2626"}
