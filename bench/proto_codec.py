"""Per-request cost of firmware.proto's codec vs the bare-cbor2 floor.

ours  = encode_frame(request map) + FrameDecoder.receive_data/next_event + parse_request
floor = cbor2.dumps(same map) + cbor2.loads(those bytes)   (no framing, no safety, no schema)

Also reported (informational): encode_request (client side, validates first), encode_ok of a
store result, check_signature (Ed25519 verify). Prints one JSON object, then a one-line summary.
Medians over RUNS runs; the machine is noisy.

    .venv/bin/python bench/proto_codec.py [--runs 7] [--number 20000]
"""

import argparse
import json
import statistics
import sys
import time
from importlib.metadata import version

import cbor2
import nacl.signing

from firmware.proto import (
    NEED_DATA,
    DeleteRequest,
    FrameDecoder,
    RetrieveRequest,
    StoreRequest,
    StoreResult,
    check_signature,
    decode_map,
    encode_frame,
    encode_ok,
    encode_request,
    parse_request,
    request_to_map,
    sign_request,
)

NOW = 1_700_000_000_000


def sample_requests():
    key = nacl.signing.SigningKey(b"\x05" * 32)
    rcpt = bytes(key.verify_key)
    return {
        "store_1k_ns0": StoreRequest(1, rcpt, 0, NOW, 86_400_000, b"\xaa" * 1024),
        "store_75k_ns0": StoreRequest(1, rcpt, 0, NOW, 86_400_000, b"\xaa" * 76_800),
        "store_1k_signed": StoreRequest(
            2,
            rcpt,
            3,
            NOW,
            86_400_000,
            b"\xaa" * 1024,
            NOW,
            sign_request(key, "store", rcpt, 3, NOW),
        ),
        "retrieve": RetrieveRequest(
            3, rcpt, 3, NOW, sign_request(key, "retrieve", rcpt, 3, NOW), b"\x01" * 32
        ),  # fmt: skip
        "delete_10": DeleteRequest(
            4,
            rcpt,
            3,
            tuple(bytes([i]) * 32 for i in range(10)),
            NOW,
            sign_request(key, "delete", rcpt, 3, NOW),
        ),  # fmt: skip
    }


BATCHES = 10


def per_call_us(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number * 1e6


def measure(req, number):
    m = request_to_map(req)
    frame = encode_frame(m)
    blob = cbor2.dumps(m)
    dumps, loads = cbor2.dumps, cbor2.loads

    def floor():
        loads(dumps(m))

    dec = FrameDecoder()

    def ours():
        dec.receive_data(encode_frame(request_to_map(req)))
        parse_request(dec.next_event())

    def server_only():
        dec.receive_data(frame)
        parse_request(dec.next_event())

    assert parse_request(loads(blob)) == req
    ours()
    assert dec.next_event() is NEED_DATA
    fns = {
        "floor_us": floor,
        "ours_us": ours,
        "server_decode_parse_us": server_only,
        "encode_request_us": lambda: encode_request(req),
    }
    # interleave small batches so floor and ours see the same machine load; median per batch
    batches = {k: [] for k in fns}
    for _ in range(BATCHES):
        for k, fn in fns.items():
            batches[k].append(per_call_us(fn, max(1, number // BATCHES)))
    return {k: statistics.median(v) for k, v in batches.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=20_000)
    a = ap.parse_args()
    reqs = sample_requests()
    runs = {name: [] for name in reqs}
    extra = {"encode_ok_store_us": [], "check_signature_us": [], "decode_map_us": []}
    body = encode_frame(request_to_map(reqs["store_1k_signed"]))[4:]
    result = StoreResult(b"\x02" * 32, True, NOW + 1)
    signed = reqs["retrieve"]
    for _ in range(a.runs):
        for name, req in reqs.items():
            runs[name].append(measure(req, a.number))
        extra["encode_ok_store_us"].append(per_call_us(lambda: encode_ok(9, result), a.number))
        extra["decode_map_us"].append(per_call_us(lambda: decode_map(body), a.number))
        extra["check_signature_us"].append(
            per_call_us(lambda: check_signature(signed, NOW), max(200, a.number // 20))
        )
    out = {"runs": a.runs, "number": a.number, "python": sys.version.split()[0],
           "cbor2": version("cbor2"), "requests": {}}  # fmt: skip
    for name, samples in runs.items():
        med = {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}
        med["ratio_ours_vs_floor"] = round(med["ours_us"] / med["floor_us"], 2)
        out["requests"][name] = med
    for k, v in extra.items():
        out[k] = round(statistics.median(v), 3) if v else None
    print(json.dumps(out, indent=2))
    parts = [
        f"{n}: {r['ours_us']:.1f} us vs floor {r['floor_us']:.1f} us ({r['ratio_ours_vs_floor']}x)"
        for n, r in out["requests"].items()
    ]
    server = max(r["server_decode_parse_us"] for r in out["requests"].values())
    print(
        f"proto_codec (median of {a.runs} runs): "
        + "; ".join(parts)
        + f"; server side (frame decode + parse) at most {server:.1f} us = "
        + f"{server / 106 * 100:.1f}% of the 106 us/request server floor"
        + f"; Ed25519 check_signature {out['check_signature_us']:.1f} us"
    )


if __name__ == "__main__":
    main()
