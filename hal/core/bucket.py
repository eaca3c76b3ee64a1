"""Token bucket with explicit millisecond time: shared by rate limits and bandwidth pacing."""


class TokenBucket:
    """`rate` tokens per second refill up to `burst`; the caller passes time in ms.

    Starts full. Time going backwards is treated as no time passing, so a stepped clock can
    never mint tokens.
    """

    def __init__(self, rate, burst, now_ms):
        if rate < 0 or burst <= 0:
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._last_ms = now_ms

    def _refill(self, now_ms):
        elapsed = now_ms - self._last_ms
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate / 1000.0)
            self._last_ms = now_ms

    def level(self, now_ms):
        """Tokens available at `now_ms`."""
        self._refill(now_ms)
        return self.tokens

    def take(self, n, now_ms):
        """Take `n` tokens if available; True when taken, False (and nothing taken) otherwise."""
        self._refill(now_ms)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def wait_ms(self, n, now_ms):
        """Milliseconds until `n` tokens are available (0 if now); -1 if never (n > burst)."""
        self._refill(now_ms)
        if self.tokens >= n:
            return 0
        if n > self.burst or self.rate <= 0:
            return -1
        deficit = n - self.tokens
        return int(deficit * 1000.0 / self.rate + 0.999)

    def set_rate(self, rate, burst, now_ms):
        """Change rate and burst (e.g. thermal or pacing governor); keeps tokens <= burst."""
        self._refill(now_ms)
        self.rate = rate
        self.burst = burst
        if self.tokens > burst:
            self.tokens = float(burst)

    def force(self, n, now_ms):
        """Take `n` tokens even if that leaves a debt (bytes that already arrived); the debt is
        repaid by refill before anything else is granted."""
        self._refill(now_ms)
        self.tokens -= n
