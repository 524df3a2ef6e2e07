"""policy_controller without DDS: its pure rules and its control loop (fpmd_ros.controller).

The loop is driven with made-up steady-clock times, so staleness and its escalation are tested
exactly, with no sleeping and no timing assertions. The policy is a plain linear map with the
metadata of Hopper-v5 (obs 11, 3 actuators in [-1, 1], 125 Hz): what the loop needs from a
policy is ``policy(obs) -> action`` and ``metadata``; loading real exports is tested in
test_controller.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from std_msgs.msg import Float32MultiArray

from fpmd_ros import messages
from fpmd_ros.controller.inputs import JointObservationMap, make_input
from fpmd_ros.controller.loop import ControlLoop
from fpmd_ros.controller.policy import load_checked_policy
from fpmd_ros.controller.rules import (
    ConfigureError,
    check_parameter,
    rate_limit,
    resolve_rate,
    rest_action,
    safe_action,
)
from fpmd_ros.controller.safety import (
    ERROR,
    OK,
    STALE_ERROR_FACTOR,
    WARN,
    Safety,
    SafetyMonitor,
)

HOPPER_JOINTS = ('rootx', 'rootz', 'rooty', 'thigh_joint', 'leg_joint', 'foot_joint')
META = {
    'task': 'Hopper-v5', 'algorithm': 'fpmd_m', 'obs_dim': 11, 'obs_shape': [11],
    'obs_terms': [('observation', 11)], 'act_dim': 3, 'action_low': [-1.0] * 3,
    'action_high': [1.0] * 3, 'actuator_names': ['thigh', 'leg', 'foot'],
    'joint_names': list(HOPPER_JOINTS), 'control_period_s': 0.008,
}
MS = 1_000_000  # ns
TIMEOUT_S = 0.2


class LinearPolicy:
    """action = tanh(W obs): deterministic, inside the bounds."""

    metadata = META

    def __init__(self):
        self.weights = np.linspace(-1.0, 1.0, 33).reshape(3, 11)

    def __call__(self, observation):
        return np.tanh(self.weights @ np.asarray(observation, np.float64))


def observation_msg(value: float) -> Float32MultiArray:
    return messages.to_float32_multiarray(np.full(11, value, np.float32), [('observation', 11)])


def make_loop(**safety) -> ControlLoop:
    loop = ControlLoop(LinearPolicy(), META, make_input('observation', META, None, None),
                       rate_hz=125.0)
    settings = dict(state_timeout_s=TIMEOUT_S, safe_kind='zero', default_action=None,
                    max_action_delta=0.0)
    settings.update(safety)
    loop.set_safety(**settings)
    loop.activate(0)
    return loop


# --- rules ----------------------------------------------------------------------------------------

def test_rate_limit_moves_at_most_delta_per_tick():
    target = np.array([1.0, -1.0, 0.05])
    previous = np.array([0.0, 0.0, 0.0])
    assert np.allclose(rate_limit(target, previous, 0.1), [0.1, -0.1, 0.05])
    assert np.array_equal(rate_limit(target, previous, 0.0), target)  # 0: no limit
    assert np.array_equal(rate_limit(target, None, 0.1), target)  # nothing to limit against


def test_safe_action_kinds_stay_in_bounds():
    low, high = np.array([-1.0, 0.5]), np.array([1.0, 2.0])
    last = np.array([0.3, 1.5])
    assert np.array_equal(safe_action('zero', low, high, last, None), [0.0, 0.5])  # clipped
    assert np.array_equal(safe_action('hold', low, high, last, None), last)
    assert np.array_equal(safe_action('hold', low, high, None, None), [0.0, 0.5])
    assert np.array_equal(safe_action('default', low, high, last, np.array([-0.5, 1.0])),
                          [-0.5, 1.0])
    assert np.array_equal(safe_action('hold', low, high, np.array([np.nan, 1.0]), None),
                          [0.0, 0.5])


def test_the_zero_safe_action_of_a_position_controlled_policy_is_its_default_pose():
    # Joint targets of 0 rad would move an arm; its rest command is the pose it was trained around.
    pose = [0.0, 0.3, 1.5]
    meta = dict(META, robot={'control_mode': 'position', 'default_joint_pos': pose})
    low, high = np.array([-1.2, -0.7, 0.5]), np.array([1.2, 1.3, 2.5])
    rest = rest_action(meta)
    assert np.array_equal(rest, pose)
    assert np.array_equal(safe_action('zero', low, high, None, None, rest=rest), pose)
    assert np.array_equal(safe_action('hold', low, high, None, None, rest=rest), pose)
    assert np.array_equal(rest_action(dict(META, robot={'control_mode': 'effort'})), [0, 0, 0])
    assert np.array_equal(rest_action(META), [0, 0, 0])
    loop = ControlLoop(LinearPolicy(), meta, make_input('observation', meta, None, None),
                       rate_hz=125.0)
    loop.set_safety(state_timeout_s=TIMEOUT_S, safe_kind='zero', default_action=None,
                    max_action_delta=0.0)
    loop.activate(0)
    assert np.array_equal(loop.step(1 * MS).command, np.clip(pose, -1.0, 1.0))  # no input yet


def test_joint_observation_map_sizes_and_errors():
    mapping = JointObservationMap.from_parameters(None, ['rootx'], META)
    assert mapping.joints == HOPPER_JOINTS and mapping.position_joints == HOPPER_JOINTS[1:]
    assert mapping.size == META['obs_dim'] == 11
    with pytest.raises(ConfigureError, match=r"gives 12 values.*obs_dim is 11.*rootx"):
        JointObservationMap.from_parameters(None, None, META)
    with pytest.raises(ConfigureError, match=r"exclude_joint_positions.*nope"):
        JointObservationMap.from_parameters(None, ['nope'], META)
    renamed = JointObservationMap.from_parameters(
        ['x', 'z', 'pitch', 'hip', 'knee', 'ankle'], ['x'], META)
    assert renamed.differences(META['joint_names'])[0] == "'x' for the model's 'rootx'"


def test_parameter_checks_and_rate_rule():
    assert check_parameter('safe_action', 'brake').startswith("parameter 'safe_action'")
    assert 'zero, hold, default' in check_parameter('safe_action', 'brake')
    assert check_parameter('observation_mode', 'image') is None  # structure allows it
    assert check_parameter('control_rate_hz', 0.5) is not None
    assert check_parameter('control_rate_hz', 0.0) is None
    assert 'repeats' in check_parameter('joint_names', ['a', 'a'])
    assert 'finite' in check_parameter('default_action', [math.nan, 0.0, 0.0])
    assert resolve_rate(0.0, META) == pytest.approx(125.0)
    assert resolve_rate(500.0, META) == 500.0
    with pytest.raises(ConfigureError, match=r"'control_rate_hz' is 50 Hz.*125 Hz"):
        resolve_rate(50.0, META)


def test_observation_decoding():
    terms = [('observation', 11)]
    values = np.linspace(-0.5, 0.5, 11).astype(np.float32)
    good = messages.to_float32_multiarray(values, terms)
    assert np.array_equal(messages.decode_observation(good, 11, terms), values)
    bare = Float32MultiArray(data=values.tolist())
    assert messages.decode_observation(bare, 11, terms).dtype == np.float32
    unlabelled = messages.to_float32_multiarray(values)
    assert np.array_equal(messages.decode_observation(unlabelled, 11, terms), values)
    relabelled = messages.to_float32_multiarray(values, [('qpos', 5), ('qvel', 6)])
    with pytest.raises(ValueError, match='layout segments'):
        messages.decode_observation(relabelled, 11, terms)
    with pytest.raises(ValueError, match='0 values, expected 11'):
        messages.decode_observation(Float32MultiArray(), 11, terms)
    with pytest.raises(ValueError, match='non-finite'):
        messages.decode_observation(Float32MultiArray(data=[math.inf] * 11), 11, terms)


def test_a_policy_path_that_is_a_directory_is_named_as_one(tmp_path):
    folder = tmp_path / 'policy.onnx'
    folder.mkdir()
    with pytest.raises(ConfigureError, match=r"'policy': .*policy.onnx is a directory; "
                                             r'expected a .onnx or .pt file'):
        load_checked_policy(str(folder), '', 1)
    with pytest.raises(ConfigureError, match='file not found'):
        load_checked_policy(str(tmp_path / 'missing.onnx'), '', 1)


# --- the safety monitor ---------------------------------------------------------------------------

def test_safety_monitor_logs_once_per_episode_of_trouble():
    monitor = SafetyMonitor()
    monitor.reset(Safety.WAITING)
    assert monitor.update(Safety.WAITING, 'no input', 1) is None
    assert monitor.level == WARN
    assert monitor.update(Safety.OK, '', 2) is None
    assert monitor.level == OK
    assert monitor.update(Safety.MALFORMED, 'NaN', 3) == (
        'error', 'malformed: NaN; publishing the safe action')
    assert all(monitor.update(Safety.MALFORMED, 'NaN', t) is None for t in range(4, 10))
    assert monitor.level == ERROR
    assert monitor.update(Safety.INFERENCE_ERROR, 'boom', 10)[0] == 'error'  # kind changed
    assert monitor.trouble_episodes == 1
    recovered = monitor.update(Safety.OK, '', 11)
    assert recovered[0] == 'info' and '8 safe ticks' in recovered[1]
    assert monitor.reset_window() is Safety.INFERENCE_ERROR and monitor.reset_window() is None


def test_stale_input_is_a_warning_first_and_an_error_once_it_persists():
    timeout_ns = 200 * MS
    monitor = SafetyMonitor(timeout_ns)
    monitor.reset(Safety.OK)
    escalate_after = STALE_ERROR_FACTOR * timeout_ns
    start = 10 * MS
    assert monitor.update(Safety.STALE, 'old', start) == (
        'warn', 'stale: old; publishing the safe action')
    assert monitor.level == WARN
    # A brief hiccup: stale for a few ms, then good input again -> never an error.
    assert monitor.update(Safety.OK, '', start + 2 * MS)[0] == 'info'
    assert monitor.level == OK
    # Persistent: WARN until it has lasted longer than STALE_ERROR_FACTOR x state timeout.
    start = 100 * MS
    assert monitor.update(Safety.STALE, 'old', start)[0] == 'warn'
    assert monitor.update(Safety.STALE, 'old', start + escalate_after) is None
    assert monitor.level == WARN
    log = monitor.update(Safety.STALE, 'older', start + escalate_after + 1)
    assert log[0] == 'error' and '5 x state_timeout_s' in log[1] and 'older' in log[1]
    assert monitor.level == ERROR
    assert monitor.update(Safety.STALE, 'older', start + 2 * escalate_after) is None  # once
    assert monitor.update(Safety.OK, '', start + 3 * escalate_after)[0] == 'info'
    assert monitor.trouble_episodes == 2
    # The rule follows the state timeout.
    monitor.set_state_timeout(10 * MS)
    assert monitor.stale_error_after_ns == STALE_ERROR_FACTOR * 10 * MS


# --- the control loop -----------------------------------------------------------------------------

def test_loop_acts_on_fresh_input_and_publishes_the_safe_action_otherwise():
    loop = make_loop(safe_kind='default', default_action=[0.5, -0.5, 0.25])
    policy = LinearPolicy()
    step = loop.step(1 * MS)  # no input yet
    assert np.array_equal(step.command, [0.5, -0.5, 0.25]) and step.log is None
    assert loop.safety.state is Safety.WAITING

    loop.receive(observation_msg(0.3), 2 * MS)
    step = loop.step(3 * MS)
    assert np.allclose(step.command, policy(np.full(11, 0.3, np.float32)))
    assert loop.safety.state is Safety.OK and loop.inferences == 1
    loop.step(4 * MS)  # the same message: the cached result, no second inference
    assert loop.inferences == 1

    # 1 ms past the timeout: safe action at once, logged as a warning.
    stale_at = 2 * MS + int(TIMEOUT_S * 1e9) + MS
    step = loop.step(stale_at)
    assert np.array_equal(step.command, [0.5, -0.5, 0.25])
    assert step.log[0] == 'warn' and loop.safety.state is Safety.STALE
    # Still stale much later: escalated to an error, once.
    later = stale_at + STALE_ERROR_FACTOR * int(TIMEOUT_S * 1e9) + MS
    assert loop.step(later).log[0] == 'error'
    assert loop.step(later + MS).log is None
    # Input returns: the policy again.
    loop.receive(observation_msg(-0.2), later + 2 * MS)
    step = loop.step(later + 3 * MS)
    assert np.allclose(step.command, policy(np.full(11, -0.2, np.float32)))
    assert step.log[0] == 'info'

    # Garbage never stops the loop: the safe action, and an error.
    loop.receive(Float32MultiArray(data=[math.nan] * 11), later + 4 * MS)
    step = loop.step(later + 5 * MS)
    assert np.array_equal(step.command, [0.5, -0.5, 0.25]) and step.log[0] == 'error'
    assert loop.safety.state is Safety.MALFORMED


def test_rate_limit_and_deactivation():
    loop = make_loop(safe_kind='hold', max_action_delta=0.01)
    loop.receive(observation_msg(1.0), 0)
    first = loop.step(1).command
    loop.receive(observation_msg(-1.0), 2)
    second = loop.step(3).command
    assert np.all(np.abs(second - first) <= 0.01 + 1e-12)
    assert np.array_equal(loop.deactivate(4), second)  # hold: the last command
    assert loop.safety.state is Safety.INACTIVE and not loop.active


def test_default_action_is_checked_whenever_it_is_set():
    loop = make_loop()
    with pytest.raises(ConfigureError, match=r"'default_action' has 2 values; expected 3"):
        loop.set_safety(TIMEOUT_S, 'zero', [0.0, 0.0], 0.0)  # safe_action is not default
    with pytest.raises(ConfigureError, match=r"'default_action'\[2\] is 9, outside the action "
                                             r"bounds \[-1, 1\] of actuator 'foot'"):
        loop.set_safety(TIMEOUT_S, 'hold', [0.0, 0.0, 9.0], 0.0)
    with pytest.raises(ConfigureError, match=r"'default_action' is not set"):
        loop.set_safety(TIMEOUT_S, 'default', None, 0.0)
    assert loop.default_action is None  # nothing invalid was stored
    loop.set_safety(TIMEOUT_S, 'zero', [0.1, 0.2, 0.3], 0.0)
    assert np.array_equal(loop.default_action, [0.1, 0.2, 0.3])


# --- the image input's frame stack ----------------------------------------------------------------

def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(count)]


def _image_input():
    from fpmd_ros.controller.inputs import ImageInput

    return ImageInput({'frame_stack': 3}, (8, 8, 9))


def _feed(source, frames, stamps, announce_before=None, received_gap_ns=MS):
    """Stacks for frames with these stamps; ``announce_before`` maps a frame index to the
    episode-start stamp announced just before that frame arrives."""
    stacks = []
    for i, (frame, stamp) in enumerate(zip(frames, stamps, strict=True)):
        if announce_before and i in announce_before:
            assert source.episode_start(announce_before[i], None) is None
        stacks.append(source.observation(messages.encode_image(frame, stamp, 'camera'),
                                         i * received_gap_ns, int(TIMEOUT_S * 1e9)))
    return stacks


def _reference(frames, starts) -> list[np.ndarray]:
    """What the training env's FrameStack gives, reset at the indices in ``starts``."""
    from fpmd_core.frames import FrameStack

    stack = FrameStack(3)
    return [stack.reset(f) if i in starts else stack.push(f) for i, f in enumerate(frames)]


def test_an_announced_episode_start_restarts_the_stack_at_its_frame():
    frames = _frames(6)
    source = _image_input()
    stacks = _feed(source, frames, [10, 20, 30, 40, 50, 60], announce_before={3: 40})
    for got, want in zip(stacks, _reference(frames, {0, 3}), strict=True):
        assert np.array_equal(got, want)
    assert source.episode_restarts == 1 and source.refills == 2


def test_an_announcement_before_a_lost_frame_restarts_at_the_next_one():
    frames = _frames(4)
    source = _image_input()
    # Announced 30, but the frame stamped 30 never arrives: 40 is the first of the episode.
    stacks = _feed(source, frames, [10, 20, 40, 50], announce_before={1: 30})
    for got, want in zip(stacks, _reference(frames, {0, 2}), strict=True):
        assert np.array_equal(got, want)


def test_a_late_announcement_restarts_only_the_newest_frame():
    frames = _frames(3)
    source = _image_input()
    msgs = [messages.encode_image(f, s, 'camera') for f, s in zip(frames, (10, 20, 30),
                                                                    strict=True)]
    for i, msg in enumerate(msgs):
        source.observation(msg, i * MS, int(TIMEOUT_S * 1e9))
    assert source.episode_start(20, msgs[2]) is None  # older than the newest frame: too late
    restarted = source.episode_start(30, msgs[2])
    assert np.array_equal(restarted, np.concatenate([frames[2]] * 3, axis=-1))
    assert source.episode_start(30, msgs[1]) is None  # the newest input is another message


def test_a_zero_stamp_restarts_at_the_next_frame():
    frames = _frames(4)
    source = _image_input()
    stacks = _feed(source, frames, [10, 20, 30, 40], announce_before={2: 0})
    for got, want in zip(stacks, _reference(frames, {0, 2}), strict=True):
        assert np.array_equal(got, want)


def test_a_gap_or_activation_restarts_the_stack():
    frames = _frames(4)
    source = _image_input()
    gap = int(TIMEOUT_S * 1e9) + MS  # more than state_timeout_s between arrivals
    stacks = _feed(source, frames[:2], [10, 20], received_gap_ns=gap)
    for got, want in zip(stacks, _reference(frames[:2], {0, 1}), strict=True):
        assert np.array_equal(got, want)
    source.reset()  # activation
    stack = source.observation(messages.encode_image(frames[2], 30, 'camera'), 2 * gap,
                               int(TIMEOUT_S * 1e9))
    assert np.array_equal(stack, np.concatenate([frames[2]] * 3, axis=-1))
