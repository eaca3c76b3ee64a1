"""The operator's window: a status page on the home network, /metrics, chart history and the
diagnostics bundle link.

`WebParts(cfg, data_dir, status=..., leds=..., log=...)` builds the parts once; the node wires:
  services  `services()`: history (HistoryRecorder: a sample a minute, saved to
            <data dir>/history.bin), web (WebService: the page on [web] host:port, or on the
            socket systemd passes as "web"; never the node's own port)
  info      `info()`: a `web` map (address, requests, refusals) for `info` / `status --full`

Pure parts: http (request parsing, response bytes), guard (Host, source, connection shares,
POST check), page/charts (HTML + SVG), metrics (Prometheus text), history (ring buffers),
qr (the node id as a QR code). Config: ``[web]`` in firmware/web/settings.py.
"""

import os

from firmware.web.settings import SECTIONS, WEB

__all__ = ["SECTIONS", "WEB", "WebParts"]


class WebParts:
    def __init__(self, cfg, data_dir: str, *, status, leds=None, log):
        """`cfg`: the whole node config; `status()` -> the node's info map (the `info` op's);
        `leds`: the LedService the identify button blinks (None: no button on the page)."""
        self.service = None
        self.recorder = None
        web = cfg.web
        if not web.enabled:
            return
        if web.port and web.port == cfg.node.listen_port:
            log.error("web_unavailable", error=f"[web] port = {web.port} is the node's own "
                      "port; the page never shares it: pick another (default 8080)")
            return
        from firmware.web.activation import systemd_socket
        from firmware.web.recorder import HISTORY_FILE, HistoryRecorder
        from firmware.web.server import WebService

        self.cfg, self.data_dir, self.status, self.log = cfg, data_dir, status, log
        self.recorder = HistoryRecorder(os.path.join(data_dir, HISTORY_FILE), status=status,
                                        save_interval=web.history_save_interval, log=log)
        identify = None
        if leds is not None:
            identify_ms = int(cfg.hal.identify_s * 1000)

            def identify():
                from firmware.device.leds import mono_ms

                leds.overlay("identify", mono_ms(), identify_ms)

        self.service = WebService(web, status=status, identify=identify,
                                  history=lambda: self.recorder.history, diag=self._diag,
                                  log=log, sock=systemd_socket("web"))

    async def _diag(self):
        """Built by a short-lived child process (see diag.child_main): the node keeps none of
        the bundle's imports and its event loop never waits on journalctl."""
        import sys

        import trio

        from firmware.web.diag import child_request

        req = child_request(self.cfg, self.data_dir, self.status(), self.recorder.history)
        with trio.fail_after(120):
            p = await trio.run_process([sys.executable, "-m", "firmware.web.diag"], stdin=req,
                                       capture_stdout=True, capture_stderr=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"diagnostics child failed: {p.stderr.decode()[-300:]}")
        name, _, data = p.stdout.partition(b"\n")
        return name.decode(), data

    def services(self):
        """(name, run) pairs, in start order."""
        if self.service is None:
            return []
        return [("history", self.recorder.run), ("web", self.service.run)]

    def info(self) -> dict:
        return self.service.info() if self.service is not None else {}
