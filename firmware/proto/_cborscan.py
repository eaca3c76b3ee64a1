"""A pure-Python structural check of CBOR bytes, for cbor2 versions without decoder options.

cbor2 < 6 (Debian bookworm ships 5.4.6) cannot be told to refuse semantic tags, bound nesting
depth, refuse indefinite lengths or duplicate keys. This walks the item heads once (no values
are built) and enforces the same subset as codec.py's fast path, so cbor2.loads only ever sees
bytes that decode to plain data. Slower (~µs per item) but only a fallback.
"""

from .errors import MalformedFrame

_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}


def _fail(what, detail, fix="send one CBOR map with text keys, definite lengths, no tags"):
    raise MalformedFrame(f"{what} body is not valid CBOR for this protocol ({detail}); {fix}")


def scan(body, max_depth, what="frame"):
    """Raise MalformedFrame unless ``body`` is exactly one item in the allowed CBOR subset.

    (That the item is a map is checked by the caller after decoding.)
    """
    b = bytes(body)
    n = len(b)
    pos = 0
    # open containers: [items left, is_map, keys seen]
    stack = []
    while True:
        if pos >= n:
            _fail(what, "premature end of data")
        ib = b[pos]
        major, ai = ib >> 5, ib & 31
        pos += 1
        if ai < 24:
            val = ai
        elif ai < 28:
            w = _WIDTH[ai]
            if pos + w > n:
                _fail(what, "premature end of data")
            val = int.from_bytes(b[pos : pos + w], "big")
            pos += w
        elif ai == 31:
            _fail(what, "indefinite length or break code is not allowed")
        else:
            _fail(what, f"reserved additional information {ai}")
        parent = stack[-1] if stack else None
        is_key = parent is not None and parent[1] and parent[0] % 2 == 0
        if is_key and major not in (2, 3):
            _fail(what, "map key must be a text string or byte string")
        if major == 6:
            _fail(what, f"CBOR tag {val} is not allowed")
        if major in (2, 3):
            if val > n - pos:
                _fail(what, f"declared length {val} exceeds the {n - pos} bytes left")
            if is_key:
                key = (major, b[pos : pos + val])
                if key in parent[2]:
                    _fail(what, "duplicate map key")
                parent[2].add(key)
            pos += val
        if parent is not None:
            parent[0] -= 1
        if major in (4, 5):
            items = val * 2 if major == 5 else val
            if items > n - pos:
                _fail(what, f"declared {items} items exceed the {n - pos} bytes left")
            if len(stack) >= max_depth:
                _fail(what, f"maximum container nesting depth ({max_depth}) exceeded")
            stack.append([items, major == 5, set()])
        while stack and stack[-1][0] == 0:
            stack.pop()
        if not stack:
            break
    if pos != n:
        raise MalformedFrame(
            f"{what} body has {n - pos} trailing bytes after the CBOR map; "
            "put exactly one map in a frame"
        )
