"""The one QR code encoder of the firmware (byte mode, versions 1-10, ISO/IEC 18004), pure: the
node id on the status page, the bridge line on the page and in a terminal.

Why our own and not `segno` (a fine, pure-Python library, used by the tests to check this one):
importing it adds ~1.9 MiB to an idle node (bench/web_rss.py: 35.6 -> 37.5 MiB median, 1.24x ->
1.30x the floor, at the edge of the 1.3x budget with nothing else left); this file is all the page needs - one short string, byte
mode, versions 1-10 - and the tests compare its matrices module for module with segno's at every
version, level and mask, and decode what it renders with zbarimg.

    matrix = encode("b516...c37")      # list of rows of bools, True = dark
    svg = to_svg(matrix)               # with the 4-module quiet zone
    text = terminal_qr("homenode-bridge://...")   # half-block characters for a terminal
"""

EC_BITS = {"L": 1, "M": 0, "Q": 3, "H": 2}

# version -> level -> (ec codewords per block, [(blocks, data codewords per block), ...])
BLOCKS = {
    1: {"L": (7, [(1, 19)]), "M": (10, [(1, 16)]), "Q": (13, [(1, 13)]), "H": (17, [(1, 9)])},
    2: {"L": (10, [(1, 34)]), "M": (16, [(1, 28)]), "Q": (22, [(1, 22)]), "H": (28, [(1, 16)])},
    3: {"L": (15, [(1, 55)]), "M": (26, [(1, 44)]), "Q": (18, [(2, 17)]), "H": (22, [(2, 13)])},
    4: {"L": (20, [(1, 80)]), "M": (18, [(2, 32)]), "Q": (26, [(2, 24)]), "H": (16, [(4, 9)])},
    5: {"L": (26, [(1, 108)]), "M": (24, [(2, 43)]), "Q": (18, [(2, 15), (2, 16)]),
        "H": (22, [(2, 11), (2, 12)])},
    6: {"L": (18, [(2, 68)]), "M": (16, [(4, 27)]), "Q": (24, [(4, 19)]), "H": (28, [(4, 15)])},
    7: {"L": (20, [(2, 78)]), "M": (18, [(4, 31)]), "Q": (18, [(2, 14), (4, 15)]),
        "H": (26, [(4, 13), (1, 14)])},
    8: {"L": (24, [(2, 97)]), "M": (22, [(2, 38), (2, 39)]), "Q": (22, [(4, 18), (2, 19)]),
        "H": (26, [(4, 14), (2, 15)])},
    9: {"L": (30, [(2, 116)]), "M": (22, [(3, 36), (2, 37)]), "Q": (20, [(4, 16), (4, 17)]),
        "H": (24, [(4, 12), (4, 13)])},
    10: {"L": (18, [(2, 68), (2, 69)]), "M": (26, [(4, 43), (1, 44)]),
         "Q": (24, [(6, 19), (2, 20)]), "H": (28, [(6, 15), (2, 16)])},
}
ALIGN = {1: [], 2: [6, 18], 3: [6, 22], 4: [6, 26], 5: [6, 30], 6: [6, 34], 7: [6, 22, 38],
         8: [6, 24, 42], 9: [6, 26, 46], 10: [6, 28, 50]}

MASKS = (
    lambda r, c: (r + c) % 2 == 0,
    lambda r, c: r % 2 == 0,
    lambda r, c: c % 3 == 0,
    lambda r, c: (r + c) % 3 == 0,
    lambda r, c: (r // 2 + c // 3) % 2 == 0,
    lambda r, c: (r * c) % 2 + (r * c) % 3 == 0,
    lambda r, c: ((r * c) % 2 + (r * c) % 3) % 2 == 0,
    lambda r, c: ((r + c) % 2 + (r * c) % 3) % 2 == 0,
)

# GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1
_EXP = [0] * 512
_LOG = [0] * 256
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]


def _gf_mul(a, b):
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def _rs_generator(degree):
    g = [1]
    for i in range(degree):
        nxt = [0] * (len(g) + 1)
        for j, coef in enumerate(g):
            nxt[j] ^= coef
            nxt[j + 1] ^= _gf_mul(coef, _EXP[i])
        g = nxt
    return g  # highest degree first, g[0] == 1


def rs_remainder(data, degree):
    gen = _rs_generator(degree)
    rem = [0] * degree
    for byte in data:
        factor = byte ^ rem[0]
        rem = rem[1:] + [0]
        for i in range(degree):
            rem[i] ^= _gf_mul(gen[i + 1], factor)
    return rem


def data_capacity(version, level):
    _ec, groups = BLOCKS[version][level]
    return sum(n * k for n, k in groups)


def pick_version(nbytes, level):
    for v in range(1, 11):
        count_bits = 8 if v < 10 else 16
        if 4 + count_bits + 8 * nbytes <= 8 * data_capacity(v, level):
            return v
    raise ValueError(f"{nbytes} bytes do not fit a version-10 QR code at level {level}")


def codewords(data: bytes, version: int, level: str) -> list[int]:
    """Data bits (byte mode), padded, split into blocks, each with its RS codewords,
    interleaved as the symbol carries them."""
    cap = data_capacity(version, level)
    bits = [0, 1, 0, 0]
    count_bits = 8 if version < 10 else 16
    bits += [(len(data) >> i) & 1 for i in range(count_bits - 1, -1, -1)]
    for byte in data:
        bits += [(byte >> i) & 1 for i in range(7, -1, -1)]
    bits += [0] * min(4, cap * 8 - len(bits))
    bits += [0] * (-len(bits) % 8)
    out = [int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8)]
    pad = 0xEC
    while len(out) < cap:
        out.append(pad)
        pad ^= 0xEC ^ 0x11
    ec_len, groups = BLOCKS[version][level]
    blocks, pos = [], 0
    for n, k in groups:
        for _ in range(n):
            blocks.append(out[pos:pos + k])
            pos += k
    ecs = [rs_remainder(b, ec_len) for b in blocks]
    result = []
    for i in range(max(len(b) for b in blocks)):
        result += [b[i] for b in blocks if i < len(b)]
    for i in range(ec_len):
        result += [e[i] for e in ecs]
    return result


def _bch(value, bits, poly, poly_bits):
    rem = value << (poly_bits - 1)
    for shift in range(bits + poly_bits - 2, poly_bits - 2, -1):
        if rem >> shift & 1:
            rem ^= poly << (shift - poly_bits + 1)
    return value << (poly_bits - 1) | rem


class _Symbol:
    def __init__(self, version):
        self.version = version
        self.size = 17 + 4 * version
        n = self.size
        self.dark = [[False] * n for _ in range(n)]
        self.fixed = [[False] * n for _ in range(n)]
        self._functions()

    def set(self, r, c, dark):
        self.dark[r][c] = dark
        self.fixed[r][c] = True

    def _functions(self):
        n = self.size
        for r0, c0 in ((0, 0), (0, n - 7), (n - 7, 0)):
            for dr in range(-1, 8):
                for dc in range(-1, 8):
                    r, c = r0 + dr, c0 + dc
                    if 0 <= r < n and 0 <= c < n:
                        ring = max(abs(dr - 3), abs(dc - 3))
                        self.set(r, c, ring in (0, 1, 3))
        for i in range(8, n - 8):
            self.set(6, i, i % 2 == 0)
            self.set(i, 6, i % 2 == 0)
        pos = ALIGN[self.version]
        corners = {(pos[0], pos[0]), (pos[0], pos[-1]), (pos[-1], pos[0])} if pos else set()
        for r in pos:
            for c in pos:
                if (r, c) in corners:  # would overlap a finder
                    continue
                for dr in range(-2, 3):
                    for dc in range(-2, 3):
                        self.set(r + dr, c + dc, max(abs(dr), abs(dc)) != 1)
        self.format_bits("M", 0)  # reserve; rewritten per mask
        if self.version >= 7:
            bits = _bch(self.version, 6, 0x1F25, 13)
            for i in range(18):
                b = bool(bits >> i & 1)
                a, k = n - 11 + i % 3, i // 3
                self.set(a, k, b)
                self.set(k, a, b)

    def format_bits(self, level, mask):
        n = self.size
        bits = _bch(EC_BITS[level] << 3 | mask, 5, 0x537, 11) ^ 0x5412
        bit = [bool(bits >> i & 1) for i in range(15)]
        for i in range(6):
            self.set(i, 8, bit[i])
        self.set(7, 8, bit[6])
        self.set(8, 8, bit[7])
        self.set(8, 7, bit[8])
        for i in range(9, 15):
            self.set(8, 14 - i, bit[i])
        for i in range(8):
            self.set(8, n - 1 - i, bit[i])
        for i in range(8, 15):
            self.set(n - 15 + i, 8, bit[i])
        self.set(n - 8, 8, True)  # the dark module

    def place(self, words):
        n = self.size
        bits = [(w >> (7 - i)) & 1 for w in words for i in range(8)]
        k = 0
        col = n - 1
        while col >= 1:
            if col == 6:
                col = 5
            upward = ((col + 1) & 2) == 0
            for v in range(n):
                r = n - 1 - v if upward else v
                for c in (col, col - 1):
                    if not self.fixed[r][c]:
                        self.dark[r][c] = k < len(bits) and bits[k] == 1
                        k += 1
            col -= 2

    def masked(self, mask):
        f = MASKS[mask]
        return [[d != (not self.fixed[r][c] and f(r, c)) for c, d in enumerate(row)]
                for r, row in enumerate(self.dark)]


def penalty(m):
    """The standard's four penalty rules (runs, 2x2 blocks, finder-like runs, dark balance)."""
    n = len(m)
    score = 0
    lines = m + [list(col) for col in zip(*m, strict=True)]
    finder_a = [True, False, True, True, True, False, True, False, False, False, False]
    finder_b = finder_a[::-1]
    for line in lines:
        run, prev = 0, None
        for x in line:
            if x == prev:
                run += 1
            else:
                if run >= 5:
                    score += run - 2
                run, prev = 1, x
        if run >= 5:
            score += run - 2
        for i in range(n - 10):
            window = line[i:i + 11]
            if window == finder_a or window == finder_b:
                score += 40
    for r in range(n - 1):
        for c in range(n - 1):
            if m[r][c] == m[r][c + 1] == m[r + 1][c] == m[r + 1][c + 1]:
                score += 3
    dark = sum(map(sum, m))
    score += 10 * (abs(dark * 20 - n * n * 10) // (n * n))
    return score


def encode(text, level: str = "M", mask: int | None = None, version: int | None = None):
    """`text` (str -> UTF-8, or bytes) -> the module matrix, True = dark."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if version is None:
        version = pick_version(len(data), level)
    elif pick_version(len(data), level) > version:
        raise ValueError(f"{len(data)} bytes do not fit version {version} at level {level}")
    sym = _Symbol(version)
    sym.place(codewords(data, version, level))
    best = None
    for m in range(8) if mask is None else (mask,):
        sym.format_bits(level, m)
        matrix = sym.masked(m)
        score = penalty(matrix) if mask is None else 0
        if best is None or score < best[0]:
            best = (score, m, matrix)
    sym.format_bits(level, best[1])
    return sym.masked(best[1])


def to_svg(matrix, module_px: int = 4, quiet: int = 4, title: str = "") -> str:
    """An inline SVG (one path of dark modules) with the quiet zone the standard asks for."""
    n = len(matrix) + 2 * quiet
    runs = []
    for r, row in enumerate(matrix):
        c = 0
        while c < len(row):
            if row[c]:
                start = c
                while c < len(row) and row[c]:
                    c += 1
                runs.append(f"M{start + quiet} {r + quiet}h{c - start}v1h-{c - start}z")
            else:
                c += 1
    label = f"<title>{title}</title>" if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {n} {n}" '
            f'width="{n * module_px}" height="{n * module_px}" shape-rendering="crispEdges" '
            f'role="img">{label}<rect width="{n}" height="{n}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(runs)}"/></svg>')


def svg_qr(text: str, *, scale: int = 4) -> str:
    """`text` as a standalone SVG document (dark modules on white)."""
    return to_svg(encode(text), module_px=scale)


def terminal_qr(text: str, *, quiet: int = 2) -> str:
    """`text` as a QR code of half-block characters, two module rows per text row, the light
    modules drawn (right for the usual dark terminal background; phones read both ways)."""
    m = encode(text)
    n = len(m) + 2 * quiet

    def light(r, c):
        r, c = r - quiet, c - quiet
        return not (0 <= r < len(m) and 0 <= c < len(m) and m[r][c])

    glyphs = {(True, True): "\u2588", (True, False): "\u2580", (False, True): "\u2584",
              (False, False): " "}
    lines = []
    for r in range(0, n, 2):
        lines.append("".join(glyphs[(light(r, c), r + 1 < n and light(r + 1, c))]
                             for c in range(n)))
    return "\n".join(lines) + "\n"
