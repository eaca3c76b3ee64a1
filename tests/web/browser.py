"""Headless Chromium (Debian's `chromium`) for the page tests: the DOM after load, and
screenshots at phone and desktop sizes. Flags as this machine's notes give them: no sandbox (we
run as root), no GPU, and no background networking (the machine has no outside network)."""

import os
import shutil
import tempfile

import trio

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOTS = os.path.join(REPO, "dist", "screenshots")
PHONE = (412, 915)
DESKTOP = (1280, 900)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]


def chromium() -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is missing: install Debian's chromium (scripts/setup.sh does)"
    return exe


async def run_chromium(args, netns=None) -> bytes:
    profile = tempfile.mkdtemp(prefix="hn-chromium-")
    argv = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        with trio.fail_after(90):
            r = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                       check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    return r.stdout


async def dom(url, netns=None) -> str:
    return (await run_chromium(["--dump-dom", url], netns)).decode()


async def screenshot(url, name, size, netns=None) -> str:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name)
    await run_chromium([f"--window-size={size[0]},{size[1]}", f"--screenshot={path}", url],
                       netns)
    assert os.path.getsize(path) > 1000
    return path


def page_state(html: str) -> str:
    marker = 'id="led" data-state="'
    assert marker in html, html[:500]
    return html.split(marker, 1)[1].split('"', 1)[0]
