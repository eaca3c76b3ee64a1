"""QR codes for people: the one place the firmware makes them (the bridge line in a terminal, and
SVG for the LAN status page).

Why a dependency (segno) and not our own encoder: a correct encoder is Reed-Solomon, version and
format information, eight masks scored by the standard's penalty rules - a few hundred lines
that only matter when a phone fails to scan. segno is a small pure-Python package with no
dependencies of its own, maintained for years, and does exactly this (ISO/IEC 18004) in both
forms we need. Error correction M: a code shown on a screen or printed on paper is read fine.
"""

import io

__all__ = ["terminal_qr", "svg_qr"]


def _code(text: str):
    import segno

    return segno.make(text, error="m", micro=False, boost_error=False)


def terminal_qr(text: str) -> str:
    """`text` as a QR code of half-block characters (two modules per character row), light
    modules drawn: right for the usual dark terminal background."""
    out = io.StringIO()
    _code(text).terminal(out=out, compact=True, border=2)
    return out.getvalue()


def svg_qr(text: str, *, scale: int = 4) -> str:
    """`text` as a standalone SVG document (dark modules on white)."""
    out = io.BytesIO()
    _code(text).save(out, kind="svg", scale=scale, border=4, xmldecl=False)
    return out.getvalue().decode("utf-8")
