"""After an update: keep the new system only when the node has proven itself (pure decisions).

Two questions, answered without I/O so every rule is tested on the host:

`classify(facts, pending)`: at boot, what happened to the last install? The booted slot may be
the new one on trial, the new one already kept, or the old one because the bootloader gave up on
the new one (it never reached userspace) or the gate sent it back.

`HealthGate.observe(sample)`: during a trial, commit, wait or roll back. The node counts as
healthy when systemd says it is up (READY=1 sent: store open, listener up), it answers its status
on loopback as "serving", and it is not in a fatal state. It must stay healthy for a whole
window; a restart or a fatal state starts the window again; past the deadline, or when systemd
has given up restarting it, the box goes back to the previous system.
"""

from dataclasses import dataclass

# --- at boot -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootFacts:
    booted: str  # slot name of the running system (rauc.slot=)
    mode: str  # "uboot" or "tryboot": what switched slots
    trial: bool  # the booted slot is not committed yet (U-Boot: attempts left < committed;
    #              tryboot: the firmware's tryboot flag)
    primary: str | None  # the slot the bootloader picks at the next normal boot
    bad: frozenset = frozenset()  # slots the bootloader will not boot


IDLE, TRIAL, COMMITTED, ROLLED_BACK, WAITING = "idle", "trial", "committed", "rolled_back", "waiting"
INTERRUPTED = "interrupted"  # the install itself did not finish (power cut): retried later


def classify(facts: BootFacts, pending: dict | None) -> tuple[str, str]:
    """(situation, reason). `pending` is the install record kept on the data partition:
    {"slot", "version", "installed", "tried", "rollback_reason", ...} or None."""
    if pending is None:
        if facts.trial:
            return TRIAL, f"slot {facts.booted} is on trial (its boot state was reset)"
        return IDLE, ""
    target = pending.get("slot")
    version = pending.get("version") or "?"
    if target == facts.booted:
        if facts.trial:
            return TRIAL, f"running {version} on trial in slot {target}"
        return COMMITTED, f"{version} in slot {target} was kept"
    why = pending.get("rollback_reason")
    if why:
        return ROLLED_BACK, why
    if not pending.get("installed") and facts.primary != target:
        return INTERRUPTED, (f"the install of {version} into slot {target} did not finish (power "
                             "cut?); the running system was not touched")
    if target in facts.bad:
        return ROLLED_BACK, (f"{version} in slot {target} did not prove itself in its trial "
                             "boots (the bootloader ran out of attempts and started the "
                             "previous system)")
    if facts.mode == "tryboot" and pending.get("tried"):
        return ROLLED_BACK, (f"{version} in slot {target} did not come up in its trial boot; "
                             "the firmware started the previous system")
    if facts.primary == target:
        return WAITING, f"{version} is installed in slot {target} and starts at the next restart"
    return ROLLED_BACK, f"slot {target} is no longer the one to boot"


# --- during a trial ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the gate started watching
    ready: bool  # homenode.service active: READY=1 was sent
    failed: bool  # homenode.service failed and systemd stopped restarting it
    restarts: int  # NRestarts of homenode.service
    serving: bool  # answered `status` on loopback with state "serving"
    health: str  # the node's own health state
    problem: str = ""  # what went wrong, for the report


@dataclass(frozen=True)
class Verdict:
    action: str  # "wait", "commit" or "rollback"
    reason: str


FATAL_HEALTH = ("fatal_error",)


class HealthGate:
    def __init__(self, window_s: float, deadline_s: float):
        if deadline_s < window_s:
            raise ValueError("the trial deadline must not be shorter than the health window")
        self.window_s = window_s
        self.deadline_s = deadline_s
        self.healthy_since: float | None = None
        self.restarts: int | None = None
        self.last_problem = "the node never reported healthy"
        self.done: Verdict | None = None

    def _problem(self, s: Sample, restarted: bool) -> str:
        if restarted:
            return f"the node restarted (restart #{s.restarts})"
        if not s.ready:
            return s.problem or "homenode.service is not running"
        if not s.serving:
            return s.problem or "the node does not answer its status on loopback"
        if s.health in FATAL_HEALTH:
            return f"the node reports {s.health}" + (f": {s.problem}" if s.problem else "")
        return ""

    def observe(self, s: Sample) -> Verdict:
        if self.done is not None:
            return self.done
        restarted = self.restarts is not None and s.restarts > self.restarts
        self.restarts = s.restarts if self.restarts is None else max(self.restarts, s.restarts)
        problem = self._problem(s, restarted)
        if problem:
            self.healthy_since = None
            self.last_problem = problem
        elif self.healthy_since is None:
            self.healthy_since = s.at
        if self.healthy_since is not None and s.at - self.healthy_since >= self.window_s:
            self.done = Verdict("commit", f"the node ran healthy for {s.at - self.healthy_since:.0f}"
                                          f" s (window {self.window_s:.0f} s)")
        elif s.failed:
            self.done = Verdict("rollback", f"the node failed and systemd gave up restarting it "
                                            f"({self.last_problem})")
        elif s.at >= self.deadline_s:
            self.done = Verdict("rollback", f"the node was not healthy for {self.window_s:.0f} s "
                                            f"within {self.deadline_s:.0f} s after the update "
                                            f"(last problem: {self.last_problem})")
        else:
            left = (self.window_s - (s.at - self.healthy_since)) if self.healthy_since is not None \
                else None
            return Verdict("wait", f"healthy, {left:.0f} s of the window left"
                           if left is not None else f"waiting: {self.last_problem}")
        return self.done
