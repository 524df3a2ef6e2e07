"""The policy_controller's control loop without ROS: input -> observation -> policy -> safety ->
command, and the numbers its diagnostics report.

The node (fpmd_ros.controller.node) only wires it: the subscription calls :meth:`receive`, the
timer or the input calls :meth:`step` and publishes the command it returns, the lifecycle calls
:meth:`activate` / :meth:`deactivate`. Times are steady-clock nanoseconds passed in by the
caller, so tests drive the loop with made-up times (test/test_controller_loop.py).
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

import numpy as np

from fpmd_ros.controller.inputs import Input, InputStale, InputWaiting
from fpmd_ros.controller.rules import (
    check_default_action,
    clip_to_bounds,
    rate_limit,
    rest_action,
    safe_action,
)
from fpmd_ros.controller.safety import OK, WARN, Safety, SafetyMonitor

LATENCY_WINDOW = 2000  # inference latencies kept for the p50/p99 in diagnostics
LOW_RATE_FRACTION = 0.8  # achieved rate below this fraction of the target -> WARN
LOW_RATE_GRACE_S = 2.0  # no low-rate warning this soon after activation (the first window)


@dataclass
class Step:
    """One control step's outcome: the command to publish and what to log (None, or (level,
    text) with level 'info' | 'warn' | 'error')."""

    command: np.ndarray
    log: tuple[str, str] | None
    observation: np.ndarray | None = None
    """The observation computed in this step (None when the step reused the last result)."""


class ControlLoop:
    """One policy behind one input, with the safety rules of the policy_controller docstring.

    ``policy(observation) -> action`` is a loaded policy (fpmd_core.runtime), ``meta`` its
    metadata, ``source`` the input adapter for the observation mode."""

    def __init__(self, policy, meta: dict, source: Input, rate_hz: float,
                 state_timeout_s: float = 0.2, safe_kind: str = 'zero',
                 default_action=None, max_action_delta: float = 0.0) -> None:
        self.policy, self.meta, self.source = policy, meta, source
        self.rate_hz = rate_hz
        self.low = np.asarray(meta['action_low'], dtype=np.float64)
        self.high = np.asarray(meta['action_high'], dtype=np.float64)
        self.rest = rest_action(meta)
        # The labelled layout of a published observation (~/observation): the model's terms.
        self.observation_layout = [(str(name), int(size))
                                   for name, size in meta.get('obs_terms', ())]
        self.safety = SafetyMonitor()
        self.set_safety(state_timeout_s, safe_kind, default_action, max_action_delta)
        self.last_command: np.ndarray | None = None
        self._latest_msg = None
        self._latest_ns = 0
        self._latest_seq = 0
        self._computed_seq = 0  # the input seq whose result is cached below
        self._computed: tuple[Safety, str, np.ndarray | None] = (Safety.WAITING, '', None)
        self._latencies_ns: collections.deque[int] = collections.deque(maxlen=LATENCY_WINDOW)
        self._new_observation: np.ndarray | None = None
        self._window_steps = 0
        self._window_start_ns = time.monotonic_ns()
        self._active_since_ns: int | None = None
        self.commands = 0
        self.inferences = 0

    def set_safety(self, state_timeout_s: float, safe_kind: str, default_action,
                   max_action_delta: float) -> None:
        """The runtime parameters; ConfigureError if ``default_action`` does not fit the model
        (checked whenever it is set, whatever ``safe_kind`` is)."""
        has_default = default_action is not None and len(default_action) > 0
        if safe_kind == 'default' or has_default:
            default = check_default_action(default_action, self.meta)
        else:
            default = None
        self.state_timeout_ns = int(round(state_timeout_s * 1e9))
        self.safety.set_state_timeout(self.state_timeout_ns)
        self.safe_kind, self.default_action = safe_kind, default
        self.max_delta = float(max_action_delta)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active_since_ns is not None

    def activate(self, now_ns: int) -> None:
        """Start controlling: waiting for input; the image stack restarts at the next frame."""
        self.safety.reset(Safety.WAITING, now_ns)
        self.source.reset()
        self._active_since_ns = now_ns

    def deactivate(self, now_ns: int) -> np.ndarray:
        """Stop controlling; returns the safe action to publish last."""
        self.safety.reset(Safety.INACTIVE, now_ns)
        self._active_since_ns = None
        return self.command(self.safe_action())

    # --- the loop -------------------------------------------------------------------------------

    def receive(self, msg, now_ns: int) -> None:
        """Cache the newest input message and its arrival time; every check happens in step."""
        self._latest_msg, self._latest_ns = msg, now_ns
        self._latest_seq += 1

    def episode_start(self, stamp_ns: int) -> bool:
        """An episode starts at the input stamped ``stamp_ns`` (0: the next one). True when
        that changed the observation of the newest input (the announcement came after it):
        its result is recomputed, and a control step now publishes the corrected command."""
        observation = self.source.episode_start(stamp_ns, self._latest_msg)
        if observation is None or self._computed_seq != self._latest_seq:
            return False
        self._computed = self._infer(observation)
        return True

    def fresh(self, now_ns: int) -> bool:
        """Whether there is input no older than ``state_timeout_s``."""
        return self._latest_msg is not None and now_ns - self._latest_ns <= self.state_timeout_ns

    def input_age_s(self, now_ns: int) -> float | None:
        return None if self._latest_msg is None else (now_ns - self._latest_ns) / 1e9

    def safe_action(self) -> np.ndarray:
        return safe_action(self.safe_kind, self.low, self.high, self.last_command,
                           self.default_action, rest=self.rest)

    def step(self, now_ns: int) -> Step:
        """One control step at ``now_ns``: the command to publish (policy or safe action)."""
        self._window_steps += 1
        self._new_observation = None
        try:
            state, reason, action = self._evaluate(now_ns)
            if action is not None:
                action = rate_limit(action, self.last_command, self.max_delta)
        except Exception as error:  # a step never raises: the executor would stop
            state, reason, action = (Safety.INFERENCE_ERROR,
                                     f'step failed: {type(error).__name__}: {error}', None)
        if action is None:
            action = self.safe_action()
        log = self.safety.update(state, reason, now_ns)
        return Step(self.command(action), log, self._new_observation)

    def command(self, action) -> np.ndarray:
        """``action`` as the command to publish (never NaN), remembered as the last command."""
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():  # unreachable by construction; never publish NaN
            action = safe_action('zero', self.low, self.high, None, None, rest=self.rest)
        self.last_command = action
        self.commands += 1
        self.source.commanded(action)
        return action

    def _evaluate(self, now_ns: int) -> tuple[Safety, str, np.ndarray | None]:
        """(state, reason, clipped policy action or None) for this step."""
        if self._latest_msg is None:
            return Safety.WAITING, f'no {self.source.topic} input yet', None
        age_ns = now_ns - self._latest_ns
        if age_ns > self.state_timeout_ns:
            return (Safety.STALE, f'newest input is {age_ns / 1e9:.3f} s old (state_timeout_s '
                    f'{self.state_timeout_ns / 1e9:g})', None)
        if self._computed_seq == self._latest_seq:
            return self._computed  # same message as last step: same result
        msg, seq, received_ns = self._latest_msg, self._latest_seq, self._latest_ns
        try:
            observation = self.source.observation(msg, received_ns, self.state_timeout_ns)
        except InputWaiting as error:
            result = Safety.WAITING, str(error), None
        except InputStale as error:
            result = Safety.STALE, str(error), None
        except ValueError as error:
            result = (Safety.MALFORMED, f'malformed {self.source.topic} message: {error}', None)
        else:
            self._new_observation = observation
            result = self._infer(observation)
        self._computed_seq, self._computed = seq, result
        return result

    def _infer(self, observation: np.ndarray) -> tuple[Safety, str, np.ndarray | None]:
        start = time.perf_counter_ns()
        try:
            action = np.asarray(self.policy(observation), dtype=np.float64)
        except ValueError as error:  # ObservationError: the policy refused the input
            return Safety.MALFORMED, f'observation refused by the policy: {error}', None
        except Exception as error:
            return (Safety.INFERENCE_ERROR,
                    f'inference failed: {type(error).__name__}: {error}', None)
        finally:
            self._latencies_ns.append(time.perf_counter_ns() - start)
            self.inferences += 1
        if action.shape != self.low.shape or not np.isfinite(action).all():
            return (Safety.INFERENCE_ERROR,
                    f'policy returned {np.array2string(action, precision=4)}; expected '
                    f'{self.low.size} finite values', None)
        return Safety.OK, '', clip_to_bounds(action, self.low, self.high)

    # --- diagnostics ----------------------------------------------------------------------------

    def start_window(self, now_ns: int) -> None:
        self._window_steps, self._window_start_ns = 0, now_ns

    def status(self, now_ns: int) -> tuple[int, str, dict]:
        """(level, message, values) of the loop since the last call, which starts a new
        measurement window. Levels as in the policy_controller docstring."""
        window_s = max((now_ns - self._window_start_ns) / 1e9, 1e-9)
        achieved = self._window_steps / window_s
        self.start_window(now_ns)
        worst = self.safety.reset_window()
        latencies = np.asarray(self._latencies_ns, dtype=np.float64) / 1e6
        p50, p99 = ((float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)))
                    if latencies.size else (math.nan, math.nan))
        age = self.input_age_s(now_ns)
        state = self.safety.state
        if not self.active:
            level, message = OK, 'not controlling'
        elif state.trouble:
            level, message = self.safety.level, (f'{state.value}: {self.safety.reason} -> '
                                                 'safe action')
        elif state is Safety.WAITING:
            level, message = WARN, f'waiting for input: {self.safety.reason} -> safe action'
        elif worst is not None:
            level, message = WARN, f'recovered from {worst.value} within the last {window_s:.1f} s'
        elif (achieved < LOW_RATE_FRACTION * self.rate_hz
              and now_ns - self._active_since_ns > LOW_RATE_GRACE_S * 1e9):
            level, message = WARN, (f'control rate {achieved:.1f} Hz is below the target '
                                    f'{self.rate_hz:g} Hz')
        else:
            level, message = OK, f'controlling at {achieved:.1f} Hz'
        values = {
            'safety_state': state.value,
            'safety_reason': self.safety.reason,
            'target_rate_hz': self.rate_hz,
            'achieved_rate_hz': achieved if self.active else 0.0,
            'inference_latency_p50_ms': p50,
            'inference_latency_p99_ms': p99,
            'input_age_ms': 'none' if age is None else age * 1e3,
            'safe_action': self.safe_kind,
            'commands_published': self.commands,
            'inferences': self.inferences,
            'trouble_episodes': self.safety.trouble_episodes,
            **self.source.diagnostic_values(),
        }
        return level, message, values
