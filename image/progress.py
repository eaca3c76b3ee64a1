"""Progress display for the image build: numbered stages, elapsed times, live tool output.

Why: a cold build takes 10-20 minutes, most of it inside one mmdebstrap call; the maintainer must
see that it is moving and where the time goes. Stage times are kept for the build report.
"""

import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager


def fmt_secs(secs: float) -> str:
    m, s = divmod(int(round(secs)), 60)
    return f"{m}m{s:02d}s" if m else f"{secs:.1f}s"


class Progress:
    """Prints `[n/N] stage` headings and keeps the duration of each stage in `times`."""

    def __init__(self, total: int, out=None):
        self.total = total
        self.index = 0
        self.out = out or sys.stderr
        self.times: dict[str, float] = {}
        self.start = time.monotonic()
        self._stage_start = self.start
        self._tty = hasattr(self.out, "isatty") and self.out.isatty()

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextmanager
    def stage(self, name: str, what: str):
        self.index += 1
        self._stage_start = time.monotonic()
        self._print(f"[{self.index}/{self.total}] {what}")
        yield
        took = time.monotonic() - self._stage_start
        self.times[name] = round(took, 1)
        self._print(f"[{self.index}/{self.total}] {what}: done in {fmt_secs(took)} "
                    f"(total {fmt_secs(time.monotonic() - self.start)})")

    def note(self, text: str) -> None:
        elapsed = fmt_secs(time.monotonic() - self._stage_start)
        self._print(f"      {elapsed:>7}  {text}")

    def bar(self, label: str, done: int, total: int) -> None:
        """A one-line percentage bar; redrawn in place on a terminal, every 10 % otherwise."""
        pct = 100 * done // total if total else 100
        if self._tty:
            filled = pct * 30 // 100
            self.out.write(f"\r      {label} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%")
            if done >= total:
                self.out.write("\n")
            self.out.flush()
        elif pct // 10 != getattr(self, "_last_decile", -1) or done >= total:
            self._last_decile = pct // 10
            self._print(f"      {label} {pct:3d}%")

    def run(self, cmd: list[str], label: str, env=None, cwd=None, keep: int = 40) -> None:
        """Run a tool, echo its informative lines with elapsed time; on failure show its tail."""
        tail: deque[str] = deque(maxlen=keep)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", env=env, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith(("I: ", "W: ", "E: ")) or "initramfs" in line:
                self.note(f"{label}: {line}")
        if proc.wait() != 0:
            self._print("\n".join(f"      | {t}" for t in tail))
            raise SystemExit(f"image: {label} failed (exit {proc.returncode}); "
                             f"its last output is above")
