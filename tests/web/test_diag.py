"""The diagnostics bundle from a real node holding messages: it holds what it should, and the
whole extracted bundle contains no private key, no message data and no recipient id in any
encoding (raw, hex, base64) - even when the log handed to it leaked them."""

import base64
import io
import json
import os
import re
import tarfile
import urllib.request

import trio

from firmware.client import connect, seal_for
from firmware.identity import Identity
from firmware.web.diag import redact_toml, scrub
from tests.conftest import NodeProcess


def encodings(b: bytes) -> list[bytes]:
    out = [b, b.hex().encode(), b.hex().upper().encode()]
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        e = enc(b)
        out += [e, e.rstrip(b"=")]
    return out


def extract(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}


def web_address(node):
    r = node.cli("status", "--json")
    return json.loads(r.stdout)["web"]["address"]


def test_bundle_has_everything_and_no_secret(tmp_path):
    node = NodeProcess(tmp_path, {"network": {"enabled": False}, "store": {"batch_ms": 1}})
    node.start()
    recipients = [Identity.generate() for _ in range(4)]
    blobs = []

    async def fill():
        async with connect(node.host, node.port, node.node_id) as c:
            for i, r in enumerate(recipients):
                for j in range(3):
                    data = seal_for(r.node_id, f"secret message {i}.{j}".encode() * 3)
                    blobs.append(data)
                    await c.store(r.node_id, data)
            private = recipients[0]  # a private namespace: stored with the owner's signature
            data = seal_for(private.node_id, b"private namespace message")
            blobs.append(data)
            await c.store(private.node_id, data, ns=5, signing_key=private.signing_key)

    try:
        trio.run(fill)
        seed = bytes.fromhex(open(os.path.join(node.data_dir, "node.key")).read()
                             .split()[-1])
        assert len(seed) == 32
        # a log that leaked everything: the scrubber must catch it all
        leaky = tmp_path / "node-output.log"
        leaky.write_text(node.output() + "".join(
            f"debug leak recipient={r.node_id.hex()} b64={base64.b64encode(r.node_id).decode()}"
            "\n" for r in recipients) + f"debug leak key={seed.hex()} "
            f"k64={base64.b64encode(seed).decode()} data={base64.b64encode(blobs[0]).decode()}"
            f" datahex={blobs[1].hex()}\n")
        out = tmp_path / "out"
        out.mkdir()
        r = node.cli("diag", "--out", str(out), "--log", str(leaky))
        assert r.returncode == 0, r.stderr
        (path,) = out.iterdir()
        assert path.name.startswith(f"homenode-diag-{node.node_id.hex()[:8]}-")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        cli_bundle = path.read_bytes()
        url = f"http://{web_address(node)}/diag.tar.gz"
        page_bundle = urllib.request.urlopen(url, timeout=30).read()
    finally:
        node.stop()

    for bundle, via in ((cli_bundle, "cli"), (page_bundle, "page")):
        files = extract(bundle)
        assert set(files) >= {"README.txt", "versions.txt", "config.toml", "health.json",
                              "status.json", "history.json", "log.txt", "throttling.txt",
                              "disk.txt"}, via
        status = json.loads(files["status.json"])
        assert status["messages"] == len(blobs) and status["node_id"] == node.node_id.hex()
        assert json.loads(files["health.json"])["health"] in ("healthy", "booting")
        assert b"homenode 0.1.0" in files["versions.txt"] and b"trio " in files["versions.txt"]
        assert b"[web]" in files["config.toml"] and b"[hal]" in files["config.toml"]
        if via == "page":  # the running node's history; the CLI reads the saved file
            assert json.loads(files["history.json"])["day"]["step_s"] == 120
        else:
            assert b"no chart history saved yet" in files["history.json"]
        assert b"journal" in files["log.txt"]  # journald's log, or a note that it is absent
        assert b"node.key" in files["disk.txt"] and b"free of" in files["disk.txt"]
        assert b"vcgencmd" in files["throttling.txt"]
        if via == "cli":
            assert b" serving " in files["log.txt"]  # the node's own output, scrubbed
            assert b"<removed: hex>" in files["log.txt"]
            assert b"<removed: base64>" in files["log.txt"]
        everything = b"\n".join(files.values())
        for secret in [seed, *blobs, *(r.node_id for r in recipients)]:
            for form in encodings(secret):
                assert form not in everything, (via, form[:20])
        # nor any 64-hex id other than the node's own
        ids = set(re.findall(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", everything))
        assert ids == {node.node_id.hex().encode()}, via


def test_scrub_and_redact_pure():
    keep = "ab" * 32
    text = (f"own={keep} other={'cd' * 32} short=deadbeef path=/var/lib/homenode/some-long-"
            f"directory-name-here/x b64={base64.b64encode(os.urandom(40)).decode()}")
    out = scrub(text, keep=[keep])
    assert keep in out and "cd" * 32 not in out and "deadbeef" in out
    assert "/var/lib/homenode/some-long-directory-name-here/x" in out
    assert out.count("<removed") == 2
    toml = ('[wifi]\nssid = "Home"\npassphrase = "hunter2 hunter2"\n[ssh]\n'
            'authorized_keys = [\n  "ssh-ed25519 AAAA you",\n]\n[node]\nlog_level = "info"\n')
    red = redact_toml(toml)
    assert "hunter2" not in red and "AAAA" not in red and 'ssid = "Home"' in red
    assert 'log_level = "info"' in red and red.count("<removed>") == 2
