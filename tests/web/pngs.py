"""A minimal PNG writer for tests (grey, 8-bit): a QR matrix -> a file zbarimg can read."""

import struct
import zlib


def matrix_png(matrix, path, scale=6, quiet=4):
    n = len(matrix) + 2 * quiet
    rows = []
    for r in range(n):
        line = bytearray()
        for c in range(n):
            rr, cc = r - quiet, c - quiet
            dark = 0 <= rr < len(matrix) and 0 <= cc < len(matrix) and matrix[rr][cc]
            line += bytes([0 if dark else 255]) * scale
        rows.extend([b"\x00" + bytes(line)] * scale)
    width = n * scale

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, width, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)
    return path
