"""Field validators shared by the request and response schemas (private).

Each takes the map, the key and an ``err`` class plus a request id so the raised error names the
field and can be answered with the right id. Exact type checks (``type(v) is int``) on purpose:
``True`` is not an int on this wire, and subclasses never come out of the CBOR decoder.
"""

MISSING = object()


def type_name(v):
    if v is None:
        return "null"
    return {bool: "bool", int: "int", bytes: "bytes", str: "text", list: "array", dict: "map",
            float: "float"}.get(type(v), type(v).__name__)  # fmt: skip


def get_int(m, key, lo, hi, err, rid, default=MISSING):
    v = m.get(key, MISSING)
    if v is MISSING:
        if default is MISSING:
            raise err(f"missing; add an integer {lo}..{hi}", field=key, request_id=rid)
        return default
    if type(v) is not int:
        raise err(f"must be an integer {lo}..{hi}, got {type_name(v)}", field=key, request_id=rid)
    if not lo <= v <= hi:
        raise err(f"{v} is out of range, must be {lo}..{hi}", field=key, request_id=rid)
    return v


def get_bytes(m, key, size, err, rid):
    """Exactly ``size`` bytes."""
    v = m.get(key, MISSING)
    if type(v) is not bytes:
        what = "missing" if v is MISSING else f"got {type_name(v)}"
        raise err(f"must be {size} bytes, {what}", field=key, request_id=rid)
    if len(v) != size:
        raise err(f"must be exactly {size} bytes, got {len(v)}", field=key, request_id=rid)
    return v


def get_bool(m, key, err, rid):
    v = m.get(key, MISSING)
    if type(v) is not bool:
        what = "missing" if v is MISSING else f"got {type_name(v)}"
        raise err(f"must be true or false, {what}", field=key, request_id=rid)
    return v


def get_text(m, key, max_len, err, rid):
    v = m.get(key, MISSING)
    if type(v) is not str:
        what = "missing" if v is MISSING else f"got {type_name(v)}"
        raise err(f"must be text, {what}", field=key, request_id=rid)
    if len(v) > max_len:
        raise err(f"is {len(v)} characters, at most {max_len} allowed", field=key, request_id=rid)
    return v


def get_hash_list(m, key, size, max_items, err, rid, min_items=1):
    """A list of ``size``-byte strings, deduplicated in order, returned as a tuple."""
    v = m.get(key, MISSING)
    if type(v) is not list:
        what = "missing" if v is MISSING else f"got {type_name(v)}"
        raise err(f"must be an array of {size}-byte hashes, {what}", field=key, request_id=rid)
    if not min_items <= len(v) <= max_items:
        raise err(
            f"has {len(v)} entries, must have {min_items}..{max_items}; split into several "
            "requests",
            field=key,
            request_id=rid,
        )
    for i, h in enumerate(v):
        if type(h) is not bytes or len(h) != size:
            got = f"{len(h)} bytes" if type(h) is bytes else type_name(h)
            raise err(f"must be {size} bytes, got {got}", field=f"{key}[{i}]", request_id=rid)
    return tuple(dict.fromkeys(v))


def check_keys(m, allowed, err, rid, where):
    if not m.keys() <= allowed:
        extra = sorted(m.keys() - allowed, key=repr)
        field = extra[0] if type(extra[0]) is str else repr(extra[0])
        raise err(
            f"unknown key(s) {', '.join(map(repr, extra))} in {where}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}",
            field=field,
            request_id=rid,
        )
