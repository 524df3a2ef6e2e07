"""A realtime mujoco_sim's ``~/applied_command`` over real DDS: one message per control step, with
the episode and step of the state it is applied in, the action, and whether the sim held an
older command or zeroed the controls; replayed in-process from the episode's seed, the applied
actions give the sim's return. Also the message's encoding and validation."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import rclpy
from ros_helpers import reliable_qos, spin_until
from sim_helpers import RunningSim
from std_msgs.msg import Float64MultiArray

from fpmd_core.tasks import make_env
from fpmd_ros import messages
from fpmd_ros.qos import APPLIED_COMMAND_QOS, EPISODE_QOS

PID = os.getpid()
TASK = 'InvertedPendulum-v5'  # one actuator, 25 Hz; with zero controls it stays up for 5 steps
EPISODE_STEPS = 5


def test_applied_command_round_trip_and_validation():
    msg = messages.encode_applied_command(3, 17, [0.5, -1.25], 2, False)
    assert [(d.label, d.size) for d in msg.layout.dim] == [
        ('episode', 1), ('step', 1), ('action', 2), ('held', 1), ('timed_out', 1)]
    applied = messages.decode_applied_command(msg, act_dim=2)
    assert (applied.episode, applied.step, applied.held, applied.timed_out) == (3, 17, 2, False)
    np.testing.assert_array_equal(applied.action, [0.5, -1.25])
    with pytest.raises(ValueError, match='action has 2 values, expected 3'):
        messages.decode_applied_command(msg, act_dim=3)
    bad = messages.encode_applied_command(3, 17, [0.5, -1.25], 2, False)
    bad.data = [3.0, 17.5, 0.5, -1.25, 2.0, 0.0]
    with pytest.raises(ValueError, match="'step' is 17.5, expected a non-negative integer"):
        messages.decode_applied_command(bad)
    bad.data = [3.0, 17.0, math.nan, -1.25, 2.0, 0.0]
    with pytest.raises(ValueError, match="'action' is not finite"):
        messages.decode_applied_command(bad)
    bad.data = [3.0, 17.0, 0.5, -1.25, 2.0, 0.5]
    with pytest.raises(ValueError, match="'timed_out' is 0.5, expected 0 or 1"):
        messages.decode_applied_command(bad)
    with pytest.raises(ValueError, match='labels'):
        messages.decode_applied_command(messages.to_float64_multiarray([1.0, 2.0, 3.0]))


def _replayed_return(seed: int, actions) -> float:
    env = make_env(TASK, EPISODE_STEPS, normalized_actions=False)
    env.reset(seed=seed)
    total = sum(float(env.step(np.asarray(a))[1]) for a in actions)
    env.close()
    return total


def test_realtime_sim_publishes_each_applied_command(ros_context, ros_executor):
    namespace = f'sim_applied_p{PID}'
    sim = RunningSim(namespace, task=TASK, mode='realtime', seed=3,
                     max_episode_steps=EPISODE_STEPS, realtime_factor=4.0,
                     command_timeout_s=60.0)
    try:
        node = rclpy.create_node(f'applied_client_p{PID}', context=ros_context)
        ros_executor.add_node(node)
        applied: list[messages.AppliedCommand] = []
        summaries: list[messages.EpisodeSummary] = []
        node.create_subscription(
            Float64MultiArray, f'/{namespace}/mujoco_sim/applied_command',
            lambda m: applied.append(messages.decode_applied_command(m, act_dim=1)),
            APPLIED_COMMAND_QOS)
        node.create_subscription(
            Float64MultiArray, f'/{namespace}/episode',
            lambda m: summaries.append(messages.decode_episode_summary(m)), EPISODE_QOS)
        commands = node.create_publisher(Float64MultiArray, f'/{namespace}/commands',
                                         reliable_qos(1))

        # No command yet: every step applies zero controls, flagged as timed out.
        def complete():
            # Episodes whose every step was published after we subscribed, and whose applied
            # commands have all arrived: one topic is delivered in order, so a command of a later
            # episode follows them; the summary comes on another topic and may overtake them.
            return [s for s in summaries if applied and applied[0].episode < s.episode
                    < applied[-1].episode]

        assert spin_until(ros_executor, lambda: len(complete()) >= 2, 20.0)
        for summary in complete():
            steps = [a for a in applied if a.episode == summary.episode]
            assert [a.step for a in steps] == list(range(summary.length))
            assert all(a.timed_out and a.held == 0 and not a.action.any() for a in steps)
            assert _replayed_return(summary.seed, [a.action for a in steps]) == \
                summary.episode_return

        # One command: the next step applies it as new (held 0), the later ones hold it.
        assert spin_until(ros_executor, lambda: commands.get_subscription_count() > 0, 10.0)
        count = len(applied)
        commands.publish(messages.encode_command([0.25]))
        assert spin_until(ros_executor, lambda: sum(
            1 for a in applied[count:] if not a.timed_out) >= 4, 10.0)
        given = [a for a in applied[count:] if not a.timed_out]
        assert [a.held for a in given[:4]] == [0, 1, 2, 3]
        assert all(a.action.tolist() == [0.25] for a in given)
        # The step indices keep counting within each episode and restart at 0 with the next.
        for before, after in zip(applied[count:], applied[count + 1:], strict=False):
            assert (after.episode, after.step) in ((before.episode, before.step + 1),
                                                   (before.episode + 1, 0))
    finally:
        sim.stop()
