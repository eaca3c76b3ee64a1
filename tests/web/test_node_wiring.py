"""The page as the node starts it: never on the node's own port, and a node whose page cannot
listen serves on without it (real node processes)."""

import json
import socket

from tests.conftest import NodeProcess


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_page_never_shares_the_node_port(tmp_path):
    port = free_port()
    node = NodeProcess(tmp_path, {"node": {"listen_port": port}, "web": {"port": port},
                                  "network": {"enabled": False}}).start()
    try:
        info = json.loads(node.cli("status", "--json").stdout)
        assert "web" not in info and info["state"] == "serving"
    finally:
        node.stop()
    assert "web_unavailable" in node.output() and "never shares it" in node.output()


def test_a_taken_page_port_leaves_the_node_serving(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        node = NodeProcess(tmp_path, {"web": {"port": blocker.getsockname()[1]},
                                      "network": {"enabled": False}}).start()
        try:
            info = json.loads(node.cli("status", "--json").stdout)
            assert info["web"]["address"] is None and "set [web] port" in info["web"]["error"]
            r = node.cli("status")
            assert r.returncode == 0 and b"page " not in r.stdout
        finally:
            node.stop()
    finally:
        blocker.close()
