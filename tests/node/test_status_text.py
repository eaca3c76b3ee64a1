"""The human `status` rendering: exact output for a small info map."""

from firmware.status_text import jsonable, status_text


def test_status_text_exact():
    info = jsonable({
        "node_id": b"\xab" * 4, "state": "serving", "time": 1_800_000_000_000, "messages": 3,
        "quota_bytes": 3 * 1024**3, "zeta": None, "alpha": True, "peers": ["a", "b"],
        "device": {"temp_c": 45.0, "bandwidth": {"up_bytes": 2048}},
    })
    assert status_text(info) == "\n".join([
        "node id      abababab",
        "state        serving",
        "time         2027-01-15 08:00:00 UTC",
        "messages     3",
        "quota bytes  3221225472 (3.0 GiB)",
        "alpha        yes",
        "peers        a, b",
        "zeta         -",
        "device:",
        "  temp c  45.0",
        "  bandwidth:",
        "    up bytes  2048 (2.0 KiB)",
    ])
