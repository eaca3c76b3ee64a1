"""The status page as HTML, pure: the node's `info` map, its history and the LED table in; one
self-contained document out (inline CSS and SVG, no script, no external assets).

Why the LED words come from `hal.core.led`: the box's light, the README table, `homenode
status` and this page must say the same thing, so all of them read the one table in code.
"""

import html
import time

from firmware.status_text import bootstrap_note, human_bytes, human_duration
from firmware.web.charts import line_chart
from firmware.web.history import History
from hal.core import led

CSS = """
:root{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--ink:#1b1f24;--mute:#5b6572;--line:#d9dee5}
@media (prefers-color-scheme:dark){:root{--bg:#14171b;--card:#1e2227;--ink:#e8ebef;--mute:#9aa4b1;--line:#333a42}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);
font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:760px;margin:0 auto;padding:12px}
h1{font-size:1.15rem;margin:4px 0 10px}h2{font-size:1rem;margin:0 0 8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px;margin:0 0 12px}
.led{display:flex;gap:14px;align-items:center}
.dot{width:44px;height:44px;border-radius:50%;flex:none;border:3px solid var(--line)}
.state{font-size:1.3rem;font-weight:650}.why{color:var(--mute)}.todo{margin-top:6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0}
dt{color:var(--mute)}dd{margin:0;overflow-wrap:anywhere}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
.bar{height:8px;background:var(--line);border-radius:4px;overflow:hidden;margin-top:3px}
.bar i{display:block;height:100%;background:#2f7de1}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:8px}
.chart{width:100%;height:auto}.ct{font-size:11px;fill:var(--ink)}.cl{font-size:9px;fill:var(--mute)}
.cf{fill:none;stroke:var(--line)}.cp{fill:none;stroke:#2f7de1;stroke-width:1.5}.cd{fill:#2f7de1}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border-top:1px solid var(--line);
padding:5px 4px;text-align:left;vertical-align:top}
button{font:inherit;padding:8px 14px;border-radius:8px;border:1px solid var(--line);
background:var(--card);color:var(--ink)}
.qr{background:#fff;padding:4px;border-radius:6px;line-height:0;flex:none}
.idrow{display:flex;gap:14px;align-items:center;flex-wrap:wrap}.idrow p{margin:4px 0;overflow-wrap:anywhere}
.idrow>div:last-child{min-width:0;flex:1 1 220px}
.note{background:#fff4d6;color:#3b2f00;border-radius:8px;padding:8px 10px;margin:8px 0 0}
a{color:#2f7de1}footer{color:var(--mute);font-size:.85rem;text-align:center;margin:10px 0 20px}
"""


def esc(v) -> str:
    return html.escape("-" if v is None or v == "" else str(v))


def css_colour(rgb) -> str:
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


def led_css(name: str) -> str:
    """A keyframe animation of the state's rhythm, so the dot on the page blinks like the box."""
    p = led.state_pattern(name)
    colour = css_colour(p.colour)
    ring = f".dot{{border-color:{colour}}}"
    if not p.rhythm:
        return ring + f".dot{{background:{colour}}}"
    frames, t = [], 0
    for i, ms in enumerate(p.rhythm):
        c = colour if i % 2 == 0 else "transparent"
        frames.append(f"{t / p.period_ms * 100:.3f}%{{background:{c}}}")
        frames.append(f"{(t + ms) / p.period_ms * 100 - 0.001:.3f}%{{background:{c}}}")
        t += ms
    return (ring + f"@keyframes blink{{{''.join(frames)}}}"
            f".dot{{background:{colour};animation:blink {p.period_ms}ms step-end infinite}}"
            "@media (prefers-reduced-motion:reduce){.dot{animation:none}}")


def led_table_html() -> str:
    rows = []
    for row in sorted(led.STATES, key=lambda r: r[1]):
        p = led.state_pattern(row[0])
        rows.append(f"<tr><td><b>{esc(p.meaning)}</b><br><span class=mono>{esc(p.name)}</span>"
                    f"</td><td>{esc(p.describe())}, {esc(led.colour_name(p.colour))}"
                    f"{', red lamp on' if p.pwr else ''}</td><td>{esc(p.action)}</td></tr>")
    return ("<table><tr><th>State</th><th>Light</th><th>What to do</th></tr>"
            + "".join(rows) + "</table>")


def _bar(used, total) -> str:
    if not used or not total or total <= 0:
        return ""
    pct = max(0.0, min(100.0, used / total * 100))
    return f'<div class=bar><i style="width:{pct:.1f}%"></i></div>'


def render_page(info: dict, history: History | None, *, token: str, qr_svg: str,
                now_s: float | None = None, flash: str = "") -> str:
    """`info` after `jsonable`. `token` goes into the identify form (see guard.post_allowed)."""
    now_s = time.time() if now_s is None else now_s
    state = info.get("health") or "booting"
    try:
        pat = led.state_pattern(state)
    except ValueError:
        pat = led.state_pattern("fatal_error")
    dev = info.get("device") or {}
    bw = dev.get("bandwidth") or {}
    st = dev.get("storage") or {}
    nid = str(info.get("node_id", ""))
    overlay = dev.get("led_overlay")
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f'<meta name=viewport content="width=device-width,initial-scale=1">'
             f'<meta http-equiv=refresh content="15;url=/">'
             f"<title>homenode {esc(nid[:8])}: {esc(pat.meaning)}</title>"
             f"<style>{CSS}{led_css(pat.name)}</style></head><body><main>"]
    parts.append(f"<h1>homenode <span class=mono>{esc(nid[:8])}</span></h1>")
    reason = info.get("health_reason") or ""
    parts.append(
        f'<section class="card led" id=led data-state="{esc(pat.name)}">'
        f'<div class=dot title="the light on the box"></div><div>'
        f'<div class=state>{esc(pat.meaning)}</div>'
        f'<div class=why>{esc(reason) if reason else "The light: " + esc(pat.describe())}</div>'
        f"<div class=todo><b>What to do:</b> {esc(pat.action)}</div>"
        + (f'<div class=why>Showing now: {esc(overlay)} (button feedback)</div>' if overlay
           else "") + "</div></section>")
    note = bootstrap_note(info)
    if flash:
        parts.append(f"<p class=note>{esc(flash)}</p>")
    lone = (info.get("join") or {}).get("bootstrap") == "off"
    facts = [
        ("Reachable", "not on the network: a lone mailbox ([network] enabled = false)" if lone
         else f"{esc(info.get('reachability'))}"
         + (f"<br><span class=why>{esc(info.get('reachability_advice'))}</span>"
            if info.get("reachability_advice") else "")),
        ("Peers", f"{esc(info.get('peers_live', 0))} live of {esc(info.get('peers_known', 0))} "
         "known"),
        ("Swarm share", _share(info)),
        ("Messages held", f"{esc(info.get('messages'))} ({human_bytes(info.get('bytes'))} of "
         f"{human_bytes(info.get('quota_bytes'))} allowed)"
         + _bar(info.get("bytes"), info.get("quota_bytes"))),
        ("Storage", f"{human_bytes(st.get('free_bytes'))} free on the card; written today "
         f"{human_bytes(st.get('written_today_bytes'))} of "
         f"{human_bytes(st.get('write_budget_bytes'))}"
         + _bar(st.get("written_today_bytes"), st.get("write_budget_bytes"))
         + (f"<br><span class=why>{esc(st.get('problem'))}</span>" if st.get("problem") else "")),
        ("Temperature", f"{esc(dev.get('temp_c'))} °C ({esc(dev.get('thermal_tier'))})"
         if dev.get("temp_c") is not None else
         f"no sane reading ({esc(dev.get('thermal_tier'))}: the box assumes it is warm)"),
        ("Bandwidth", _bandwidth(bw)),
        ("Up for", human_duration(info.get("uptime_s"))),
        ("Version", esc(info.get("version"))),
    ]
    if isinstance(info.get("update"), dict):
        facts.append(("Update", ", ".join(f"{esc(k)}: {esc(v)}"
                                          for k, v in sorted(info["update"].items()))))
    parts.append("<section class=card><h2>This box</h2><dl>"
                 + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
                 + (f"<p class=note id=join>{esc(note)}</p>" if note else "") + "</section>")
    parts.append(
        "<section class=card id=identity><h2>Its id</h2><div class=idrow>"
        f'<div class=qr title="the full node id as a QR code">{qr_svg}</div><div>'
        f"<p>Short id <b class=mono>{esc(nid[:16])}</b></p>"
        f'<p class="mono why">{esc(nid)}</p></div></div>'
        '<form method=post action="/identify"><input type=hidden name=token '
        f'value="{esc(token)}"><p><button type=submit>Blink the light</button> '
        "<span class=why>so you know which box this is</span></p></form></section>")
    parts.append(_charts(history, now_s))
    parts.append("<section class=card><h2>What the light means</h2>" + led_table_html()
                 + "</section>")
    parts.append('<footer><a href="/diag.tar.gz">Diagnostics bundle</a> (no keys, no messages) '
                 '· <a href="/status.json">status.json</a> · <a href="/metrics">metrics</a>'
                 "</footer></main></body></html>")
    return "".join(parts)


def _share(info) -> str:
    k = info.get("swarm_k")
    live = info.get("peers_live") or 0
    held = info.get("swarm_recipients")
    if not k:
        return f"{esc(held)} mailboxes" if held is not None else "-"
    share = min(1.0, k / (live + 1))
    return (f"one of {k} copies of about {share * 100:.0f}% of all mailboxes "
            f"({esc(held)} mailboxes here)")


def _bandwidth(bw: dict) -> str:
    used, cap = bw.get("used_bytes"), bw.get("cap_bytes")
    text = f"up {human_bytes(bw.get('up_bytes'))}, down {human_bytes(bw.get('down_bytes'))}"
    if cap:
        text += f"; {human_bytes(used)} of the {human_bytes(cap)} monthly cap" + _bar(used, cap)
        rate = bw.get("paced_rate")
        if isinstance(rate, int | float) and rate >= 0:
            text += f"<br><span class=why>paced to {human_bytes(rate)}/s so the cap lasts " \
                    "the month</span>"
    else:
        text += " this month (no cap set)"
    return text


CHARTS = (("temp_c", "Temperature", "°C"), ("traffic", "Traffic", "bytes"),
          ("messages", "Messages held", ""), ("peers_live", "Live peers", ""))


def _charts(history: History | None, now_s: float) -> str:
    if history is None:
        return ""
    out = []
    for tier_name, title, span in (("day", "Last 24 hours", 86_400),
                                   ("month", "Last 30 days", 30 * 86_400)):
        try:
            tier = history.tier(tier_name)
        except KeyError:
            continue
        charts = []
        for series, label, unit in CHARTS:
            if series == "traffic":
                up = dict(tier.points("up_bytes"))
                down = dict(tier.points("down_bytes"))
                pts = sorted((t, up.get(t, 0) + down.get(t, 0)) for t in set(up) | set(down))
            else:
                pts = tier.points(series)
            charts.append(line_chart(pts, title=label, unit=unit, t0=now_s - span, t1=now_s,
                                     step_s=tier.step_s))
        out.append(f"<section class=card><h2>{title}</h2><div class=charts>"
                   + "".join(charts) + "</div></section>")
    return "".join(out)
