"""Exit statuses of `homenode run` that the service manager acts on.

The node runs unprivileged; when it needs something only the system may do (power off, start
afresh after a factory reset) it says so by how it exits, and its systemd unit acts on that
(`RestartForceExitStatus=`, `SuccessExitStatus=` and a privileged `ExecStopPost=`).
"""

EXIT_RESTART = 75  # identity wiped by a factory reset: start again with a new one
EXIT_POWEROFF = 76  # data flushed after a safe-shutdown hold: power the box off
