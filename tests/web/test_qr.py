"""Our QR encoder against segno (function patterns, format and version information, module for
module) and against a real decoder (zbarimg reads what we render back to the exact text)."""

import shutil
import subprocess

import pytest
import segno

from firmware import qr
from tests.web.pngs import matrix_png

NODE_ID = "b5165e7ff8291b94dc8bfa1f24f8417651251777c6834b270967b2c90da15c37"


def zbarimg(path) -> str:
    exe = shutil.which("zbarimg")
    assert exe, "zbarimg is missing: install Debian's zbar-tools (scripts/setup.sh does)"
    r = subprocess.run([exe, "-q", "--raw", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.rstrip("\n")


@pytest.mark.parametrize("version", range(1, 11))
@pytest.mark.parametrize("level", "LMQH")
def test_every_module_matches_segno(version, level):
    # A text that fills the symbol exactly (mode, count, data and a 4-bit terminator end on the
    # last data bit), so the two encoders have no padding choice left: every module must agree.
    count_bits = 8 if version < 10 else 16
    n = qr.data_capacity(version, level) - (count_bits + 8) // 8
    text = bytes((i * 37 + 11) % 256 for i in range(n))
    for mask in range(8):
        ours = qr.encode(text, level=level, mask=mask, version=version)
        theirs = segno.make_qr(text, error=level, mask=mask, mode="byte", version=version,
                               boost_error=False)
        assert ours == [[bool(x) for x in row] for row in theirs.matrix], (version, level, mask)


def test_codewords_read_back_from_the_matrix():
    for text, level in ((NODE_ID, "M"), ("hello", "H"), ("z" * 200, "L")):
        version = qr.pick_version(len(text), level)
        for mask in range(8):
            m = qr.encode(text, level=level, mask=mask)
            sym = qr._Symbol(version)
            bits, n, col = [], sym.size, sym.size - 1
            while col >= 1:
                col = 5 if col == 6 else col
                up = ((col + 1) & 2) == 0
                for v in range(n):
                    r = n - 1 - v if up else v
                    for c in (col, col - 1):
                        if not sym.fixed[r][c]:
                            bits.append(int(m[r][c] != qr.MASKS[mask](r, c)))
                col -= 2
            words = [int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits) - 7, 8)]
            want = qr.codewords(text.encode(), version, level)
            assert words[:len(want)] == want


def test_reed_solomon_known_vector():
    # ISO/IEC 18004 annex I example ("01234567", 1-M): the published EC codewords
    data = [16, 32, 12, 86, 97, 128, 236, 17, 236, 17, 236, 17, 236, 17, 236, 17]
    assert qr.rs_remainder(data, 10) == [165, 36, 212, 193, 237, 54, 199, 135, 44, 85]


def test_node_id_decodes_with_zbarimg_at_every_mask(tmp_path):
    for mask in [None, *range(8)]:
        m = qr.encode(NODE_ID, mask=mask)
        assert len(m) == 37  # version 5-M: 64 bytes
        assert zbarimg(matrix_png(m, tmp_path / f"id-{mask}.png")) == NODE_ID
    for text in ("a", "homenode", "é unicode ✓", "y" * 170):
        assert zbarimg(matrix_png(qr.encode(text), tmp_path / "t.png")) == text


def test_svg_is_self_contained_and_has_a_quiet_zone():
    svg = qr.to_svg(qr.encode(NODE_ID), module_px=3, title="node id")
    assert svg.startswith("<svg") and 'viewBox="0 0 45 45"' in svg and "http" not in \
        svg.replace("http://www.w3.org/2000/svg", "")
    assert "M4 4h7v1h-7z" in svg  # the top-left finder's first row, 4 modules in


def test_too_long_is_a_clear_error():
    with pytest.raises(ValueError, match="do not fit a version-10"):
        qr.encode("x" * 400, level="H")


def test_the_bridge_line_in_a_terminal_decodes(tmp_path):
    """terminal_qr's half blocks, redrawn as pixels, decode (zbarimg) to the line itself."""
    import subprocess

    line = "homenode-bridge://203.0.113.7:443/" + "A" * 43 + "?s=" + "b" * 43
    rows = qr.terminal_qr(line).splitlines()
    top = {"\u2588": (1, 1), "\u2580": (1, 0), "\u2584": (0, 1), " ": (0, 0)}
    pixels = []  # light = 1 in the terminal drawing
    for text in rows:
        pairs = [top[ch] for ch in text]
        pixels.append([p[0] for p in pairs])
        pixels.append([p[1] for p in pairs])
    scale = 6
    w, h = len(pixels[0]) * scale, len(pixels) * scale
    pgm = tmp_path / "t.pgm"
    with open(pgm, "wb") as f:  # light modules white, dark black, as a terminal shows them
        f.write(b"P5 %d %d 255\n" % (w, h))
        for row in pixels:
            line_px = bytes(255 if v else 0 for v in row for _ in range(scale))
            f.write(line_px * scale)
    out = subprocess.run(["zbarimg", "--raw", "-q", str(pgm)], capture_output=True, text=True)
    assert out.stdout.strip() == line, out.stderr
