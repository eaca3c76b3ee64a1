"""Cutting a release (maintainer side): sign a bundle, write and sign the release index.

    python3 -m image.release bundle --slots dist/homenode-0.2.0-arm64.slots --version 0.2.0 \\
        --cert release.cert.pem --key release.key.pem --out homenode-0.2.0-arm64.raucb
    python3 -m image.release index --key release.key.pem --out site/index.json \\
        --security site/homenode-0.2.0-arm64.raucb site/homenode-0.1.5-arm64.raucb

`index` lists the given bundles (version read from each bundle's manifest, sha256 and size
computed, URL relative to the index), stamps the time, and writes index.json plus
index.json.sig, the release key's signature that every box checks (firmware/update/index.py).
Bundles named after --security carry a security fix: boxes on the default channel install
them (and anything newer) by themselves.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from firmware.update import index as release_index
from firmware.update import layout
from image import bundle, keys


def bundle_version(path: Path) -> str:
    out = subprocess.run(["rauc", "info", "--no-verify", "--output-format=json", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{path}: not a readable RAUC bundle: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])["version"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_index(out: Path, bundles: list[Path], security: set[Path], key: Path,
               generated: int | None = None) -> Path:
    releases = []
    for b in bundles:
        releases.append({"version": bundle_version(b), "security": b in security,
                         "url": os.path.relpath(b, out.parent), "sha256": sha256(b),
                         "size": b.stat().st_size})
    releases.sort(key=lambda r: release_index.version_key(r["version"]))
    doc = {"format": release_index.FORMAT, "compatible": layout.COMPATIBLE,
           "generated": int(time.time()) if generated is None else generated,
           "releases": releases}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    keys.sign_file(out, key)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m image.release", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="sign a bundle of a build's slot images")
    b.add_argument("--slots", type=Path, required=True, help="dist/<stem>.slots of a build")
    b.add_argument("--version", required=True)
    b.add_argument("--cert", type=Path, required=True)
    b.add_argument("--key", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--zstd-level", type=int, default=bundle.DEFAULT_ZSTD_LEVEL)
    i = sub.add_parser("index", help="write and sign the release index")
    i.add_argument("--key", type=Path, required=True, help="the release key (PEM)")
    i.add_argument("--out", type=Path, required=True, help="index.json to write")
    i.add_argument("--security", type=Path, nargs="*", default=[],
                   help="bundles that carry a security fix")
    i.add_argument("bundles", type=Path, nargs="*", help="other bundles to list")
    args = ap.parse_args(argv)
    if args.cmd == "bundle":
        signing = keys.SigningKey(args.cert, args.key, test=False)
        bundle.make_bundle(args.slots / "boot.vfat", args.slots / "root.ext4", args.out,
                           args.version, args.version, signing, args.out.parent / ".bundle-work",
                           zstd_level=args.zstd_level, description=f"homenode {args.version}")
        print(f"{args.out} ({args.out.stat().st_size >> 20} MiB)")
        return 0
    sec = [p.resolve() for p in args.security]
    out = make_index(args.out.resolve(), sec + [p.resolve() for p in args.bundles], set(sec),
                     args.key)
    print(f"{out} and {out.name}.sig")
    return 0


if __name__ == "__main__":
    sys.exit(main())
