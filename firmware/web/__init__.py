"""The operator's window: a status page on the home network, /metrics, chart history and the
diagnostics bundle link.

``install_web(node)`` builds the parts once and gives them to the node:
  services  history (HistoryRecorder: a sample a minute, saved to <data dir>/history.bin),
            web (WebService: the page on [web] host:port, never the node's own port)
  info      a `web` map (address, requests, refusals) in `info` / `homenode status --full`

Pure parts: http (request parsing, response bytes), guard (Host, source, connection shares,
POST check), page/charts (HTML + SVG), metrics (Prometheus text), history (ring buffers),
qr (the node id as a QR code). Config: ``[web]`` in firmware/web/settings.py.
"""

import os

from firmware.web.settings import SECTIONS, WEB

__all__ = ["SECTIONS", "WEB", "install_web"]


def install_web(node):
    """Plug the page into `node` (a firmware.node.Node); returns the WebService or None."""
    cfg = node.cfg.web
    if not cfg.enabled:
        return None
    if cfg.port and cfg.port == node.cfg.node.listen_port:
        node.log.error("web_unavailable", error=f"[web] port = {cfg.port} is the node's own "
                       "port; the page never shares it: pick another (default 8080)")
        return None
    import trio

    from firmware.proto import InfoRequest
    from firmware.rpc import ConnInfo
    from firmware.web.activation import systemd_socket
    from firmware.web.diag import child_request
    from firmware.web.recorder import HISTORY_FILE, HistoryRecorder
    from firmware.web.server import WebService

    async def status():
        return await node.handler.handle(InfoRequest(0), ConnInfo("web"), node.clock_ms())

    recorder = HistoryRecorder(os.path.join(node.data_dir, HISTORY_FILE), status=status,
                               save_interval=cfg.history_save_interval, log=node.log)
    identify = None
    device = getattr(node, "device", None)
    if device is not None:
        def identify():
            now_ms = int(trio.current_time() * 1000)
            device.leds.overlay("identify", now_ms, int(node.cfg.hal.identify_s * 1000))

    async def diag():
        """Built by a short-lived child process (see diag.child_main): the node keeps none of
        the bundle's imports and its event loop never waits on journalctl."""
        import sys

        info = await status()
        req = child_request(node.cfg, node.data_dir, info, recorder.history)
        with trio.fail_after(120):
            p = await trio.run_process([sys.executable, "-m", "firmware.web.diag"], stdin=req,
                                       capture_stdout=True, capture_stderr=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"diagnostics child failed: {p.stderr.decode()[-300:]}")
        name, _, data = p.stdout.partition(b"\n")
        return name.decode(), data

    web = WebService(cfg, status=status, identify=identify, history=lambda: recorder.history,
                     diag=diag, log=node.log, sock=systemd_socket("web"))
    node.add_service("history", recorder.run)
    node.add_service("web", web.run)
    node.handler.add_info(web.info)
    return web
