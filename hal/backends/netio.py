"""Interface byte counters (psutil) to cross-check the node's own link accounting.

Why: the monthly cap is enforced on what the node counts on its sockets; TLS, TCP/IP headers
and retransmits are not in that count. Comparing with the interfaces' counters tells the
operator (status output) how much the real line usage exceeds the node's count, so the cap can
be set with that margin.
"""


class NetCounters:
    def __init__(self, psutil_module, complaints, exclude=("lo",)):
        self.psutil = psutil_module
        self.complaints = complaints
        self.exclude = exclude

    def totals(self):
        """(bytes sent, bytes received) over all non-excluded interfaces, or None."""
        try:
            per = self.psutil.net_io_counters(pernic=True)
        except Exception as e:  # psutil: OSError, RuntimeError on odd /proc
            self.complaints.problem("net", f"cannot read interface counters: {e}")
            return None
        sent = recv = 0
        for name, c in per.items():
            if name in self.exclude:
                continue
            sent += c.bytes_sent
            recv += c.bytes_recv
        return sent, recv


class CrossCheck:
    """Ratio of interface bytes to node-counted bytes over the same interval."""

    def __init__(self):
        self._last = None

    def update(self, node_bytes, iface_bytes):
        """Feed cumulative counters; returns iface/node for the interval, or None."""
        last = self._last
        self._last = (node_bytes, iface_bytes)
        if last is None:
            return None
        dn = node_bytes - last[0]
        di = iface_bytes - last[1]
        if dn <= 0 or di < 0:
            return None
        return di / dn


def has_usable_network(psutil_module, exclude=("lo",)):
    """True if some interface other than loopback is up with an IPv4 or a global IPv6 address
    (no address at all is what an unconfigured Wi-Fi looks like: the LED says needs_setup)."""
    try:
        stats = psutil_module.net_if_stats()
        addrs = psutil_module.net_if_addrs()
    except Exception:  # unknown: do not claim the operator has work to do
        return True
    for name, st in stats.items():
        if name in exclude or not st.isup:
            continue
        for a in addrs.get(name, ()):
            fam = getattr(a.family, "name", str(a.family))
            if fam == "AF_INET" or (fam == "AF_INET6" and not a.address.lower().startswith("fe80")):
                return True
    return False
