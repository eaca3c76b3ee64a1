"""The signed seed list: where a fresh box with an empty `[network] bootstrap` starts.

A release fills `/usr/share/homenode/seeds.json` in the image (and an update may drop a newer
one into the data dir as `seeds.json`); the box trusts a list only if the release key shipped
in the image signed it. Format (JSON):

    {"format": "homenode-seeds-1", "issued_ms": 1796000000000, "expires_ms": 1859000000000,
     "seeds": ["203.0.113.7:7070@<64 hex node id>", ...],
     "signature": "<128 hex: Ed25519 over DOMAIN + the other fields as sorted compact JSON>"}

Why Ed25519 over canonical JSON: the release tooling and the box need nothing beyond PyNaCl,
and a human can read the file. The newest valid list (by `issued_ms`) wins; an expired list is
refused (unless the box's clock is plainly unset, before `issued_ms`), so an old list of seeds
cannot be replayed forever.

Sign one (the release key is an ordinary homenode key file):
    python -m firmware.join.seeds sign --key release.key --days 730 --out seeds.json HOST:PORT@ID ...
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from firmware.identity import parse_node_id

FORMAT = "homenode-seeds-1"
DOMAIN = b"homenode seed list v1\n"
MAX_BYTES = 256 * 1024
MAX_SEEDS = 1000


class SeedListError(ValueError):
    """The file is not a seed list this box may use; the message says why."""


@dataclass(frozen=True)
class SeedList:
    seeds: tuple
    issued_ms: int
    expires_ms: int
    source: str = ""


def _body(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_seed_list(signing_key: nacl.signing.SigningKey, seeds, issued_ms: int,
                   expires_ms: int) -> dict:
    from firmware.net.settings import parse_bootstrap

    for s in seeds:
        parse_bootstrap(s)
    doc = {"format": FORMAT, "issued_ms": int(issued_ms), "expires_ms": int(expires_ms),
           "seeds": list(seeds)}
    doc["signature"] = signing_key.sign(_body(doc)).signature.hex()
    return doc


def verify_seed_list(data: bytes, release_key: bytes, now_ms: int, source: str = "") -> SeedList:
    from firmware.net.settings import parse_bootstrap

    if len(data) > MAX_BYTES:
        raise SeedListError(f"over {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SeedListError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SeedListError(f"not a {FORMAT} document")
    issued, expires, seeds = doc.get("issued_ms"), doc.get("expires_ms"), doc.get("seeds")
    if type(issued) is not int or type(expires) is not int or not isinstance(seeds, list):
        raise SeedListError("issued_ms, expires_ms and seeds are missing or of the wrong type")
    sig = doc.get("signature")
    try:
        nacl.signing.VerifyKey(release_key).verify(_body(doc), bytes.fromhex(sig))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise SeedListError("signature does not verify with the release key") from None
    if now_ms >= expires and now_ms >= issued:
        raise SeedListError(f"expired {time.strftime('%Y-%m-%d', time.gmtime(expires / 1000))};"
                            " an update brings a fresh list")
    if len(seeds) > MAX_SEEDS:
        raise SeedListError(f"more than {MAX_SEEDS} seeds")
    for s in seeds:
        try:
            parse_bootstrap(s)
        except (ValueError, AttributeError) as e:
            raise SeedListError(f"bad seed: {e}") from None
    return SeedList(tuple(seeds), issued, expires, source)


def read_release_key(path: str) -> bytes:
    """64 hex digits (first token of the file), or SeedListError."""
    try:
        with open(path) as f:
            text = f.read(4096)
    except FileNotFoundError:
        raise SeedListError(f"no release key at {path}") from None
    except OSError as e:
        raise SeedListError(f"cannot read the release key {path}: {e.strerror}") from None
    try:
        return parse_node_id(text.split()[0] if text.split() else "")
    except ValueError:
        raise SeedListError(f"{path}: expected 64 hex digits (a public key)") from None


def best_seed_list(paths, key_path: str, now_ms: int) -> tuple[SeedList | None, str]:
    """The newest valid list among `paths` (missing files skipped), and words for status."""
    paths = [p for p in paths if p]
    if not paths:
        return None, "none configured"
    try:
        key = read_release_key(key_path)
    except SeedListError as e:
        return None, str(e)
    best, problems = None, []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
            continue
        try:
            sl = verify_seed_list(data, key, now_ms, path)
        except SeedListError as e:
            problems.append(f"{path}: {e}")
            continue
        if best is None or sl.issued_ms > best.issued_ms:
            best = sl
    if best is not None:
        when = time.strftime("%Y-%m-%d", time.gmtime(best.issued_ms / 1000))
        return best, f"{len(best.seeds)} seeds from {best.source} (issued {when})"
    return None, "; ".join(problems) or "no seed list on this box"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware.join.seeds",
                                description="sign or check a homenode seed list")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sign", help="write a signed seed list")
    s.add_argument("--key", required=True, help="the release key file (homenode keygen --out)")
    s.add_argument("--days", type=int, default=730, help="valid for this many days")
    s.add_argument("--out", required=True)
    s.add_argument("seeds", nargs="+", metavar="HOST:PORT@NODEID")
    c = sub.add_parser("check", help="verify a seed list with a release public key")
    c.add_argument("--pub", required=True, help="file with the release public key (64 hex)")
    c.add_argument("file")
    a = p.parse_args(argv)
    now = int(time.time() * 1000)
    try:
        if a.cmd == "sign":
            from firmware.identity import load_key_file

            doc = sign_seed_list(load_key_file(a.key).signing_key, a.seeds, now,
                                 now + a.days * 86_400_000)
            with open(a.out, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            print(f"{a.out}: {len(a.seeds)} seeds, valid {a.days} days")
        else:
            with open(a.file, "rb") as f:
                sl = verify_seed_list(f.read(), read_release_key(a.pub), now, a.file)
            print(f"{a.file}: ok, {len(sl.seeds)} seeds")
    except (SeedListError, ValueError, OSError) as e:
        print(f"seeds: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
