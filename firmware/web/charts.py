"""Small inline SVG line charts for the status page (pure; no script, no external assets)."""

import html
import time


def _fmt(v: float) -> str:
    if abs(v) >= 1e9:
        return f"{v / 1e9:.1f}G"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.0f}k"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.1f}"


def line_chart(points, *, title: str, unit: str, t0: float, t1: float, step_s: int,
               width: int = 320, height: int = 120) -> str:
    """points [(t, v)] between t0 and t1 -> an SVG; a gap of more than two steps breaks the
    line (the box was off), and no points says so in words."""
    left, right, top, bottom = 34, 6, 18, 18
    pw, ph = width - left - right, height - top - bottom
    head = (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="{html.escape(title)}">'
            f'<text x="2" y="12" class="ct">{html.escape(title)}'
            f'{" (" + html.escape(unit) + ")" if unit else ""}</text>')
    pts = [(t, v) for t, v in points if t0 <= t <= t1]
    frame = (f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="cf"/>'
             f'<text x="{left}" y="{height - 4}" class="cl">{_clock(t0, t1 - t0)}</text>'
             f'<text x="{width - right}" y="{height - 4}" class="cl" text-anchor="end">now</text>')
    if not pts:
        return (head + frame + f'<text x="{left + pw / 2}" y="{top + ph / 2 + 4}" '
                f'text-anchor="middle" class="cl">no data yet</text></svg>')
    lo = min(v for _, v in pts)
    hi = max(v for _, v in pts)
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if lo else (0, 1)
    span = t1 - t0 or 1

    def xy(t, v):
        return (left + (t - t0) / span * pw, top + ph - (v - lo) / (hi - lo) * ph)

    segments, cur, prev_t = [], [], None
    for t, v in pts:
        if prev_t is not None and t - prev_t > 2 * step_s:
            segments.append(cur)
            cur = []
        cur.append(xy(t, v))
        prev_t = t
    segments.append(cur)
    body = []
    for seg in segments:
        if len(seg) == 1:
            x, y = seg[0]
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5" class="cd"/>')
        else:
            body.append('<polyline class="cp" points="'
                        + " ".join(f"{x:.1f},{y:.1f}" for x, y in seg) + '"/>')
    labels = (f'<text x="{left - 3}" y="{top + 8}" class="cl" text-anchor="end">{_fmt(hi)}</text>'
              f'<text x="{left - 3}" y="{top + ph}" class="cl" text-anchor="end">{_fmt(lo)}</text>')
    return head + frame + labels + "".join(body) + "</svg>"


def _clock(t0: float, span: float) -> str:
    if span <= 2 * 86_400:
        return "24 h ago" if span >= 86_000 else time.strftime("%H:%M", time.gmtime(t0))
    return f"{round(span / 86_400)} days ago"
