"""Per-hop onion cost vs the pure crypto floor, measured in the same run.

floor:  X25519 + BLAKE2b + XChaCha20-Poly1305 open of a 1 KiB layer (libsodium via PyNaCl).
peel:   firmware.proto.onion.peel of the same layer (floor + CBOR decode + checks + replay
        cache) plus sealing the carried-back response: the pure, in-process part of a hop.
relay:  server CPU (user+sys of a real node process, from /proc via psutil) per layer it peeled
        and forwarded to a next hop, with a client driving it over real TLS links on loopback.
        The next hop is another real node; only the middle node's CPU is counted.

Target (issue 4): relay <= 2.5 x floor. Prints one JSON object and a one-line summary.
Usage: .venv/bin/python bench/onion_hop.py [--runs 5] [--layers 3000] [--no-relay]
"""

import argparse
import json
import os
import statistics
import sys
import time

import cbor2
import nacl.bindings as sodium

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from firmware.proto import onion  # noqa: E402

PAYLOAD = 1024
NOW = 1_790_000_000_000


def _keys(seed):
    pk, sk = sodium.crypto_sign_seed_keypair(bytes([seed]) * 32)
    return (pk, sodium.crypto_sign_ed25519_sk_to_curve25519(sk),
            sodium.crypto_sign_ed25519_pk_to_curve25519(pk))  # fmt: skip


def _layers(n, hop_pub, next_id):
    """n distinct 1 KiB-inner middle-hop layers for one hop (distinct ephemeral keys)."""
    nxt = onion.NextHop(next_id, "127.0.0.1", 7001)
    out = []
    for _ in range(n):
        pt = cbor2.dumps({"next": nxt.to_cbor(), "inner": os.urandom(PAYLOAD), "ts": NOW})
        out.append(onion.seal_layer(hop_pub, os.urandom(32), os.urandom(24), pt)[0])
    return out


def floor_us(layers, secret, pub):
    """The crypto floor per layer: scalarmult + BLAKE2b key + AEAD open, nothing else."""
    t0 = time.process_time()
    for blob in layers:
        eph = blob[1:33]
        shared = sodium.crypto_scalarmult(secret, eph)
        key = onion.layer_key(shared, eph, pub)
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(blob[57:], blob[:33], blob[33:57], key)
    return (time.process_time() - t0) / len(layers) * 1e6


def peel_us(layers, secret, pub):
    """Pure hop work: peel + seal a 1 KiB carried response."""
    replay = onion.ReplayCache()
    resp = os.urandom(PAYLOAD)
    nonce = os.urandom(24)
    t0 = time.process_time()
    for blob in layers:
        p = onion.peel(blob, secret, pub, now_ms=NOW, position=1, replay=replay)
        onion.seal_response(p.key, nonce, onion.TAG_CARRIED, resp)
    return (time.process_time() - t0) / len(layers) * 1e6


relay_cpu_us = None  # filled in when the relay service lands


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=3000)
    ap.add_argument("--no-relay", action="store_true", help="skip the real-process relay part")
    args = ap.parse_args()

    _, secret, pub = _keys(1)
    next_id = _keys(2)[0]
    floors, peels = [], []
    for _ in range(args.runs):
        layers = _layers(args.layers, pub, next_id)
        floors.append(floor_us(layers, secret, pub))
        peels.append(peel_us(layers, secret, pub))
    out = {
        "payload_bytes": PAYLOAD,
        "runs": args.runs,
        "layers_per_run": args.layers,
        "floor_us": round(statistics.median(floors), 1),
        "floor_us_all": [round(x, 1) for x in floors],
        "peel_us": round(statistics.median(peels), 1),
        "peel_us_all": [round(x, 1) for x in peels],
    }
    out["peel_over_floor"] = round(out["peel_us"] / out["floor_us"], 2)
    out["floor_hops_per_s_per_core"] = round(1e6 / out["floor_us"])

    if not args.no_relay and relay_cpu_us is None:
        out["relay_skipped"] = "the node daemon (firmware/node.py) has no onion relay yet"
    elif not args.no_relay:
        relays = [relay_cpu_us(args.layers) for _ in range(max(1, args.runs // 2))]
        out["relay_us"] = round(statistics.median(relays), 1)
        out["relay_us_all"] = [round(x, 1) for x in relays]
        out["relay_over_floor"] = round(out["relay_us"] / out["floor_us"], 2)
        out["target_relay_over_floor"] = 2.5

    print(json.dumps(out))
    line = (f"onion hop: floor {out['floor_us']} us ({out['floor_hops_per_s_per_core']}/s/core), "
            f"pure peel+seal {out['peel_us']} us = {out['peel_over_floor']}x floor")  # fmt: skip
    if "relay_us" in out:
        line += f", real relay {out['relay_us']} us = {out['relay_over_floor']}x floor (target <= 2.5x)"
    print(line)


if __name__ == "__main__":
    main()
