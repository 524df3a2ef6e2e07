"""The policy_controller's rules that need no ROS: parameter checks, the control-rate rule, the
safe action, the rate limit. Pure functions, tested without DDS (test/test_controller_rules.py).
"""

from __future__ import annotations

import numpy as np

from fpmd_core.runtime import rest_action as robot_rest_action
from fpmd_ros.interface import OBSERVATION_MODES, TRIGGERS, model_rate_hz

SAFE_ACTIONS = ('zero', 'hold', 'default')
MAX_RATE_HZ = 2000.0
RATE_TOLERANCE = 0.01  # a control rate up to 1 % below the model's still counts as the same


class ConfigureError(ValueError):
    """Configure cannot succeed; the message is the reason logged and returned."""


def check_parameter(name: str, value) -> str | None:
    """Why ``value`` is invalid for ``name`` on its own (None if valid). Types and ranges are
    enforced by the descriptors; checks against the model are in :func:`check_against_model`."""
    if name == 'observation_mode' and value not in OBSERVATION_MODES:
        return (f"parameter 'observation_mode' is {value!r}; expected one of: "
                f"{', '.join(OBSERVATION_MODES)}")
    if name == 'trigger' and value not in TRIGGERS:
        return f"parameter 'trigger' is {value!r}; expected one of: {', '.join(TRIGGERS)}"
    if name == 'safe_action' and value not in SAFE_ACTIONS:
        return f"parameter 'safe_action' is {value!r}; expected one of: {', '.join(SAFE_ACTIONS)}"
    if name == 'control_rate_hz' and value is not None and 0.0 < value < 1.0:
        return (f"parameter 'control_rate_hz' is {value}; expected 0 (the model's rate) or "
                f"1..{MAX_RATE_HZ:g} Hz")
    if name == 'default_action' and value is not None:
        values = np.asarray(value, dtype=np.float64)
        if values.size and not np.all(np.isfinite(values)):
            return f"parameter 'default_action' is {list(value)}; expected finite values"
    if name in ('joint_names', 'exclude_joint_positions') and value is not None:
        names = list(value)
        if any(not str(n).strip() for n in names):
            return f"parameter {name!r} has an empty joint name; expected non-empty names"
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            return f"parameter {name!r} repeats {', '.join(duplicates)}; expected unique names"
    return None


def resolve_rate(control_rate_hz: float, meta: dict) -> float:
    """The control rate to run at (0 -> the model's), or ConfigureError if incompatible."""
    model_rate = model_rate_hz(meta)
    rate = float(control_rate_hz) or model_rate
    if rate < model_rate * (1.0 - RATE_TOLERANCE):
        raise ConfigureError(
            f"parameter 'control_rate_hz' is {rate:g} Hz but the model was trained at "
            f"{model_rate:g} Hz (control_period_s {meta['control_period_s']:g}); expected 0 "
            f"(= the model's rate) or a rate >= {model_rate:g} Hz: a slower loop would hold "
            'each action longer than in training')
    if rate > MAX_RATE_HZ:
        raise ConfigureError(f"the model's control rate {rate:g} Hz exceeds {MAX_RATE_HZ:g} Hz; "
                             "set 'control_rate_hz' explicitly")
    return rate


def check_default_action(default_action, meta: dict) -> np.ndarray:
    """``default_action`` as an array that fits the model, or ConfigureError."""
    act_dim = meta['act_dim']
    if default_action is None or len(default_action) == 0:
        raise ConfigureError(
            "parameter 'safe_action' is 'default' but 'default_action' is not set; expected "
            f"{act_dim} values (one per actuator: {', '.join(meta['actuator_names'])})")
    values = np.asarray(default_action, dtype=np.float64)
    if values.size != act_dim:
        raise ConfigureError(
            f"parameter 'default_action' has {values.size} values; expected {act_dim} (one per "
            f"actuator: {', '.join(meta['actuator_names'])})")
    if not np.all(np.isfinite(values)):
        raise ConfigureError(f"parameter 'default_action' is {values.tolist()}; expected finite "
                             'values')
    low, high = np.asarray(meta['action_low']), np.asarray(meta['action_high'])
    outside = np.flatnonzero((values < low) | (values > high))
    if outside.size:
        i = int(outside[0])
        raise ConfigureError(
            f"parameter 'default_action'[{i}] is {values[i]:g}, outside the action bounds "
            f"[{low[i]:g}, {high[i]:g}] of actuator {meta['actuator_names'][i]!r}")
    return values


# --- the actions -------------------------------------------------------------------------------

def clip_to_bounds(action, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    # minimum/maximum rather than np.clip: a few µs less per control step, same result.
    return np.minimum(np.maximum(np.asarray(action, dtype=np.float64), low), high)


def rest_action(meta: dict) -> np.ndarray:
    """The rest command of a policy (``fpmd_core.runtime.rest_action``): zeros, or a
    position-controlled robot policy's default pose."""
    return robot_rest_action(meta.get('robot'), len(meta['action_low']))


def safe_action(kind: str, low: np.ndarray, high: np.ndarray, last: np.ndarray | None,
                default: np.ndarray | None, rest: np.ndarray | None = None) -> np.ndarray:
    """The safe action of ``kind`` (``zero`` | ``hold`` | ``default``), inside the bounds.

    ``zero`` is the rest action (``rest_action``; zeros when not given). ``hold`` without a
    previous command, and ``default`` without a default, give the rest action too."""
    rest = np.zeros_like(low) if rest is None else rest
    if kind == 'hold' and last is not None:
        action = last
    elif kind == 'default' and default is not None:
        action = default
    else:
        action = rest
    action = clip_to_bounds(action, low, high)
    if np.all(np.isfinite(action)):
        return action
    fallback = clip_to_bounds(rest, low, high)
    return fallback if np.all(np.isfinite(fallback)) else clip_to_bounds(np.zeros_like(low), low,
                                                                          high)


def rate_limit(target: np.ndarray, previous: np.ndarray | None, max_delta: float) -> np.ndarray:
    """``target`` moved at most ``max_delta`` per component away from ``previous`` (0: no
    limit; no previous command: no limit)."""
    if max_delta <= 0.0 or previous is None:
        return target
    return np.clip(target, previous - max_delta, previous + max_delta)
