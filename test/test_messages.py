"""fpmd_ros.messages: round trips and the validation of everything that comes from outside."""

from __future__ import annotations

import math

import numpy as np
import pytest
from std_msgs.msg import Float64MultiArray

from fpmd_ros import messages


def _transition(**overrides) -> Float64MultiArray:
    fields = dict(observation=np.float32([0.1, -2.5, 3.0]), reward=-0.75, terminated=False,
                  truncated=True, step=12, episode=3, stamp_ns=2**52 + 7)
    fields.update(overrides)
    return messages.encode_transition(**fields)


def test_transition_round_trip_is_exact():
    obs = np.float32([0.1, -2.5, 3.0])
    t = messages.decode_transition(_transition(observation=obs), obs_dim=3)
    np.testing.assert_array_equal(t.observation, obs)
    assert t.observation.dtype == np.float32
    assert (t.reward, t.terminated, t.truncated, t.step, t.episode, t.stamp_ns) == \
        (-0.75, False, True, 12, 3, 2**52 + 7)
    labels = [(d.label, d.size, d.stride) for d in _transition().layout.dim]
    assert labels == [('observation', 3, 3), ('reward', 1, 1), ('terminated', 1, 1),
                      ('truncated', 1, 1), ('step', 1, 1), ('episode', 1, 1), ('stamp', 1, 1)]


def _with_data(msg, index, value):
    data = list(msg.data)
    data[index] = value
    msg.data = data
    return msg


@pytest.mark.parametrize('make_bad, problem', [
    (lambda: _with_data(_transition(), 0, math.nan), "'observation' is not finite"),
    (lambda: _with_data(_transition(), 3, math.inf), "'reward' is not finite"),
    (lambda: _with_data(_transition(), 4, 0.5), "'terminated' is 0.5"),
    (lambda: _with_data(_transition(), 6, 2.5), "'step' is 2.5"),
    (lambda: _with_data(_transition(), 7, -1.0), "'episode' is -1.0"),
    (lambda: _with_data(_transition(), 8, 0.5), "'stamp' is 0.5"),
    (lambda: messages.to_float64_multiarray(np.zeros(8), [('observation', 3), ('reward', 1),
                                                          ('terminated', 1), ('truncated', 1),
                                                          ('step', 2)]), 'missing: episode'),
    (lambda: messages.to_float64_multiarray(np.zeros(8)), 'missing'),
])
def test_bad_transitions_name_the_problem(make_bad, problem):
    with pytest.raises(ValueError, match=problem):
        messages.decode_transition(make_bad())


def test_transition_sizes_are_checked():
    with pytest.raises(ValueError, match='3 values, expected 4'):
        messages.decode_transition(_transition(), obs_dim=4)
    msg = _transition()
    msg.data = list(msg.data)[:-1]
    with pytest.raises(ValueError, match='sum to 9 but the data has 8'):
        messages.decode_transition(msg)


@pytest.mark.parametrize('values, problem', [
    ([0.1], 'has 1 values, expected 2'),
    ([], 'has 0 values, expected 2'),
    ([0.1, math.nan], 'value 1 is not finite'),
    ([-math.inf, 0.0], 'value 0 is not finite'),
])
def test_bad_commands_name_the_problem(values, problem):
    msg = Float64MultiArray()
    msg.data = values
    with pytest.raises(ValueError, match=problem):
        messages.decode_command(msg, act_dim=2)


def test_commands_with_and_without_layout():
    np.testing.assert_array_equal(
        messages.decode_command(messages.encode_command([0.5, -1.0]), 2), [0.5, -1.0])
    plain = Float64MultiArray()  # forward_command_controller style: no layout
    plain.data = [1.0, 2.0]
    np.testing.assert_array_equal(messages.decode_command(plain, 2), [1.0, 2.0])


def test_labelled_float32_arrays():
    terms = [('position', 2), ('velocity', 1)]
    msg = messages.to_float32_multiarray([1.0, 2.0, 3.0], terms)
    np.testing.assert_array_equal(messages.from_multiarray(msg, terms, np.float32), [1, 2, 3])
    with pytest.raises(ValueError, match='expected'):
        messages.from_multiarray(msg, [('position', 3)])
    with pytest.raises(ValueError, match='sum to 2 but 3'):
        messages.to_float32_multiarray([1.0, 2.0, 3.0], [('a', 2)])


def test_joint_state_build_and_parse():
    msg = messages.joint_state(3_250_000_000, ['a', 'b'], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0])
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 250_000_000)
    parsed = messages.parse_joint_state(msg, ['b', 'a'])
    np.testing.assert_array_equal(parsed['position'], [2.0, 1.0])
    np.testing.assert_array_equal(parsed['effort'], [6.0, 5.0])
    with pytest.raises(ValueError, match='lacks joints: c'):
        messages.parse_joint_state(msg, ['a', 'c'])
    msg.velocity = [math.nan, 0.0]
    with pytest.raises(ValueError, match="velocity of 'a' is not finite"):
        messages.parse_joint_state(msg)
    with pytest.raises(ValueError, match='1 values for 2 joints'):
        messages.joint_state(0, ['a', 'b'], position=[1.0])


def test_episode_summary_round_trip_and_validation():
    msg = messages.encode_episode_summary(4, 104, -12.5, 37, True)
    assert [(d.label, d.size) for d in msg.layout.dim] == [
        ('episode', 1), ('seed', 1), ('return', 1), ('length', 1), ('terminated', 1)]
    assert messages.decode_episode_summary(msg) == messages.EpisodeSummary(4, 104, -12.5, 37, True)
    for index, value, problem in ((2, math.nan, "'return' is not finite"),
                                  (3, 2.5, "'length' is 2.5"), (0, -1.0, "'episode' is -1.0"),
                                  (4, 0.5, "'terminated' is 0.5")):
        with pytest.raises(ValueError, match=problem):
            messages.decode_episode_summary(_with_data(
                messages.encode_episode_summary(4, 104, -12.5, 37, True), index, value))
    with pytest.raises(ValueError, match='expected'):
        messages.decode_episode_summary(messages.to_float64_multiarray([1.0, 2.0, 3.0, 4.0]))
