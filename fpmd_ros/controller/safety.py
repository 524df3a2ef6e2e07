"""The controller's safety state across control steps, and what to log and report about it.

Pure Python (no rclpy): the node turns the returned log lines into ROS log calls and the level
into its diagnostics.

Stale input is a timing problem that a busy host produces for a moment (a 2 ms overrun of the
state timeout recovers at the next message), while malformed input and failing inference are
faults. So, while the safe action is published at once in every case:

- malformed input and inference errors are logged at ERROR when they start;
- stale input is logged at WARN when it starts, and at ERROR once it has lasted longer than
  :data:`STALE_ERROR_FACTOR` x ``state_timeout_s`` (measured from the first stale control step),
  e.g. 1 s at the default 0.2 s timeout. Diagnostics follow: WARN for a brief stale hiccup, ERROR
  once it has escalated.
"""

from __future__ import annotations

import enum

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR = 0, 1, 2

# Stale input that lasts longer than this many state timeouts is an error, not a hiccup.
STALE_ERROR_FACTOR = 5


class Safety(enum.Enum):
    INACTIVE = 'inactive'
    WAITING = 'waiting'  # active, no input yet
    OK = 'ok'
    STALE = 'stale'
    MALFORMED = 'malformed'
    INFERENCE_ERROR = 'inference_error'

    @property
    def trouble(self) -> bool:
        return self in (Safety.STALE, Safety.MALFORMED, Safety.INFERENCE_ERROR)


class SafetyMonitor:
    """The safety state across control steps.

    ``update`` returns what to log, at most once per change: ``('error', text)`` when a fault
    starts or stale input escalates, ``('warn', text)`` when stale input starts, ``('info',
    text)`` when good input returns, else None. ``stale_error_after_ns`` is how long stale input
    may last before it is an error (:data:`STALE_ERROR_FACTOR` x the state timeout; see
    :meth:`set_state_timeout`)."""

    def __init__(self, state_timeout_ns: int = 200_000_000) -> None:
        self.state = Safety.INACTIVE
        self.reason = ''
        self.since_ns = 0
        self.trouble_episodes = 0
        self.safe_ticks = 0  # in the current episode of trouble
        self.escalated = False  # the current stale episode has lasted long enough to be an error
        self.window_trouble: Safety | None = None  # worst trouble since the last reset_window()
        self.set_state_timeout(state_timeout_ns)

    def set_state_timeout(self, state_timeout_ns: int) -> None:
        self.stale_error_after_ns = STALE_ERROR_FACTOR * int(state_timeout_ns)

    def reset(self, state: Safety = Safety.INACTIVE, now_ns: int = 0) -> None:
        self.state, self.reason, self.since_ns, self.safe_ticks = state, '', now_ns, 0
        self.escalated = False

    @property
    def level(self) -> int:
        """The diagnostics level of the current state (see the module docstring)."""
        if self.state is Safety.STALE:
            return ERROR if self.escalated else WARN
        if self.state.trouble:
            return ERROR
        return WARN if self.state is Safety.WAITING else OK

    def update(self, state: Safety, reason: str, now_ns: int) -> tuple[str, str] | None:
        previous = self.state
        self.reason = reason
        if state is not Safety.OK:
            self.safe_ticks += 1
        if state.trouble:
            self.window_trouble = state
        if state is previous:
            if (state is Safety.STALE and not self.escalated
                    and now_ns - self.since_ns > self.stale_error_after_ns):
                self.escalated = True
                return 'error', (f'stale for {(now_ns - self.since_ns) / 1e9:.3f} s '
                                 f'(> {STALE_ERROR_FACTOR} x state_timeout_s): {reason}; '
                                 'publishing the safe action')
            return None
        self.state, self.since_ns, self.escalated = state, now_ns, False
        if state.trouble:
            if not previous.trouble:
                self.trouble_episodes += 1
            return ('warn' if state is Safety.STALE else 'error',
                    f'{state.value}: {reason}; publishing the safe action')
        if state is Safety.OK and previous.trouble:
            count, self.safe_ticks = self.safe_ticks, 0
            return 'info', f'input OK again after {previous.value} ({count} safe ticks)'
        if state is Safety.OK:
            self.safe_ticks = 0
        return None

    def reset_window(self) -> Safety | None:
        worst, self.window_trouble = self.window_trouble, None
        return worst
