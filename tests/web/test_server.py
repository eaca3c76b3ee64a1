"""WebService in-process: routing, Host refusal, CSRF-safe identify, per-request deadline and
per-address shares (real loopback sockets; the deadline on trio's virtual clock)."""

import json
import types

import trio
import trio.testing

from firmware.web.server import WebService
from tests.web.sample_info import NODE_ID, info


def cfg(**over):
    d = {"enabled": True, "host": "127.0.0.1", "port": 0, "allowed_hosts": [],
         "allow_from": "lan", "max_connections": 6, "per_ip_connections": 3,
         "request_timeout": 10.0, "history_save_interval": 600.0}
    d.update(over)
    return types.SimpleNamespace(**d)


def service(**over):
    blinks = []

    def status():
        return info()

    async def diag():
        return "bundle.tar.gz", b"\x1f\x8bdata"

    web = WebService(cfg(**over), status=status, identify=lambda: blinks.append(1),
                     diag=diag, hostname="box")
    return web, blinks


async def http(addr, raw: bytes) -> tuple[int, dict, bytes]:
    s = await trio.open_tcp_stream(*addr)
    async with s:
        await s.send_all(raw)
        data = b""
        while chunk := await s.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(path, host="box.local:8080", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def test_routes_host_check_and_read_only():
    web, blinks = service()
    async with trio.open_nursery() as n:
        addr = await n.start(web.run)
        status, h, body = await http(addr, get("/"))
        assert status == 200 and h["Content-Type"].startswith("text/html")
        assert b"Slowed down" in body and NODE_ID.encode() in body
        status, _, body = await http(addr, get("/status.json", host="127.0.0.1:8080"))
        assert status == 200 and json.loads(body)["node_id"] == NODE_ID
        status, h, body = await http(addr, get("/metrics"))
        assert status == 200 and b"homenode_messages_stored 1234" in body
        assert h["Content-Type"].startswith("text/plain; version=0.0.4")
        status, h, body = await http(addr, get("/diag.tar.gz"))
        assert status == 200 and body == b"\x1f\x8bdata"
        assert h["Content-Disposition"] == 'attachment; filename="bundle.tar.gz"'
        status, _, body = await http(addr, get("/", host="attacker.example"))
        assert status == 421 and b"box.local" in body  # DNS rebinding: refused
        status, h, _ = await http(addr, b"DELETE /status.json HTTP/1.1\r\nHost: box\r\n\r\n")
        assert status == 405 and h["Allow"] == "GET"
        status, _, _ = await http(addr, get("/identify"))
        assert status == 405
        assert (await http(addr, get("/nope")))[0] == 404
        status, _, body = await http(addr, b"HEAD / HTTP/1.1\r\nHost: box\r\n\r\n")
        assert status == 200 and body == b""
        assert (await http(addr, b"\x16\x03\x01garbage\r\n\r\n"))[0] == 400
        assert blinks == []
        assert web.info()["web"]["wrong_host"] == 1
        n.cancel_scope.cancel()


async def test_identify_only_with_the_pages_token_from_the_same_origin():
    web, blinks = service()

    def post(body, origin="http://box.local:8080"):
        return (f"POST /identify HTTP/1.1\r\nHost: box.local:8080\r\nOrigin: {origin}\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    async with trio.open_nursery() as n:
        addr = await n.start(web.run)
        _, _, page = await http(addr, get("/"))
        token = page.split(b"name=token value=\"")[1].split(b'"')[0].decode()
        assert (await http(addr, post("token=forged")))[0] == 403
        assert (await http(addr, post(f"token={token}", origin="http://evil.example")))[0] == 403
        assert blinks == []
        status, h, _ = await http(addr, post(f"token={token}"))
        assert status == 303 and h["Location"] == "/?identified=1" and blinks == [1]
        status, h, _ = await http(addr, post(f"token={token}"))  # again at once: not again
        assert status == 303 and h["Location"] == "/?busy=1" and blinks == [1]
        _, _, page = await http(addr, get("/?identified=1"))
        assert b"blinking white" in page
        n.cancel_scope.cancel()


async def test_a_silent_or_trickling_client_is_cut_at_the_deadline(autojump_clock):
    web, _ = service(request_timeout=10.0)
    for trickle in (False, True):
        client, server = trio.testing.memory_stream_pair()
        conn = type("C", (), {})()
        conn.ip, conn.scope = "10.0.0.9", trio.CancelScope()
        web.table.admit(conn.ip, conn)
        t0 = trio.current_time()
        async with trio.open_nursery() as n:
            n.start_soon(web._serve, server, conn)
            await client.send_all(b"GET / HTTP/1.1\r\n")
            if trickle:
                for _ in range(100):  # one byte a second, forever
                    await trio.sleep(1)
                    try:
                        await client.send_all(b"X")
                    except trio.BrokenResourceError:
                        break
        assert 10.0 <= trio.current_time() - t0 < 11.5
        assert web.table.total == 0
    assert web.counters["timeouts"] == 2


async def test_one_address_cannot_take_every_connection():
    web, _ = service(max_connections=6, per_ip_connections=3)
    async with trio.open_nursery() as n:
        addr = await n.start(web.run)
        held = [await trio.open_tcp_stream(*addr) for _ in range(5)]
        with trio.fail_after(10):  # until the accept loop has seen all five
            while web.table.total + web.table.refused < 5:
                await trio.sleep(0.01)
        assert web.table.total == 3 and web.table.refused == 2  # its share, no more
        # another address (127.0.0.2 is loopback too) still gets the page at once
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.2", 0))
        await sock.connect(addr)
        s = trio.SocketStream(sock)
        await s.send_all(get("/status.json"))
        data = b""
        while chunk := await s.receive_some(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")
        for h in held:
            await h.aclose()
        await s.aclose()
        n.cancel_scope.cancel()


async def test_port_in_use_leaves_the_node_running_without_the_page():
    web, _ = service()
    async with trio.open_nursery() as n:
        addr = await n.start(web.run)
        other, _ = service(port=addr[1])
        assert await n.start(other.run) is None
        assert "cannot listen" in other.info()["web"]["error"]
        n.cancel_scope.cancel()
