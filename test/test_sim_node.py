"""mujoco_sim over real DDS: reset/step, lockstep determinism, bad input, realtime behaviour.

The sim runs on its own context and executor thread (a separate DDS participant); the test talks
to it only through its topics and services.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_helpers import reliable_qos, spin_until
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from sim_helpers import RunningSim
from std_msgs.msg import Float32MultiArray, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from fpmd_core.tasks import make_env, mujoco_handles
from fpmd_ros import messages
from fpmd_ros.qos import EPISODE_QOS, LOCKSTEP_QOS
from fpmd_ros.sim.node import MujocoSimNode, SimParameterError

PID = os.getpid()  # in namespaces: another run sharing the DDS domain cannot interfere
TASK = 'InvertedPendulum-v5'  # control period 0.04 s; random actions end episodes in ~5 steps


class SimClient:
    """Talks to one sim through its topics and services, from the test's own node."""

    def __init__(self, context, executor, namespace: str, lockstep: bool = True):
        self.executor = executor
        self.node = rclpy.create_node(f'client_{namespace}', context=context)
        executor.add_node(self.node)
        ns = f'/{namespace}'
        self.transitions: list[messages.Transition] = []
        self.observations: list[Float32MultiArray] = []
        self.joint_states: list[tuple[float, JointState]] = []
        self.clock: list[ClockMsg] = []
        self.command_pub = self.node.create_publisher(
            Float64MultiArray, f'{ns}/commands', LOCKSTEP_QOS if lockstep else reliable_qos(1))
        self.node.create_subscription(
            Float64MultiArray, f'{ns}/transition',
            lambda m: self.transitions.append(messages.decode_transition(m)), LOCKSTEP_QOS)
        self.node.create_subscription(Float32MultiArray, f'{ns}/observation',
                                      self.observations.append, reliable_qos(100))
        self.node.create_subscription(
            JointState, f'{ns}/joint_states',
            lambda m: self.joint_states.append((time.monotonic(), m)), reliable_qos(100))
        self.node.create_subscription(ClockMsg, '/clock', self.clock.append, reliable_qos(100))
        self.episodes: list[messages.EpisodeSummary] = []
        self.node.create_subscription(
            Float64MultiArray, f'{ns}/episode',
            lambda m: self.episodes.append(messages.decode_episode_summary(m)), EPISODE_QOS)
        self.reset_client = self.node.create_client(Trigger, f'{ns}/mujoco_sim/reset')
        self.pause_client = self.node.create_client(SetBool, f'{ns}/mujoco_sim/set_pause')
        self.params_client = self.node.create_client(SetParameters,
                                                     f'{ns}/mujoco_sim/set_parameters')
        assert spin_until(executor, lambda: (
            self.command_pub.get_subscription_count() > 0 and self.reset_client.service_is_ready()
            and self.node.count_publishers(f'{ns}/joint_states') > 0), 10.0), 'sim not found'
        # Let the sim's side match our subscriptions too (it publishes only to matched readers).
        spin_until(executor, lambda: False, 0.3)

    def call(self, client, request, timeout_s: float = 5.0):
        future = client.call_async(request)
        assert spin_until(self.executor, future.done, timeout_s), f'{client.service_name} timeout'
        return future.result()

    def reset(self) -> messages.Transition:
        reply = self.call(self.reset_client, Trigger.Request())
        assert reply.success, reply.message
        episode = int(reply.message.split()[1])
        assert self.wait_for(lambda t: (t.episode, t.step) == (episode, 0))
        return self.transitions[-1]

    def send(self, values) -> None:
        msg = Float64MultiArray()
        msg.data = [float(v) for v in values]
        self.command_pub.publish(msg)

    def wait_for(self, predicate, timeout_s: float = 5.0) -> bool:
        return spin_until(self.executor,
                          lambda: bool(self.transitions) and predicate(self.transitions[-1]),
                          timeout_s)


@pytest.fixture
def lockstep_sim():
    sim = RunningSim(f'sim_lockstep_p{PID}', task=TASK, seed=7, max_episode_steps=8)
    yield sim
    sim.stop()


def test_reset_and_step_over_dds(ros_context, ros_executor, lockstep_sim):
    client = SimClient(ros_context, ros_executor, f'sim_lockstep_p{PID}')
    first = client.reset()
    assert first.step == 0 and first.reward == 0.0
    assert not first.terminated and not first.truncated
    assert first.observation.shape == (4,) and first.observation.dtype == np.float32

    client.send([0.5])
    assert client.wait_for(lambda t: (t.episode, t.step) == (first.episode, 1))
    step = client.transitions[-1]
    assert step.reward == 1.0  # InvertedPendulum: +1 per step alive
    # observation and joint_states show the state after the step: the reset's, then the step's.
    def observed(msg):
        return np.array_equal(messages.from_multiarray(msg, dtype=np.float32), step.observation)

    assert spin_until(ros_executor, lambda: any(observed(m) for m in client.observations), 2.0)
    # The observation topic is labelled by the task's observation terms.
    assert [(d.label, d.size) for d in client.observations[-1].layout.dim] == [('observation', 4)]
    # joint_states are stamped with sim time: the start state is at 0, the reset and the step
    # take one control period (0.04 s) each. The transition carries the same stamp.
    assert step.stamp_ns == 80_000_000 and first.stamp_ns == 40_000_000
    assert spin_until(ros_executor, lambda: any(
        _stamp_ns(m.header.stamp) == 80_000_000 for _, m in client.joint_states), 2.0)
    joint_msg = client.joint_states[-1][1]
    assert list(joint_msg.name) == ['slider', 'hinge']
    assert joint_msg.position[0] == step.observation[0]  # InvertedPendulum obs = qpos, qvel
    assert len(joint_msg.velocity) == 2 and len(joint_msg.effort) == 2


def test_lockstep_equals_in_process_stepping(ros_context, ros_executor, lockstep_sim):
    """Over ROS == in-process, value for value, across episode boundaries (seed + k rule)."""
    client = SimClient(ros_context, ros_executor, f'sim_lockstep_p{PID}')
    first = client.reset()  # the node reset once at start (episode 0, seed 7): now episode 1
    assert first.episode == 1

    env = make_env(TASK, max_episode_steps=8, normalized_actions=False)
    episode = 1
    expected_obs, _ = env.reset(seed=7 + episode)
    np.testing.assert_array_equal(first.observation, expected_obs)

    rng = np.random.default_rng(0)
    step, ends = 0, []
    for _ in range(30):
        action = rng.uniform(-3.0, 3.0, size=1)
        count = len(client.transitions)
        client.send(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        step += 1
        assert client.wait_for(lambda t, e=episode, s=step: (t.episode, t.step) == (e, s)), (
            f'no transition ({episode}, {step})')
        got = client.transitions[-1]
        assert len(client.transitions) == count + 1, 'exactly one transition per command'
        np.testing.assert_array_equal(got.observation, obs)
        assert got.reward == reward
        assert (got.terminated, got.truncated) == (terminated, truncated)
        if terminated or truncated:
            ends.append((terminated, truncated))
            episode, step = episode + 1, 0
            # The sim resets itself and publishes the next episode's step 0.
            assert client.wait_for(lambda t, e=episode: (t.episode, t.step) == (e, 0))
            expected_obs, _ = env.reset(seed=7 + episode)
            np.testing.assert_array_equal(client.transitions[-1].observation, expected_obs)
            assert client.transitions[-1].reward == 0.0
    assert (True, False) in ends and (False, True) in ends, ends  # terminated and truncated


def test_lockstep_episode_summaries_match_in_process_returns(ros_context, ros_executor,
                                                            lockstep_sim):
    """One ``episode`` summary per finished episode: its index, seed, return, length and end."""
    client = SimClient(ros_context, ros_executor, f'sim_lockstep_p{PID}')
    first = client.reset()  # episode 1, seed 7 + 1 (episode 0 is cut short: no summary)
    env = make_env(TASK, max_episode_steps=8, normalized_actions=False)
    rng = np.random.default_rng(1)
    expected, episode = [], first.episode
    env.reset(seed=7 + episode)
    total, length = 0.0, 0
    while len(expected) < 3:
        action = rng.uniform(-3.0, 3.0, size=1)
        client.send(action)
        _, reward, terminated, truncated, _ = env.step(action)
        total, length = total + reward, length + 1
        if terminated or truncated:
            expected.append(messages.EpisodeSummary(episode, 7 + episode, total, length,
                                                    terminated))
            episode, total, length = episode + 1, 0.0, 0
            env.reset(seed=7 + episode)
            assert client.wait_for(lambda t, e=episode: (t.episode, t.step) == (e, 0))
        else:
            assert client.wait_for(lambda t, e=episode, n=length: (t.episode, t.step) == (e, n))
    assert spin_until(ros_executor, lambda: len(client.episodes) >= 3, 5.0)
    assert client.episodes == expected


def test_realtime_publishes_episode_summaries(ros_context, ros_executor):
    # No command: zero controls; InvertedPendulum stays up for 5 steps, so each episode is
    # truncated by the limit: return 5 (+1 per step alive), length 5, not terminated.
    sim = RunningSim(f'sim_rt_episodes_p{PID}', task=TASK, mode='realtime', seed=3,
                     max_episode_steps=5, realtime_factor=4.0)
    try:
        client = SimClient(ros_context, ros_executor, f'sim_rt_episodes_p{PID}', lockstep=False)
        assert spin_until(ros_executor, lambda: len(client.episodes) >= 3, 10.0)
        for summary in client.episodes:
            assert summary.seed == 3 + summary.episode
            assert (summary.episode_return, summary.length, summary.terminated) == (5.0, 5, False)
        indices = [s.episode for s in client.episodes]
        assert indices == list(range(indices[0], indices[0] + len(indices)))
    finally:
        sim.stop()


def test_malformed_commands_are_rejected(ros_context, ros_executor, lockstep_sim):
    client = SimClient(ros_context, ros_executor, f'sim_lockstep_p{PID}')
    first = client.reset()
    bad_layout = Float64MultiArray()
    bad_layout.data = [0.1]
    bad_layout.layout = messages.segment_layout([('action', 2)])
    for bad in ([0.1, 0.2], [math.nan], [math.inf], [-math.inf], [], bad_layout):
        if isinstance(bad, Float64MultiArray):
            client.command_pub.publish(bad)
        else:
            client.send(bad)
    count = len(client.transitions)
    spin_until(ros_executor, lambda: len(client.transitions) > count, 1.0)
    assert len(client.transitions) == count, 'a malformed command produced a transition'
    assert spin_until(ros_executor, lambda: lockstep_sim.node.rejected_commands == 6, 2.0)

    client.send([0.25])  # the node is alive and the next valid command works
    assert client.wait_for(lambda t: (t.episode, t.step) == (first.episode, 1))
    assert len(client.transitions) == count + 1


def test_invalid_parameters_are_refused_with_reason(ros_context, ros_executor):
    cases = [
        ({'task': 'NoSuchTask-v5'}, "'task'"),
        ({'task': 'walker-fly'}, "'task'"),
        ({'mode': 'fast'}, 'lockstep, realtime'),
        ({'realtime_factor': -1.0}, 'realtime_factor'),
        ({'command_timeout_s': 0.0}, 'command_timeout_s'),
        ({'seed': -3}, 'seed'),
        ({'publish_clock': True}, 'publish_clock'),
        ({'max_episode_steps': 'ten'}, 'max_episode_steps'),
        # Names the node does not have (rclpy alone would ignore them).
        ({'sed': 3}, r"^parameter 'sed' is not a mujoco_sim parameter \(did you mean 'seed'\?\)$"),
        ({'task': TASK, 'policy': 'x.onnx'}, r"parameter 'policy' is not a mujoco_sim parameter "
         r"\(its parameters: task, mode, seed, "),
    ]
    for overrides, reason in cases:
        with pytest.raises(SimParameterError, match=reason):
            MujocoSimNode(context=ros_context,
                          parameter_overrides=[Parameter(k, value=v)
                                               for k, v in overrides.items()])

    # At runtime, through the node's parameter service over DDS.
    sim = RunningSim(f'sim_params_p{PID}', task=TASK, mode='realtime')
    try:
        client = SimClient(ros_context, ros_executor, f'sim_params_p{PID}', lockstep=False)

        def set_param(name, value, type_, field):
            request = SetParameters.Request(parameters=[ParameterMsg(
                name=name, value=ParameterValue(type=type_, **{field: value}))])
            return client.call(client.params_client, request).results[0]

        double, string = ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_STRING
        result = set_param('realtime_factor', -2.0, double, 'double_value')
        assert not result.successful and 'realtime_factor' in result.reason
        result = set_param('mode', 'lockstep', string, 'string_value')
        assert not result.successful and 'read-only' in result.reason
        result = set_param('realtime_factor', 4.0, double, 'double_value')
        assert result.successful
        assert sim.node._timer.timer_period_ns == 10_000_000  # 0.04 s / 4
    finally:
        sim.stop()


def test_rclpy_own_parameters_are_accepted_as_overrides(ros_context):
    """use_sim_time and qos_overrides.* are rclpy's, not the node's: allowed; the node's own
    overrides still apply with their declared types."""
    node = MujocoSimNode(context=ros_context, parameter_overrides=[
        Parameter('task', value=TASK), Parameter('seed', value=7),
        Parameter('use_sim_time', value=True),
        Parameter('qos_overrides./clock.publisher.depth', value=3)])
    try:
        assert node.get_parameter('seed').value == 7
        assert node.describe_parameter('seed').type == ParameterType.PARAMETER_INTEGER
        assert node.describe_parameter('task').read_only
        assert node.get_parameter('use_sim_time').value is True
    finally:
        node.destroy_node()


def test_seed_parameter_restarts_the_seed_sequence(ros_context, ros_executor, lockstep_sim):
    client = SimClient(ros_context, ros_executor, f'sim_lockstep_p{PID}')
    request = SetParameters.Request(parameters=[ParameterMsg(name='seed', value=ParameterValue(
        type=ParameterType.PARAMETER_INTEGER, integer_value=100))])
    assert client.call(client.params_client, request).results[0].successful
    reply = client.call(client.reset_client, Trigger.Request())
    assert reply.message == 'episode 1 seed 100'
    reply = client.call(client.reset_client, Trigger.Request())
    assert reply.message == 'episode 2 seed 101'
    env = make_env(TASK, max_episode_steps=8, normalized_actions=False)
    expected, _ = env.reset(seed=101)
    assert client.wait_for(lambda t: (t.episode, t.step) == (2, 0))
    np.testing.assert_array_equal(client.transitions[-1].observation, expected)


def test_realtime_advances_at_the_task_rate(ros_context, ros_executor):
    sim = RunningSim(f'sim_rt_p{PID}', task=TASK, mode='realtime', publish_clock=True)
    try:
        client = SimClient(ros_context, ros_executor, f'sim_rt_p{PID}', lockstep=False)
        client.joint_states.clear()
        spin_until(ros_executor, lambda: False, 1.2)
        (t0, first), (t1, last) = client.joint_states[0], client.joint_states[-1]
        sim_s = (_stamp_ns(last.header.stamp) - _stamp_ns(first.header.stamp)) * 1e-9
        wall_s = t1 - t0
        assert wall_s > 0.8
        assert 0.75 < sim_s / wall_s < 1.25, f'{sim_s:.3f} sim s in {wall_s:.3f} wall s'
        stamps = [_stamp_ns(m.header.stamp) for _, m in client.joint_states]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        # One joint_states per 0.04 s control step, monotonic across episodes; the tick that
        # ends an episode also resets, and a reset takes one more control period.
        assert set(gaps) <= {40_000_000, 80_000_000}, gaps
        assert gaps.count(40_000_000) > gaps.count(80_000_000), gaps
        assert client.clock and all(
            _stamp_ns(b.clock) > _stamp_ns(a.clock)
            for a, b in zip(client.clock, client.clock[1:], strict=False))

        # Pause: sim time stops; resume: it goes on.
        assert client.call(client.pause_client, SetBool.Request(data=True)).success
        spin_until(ros_executor, lambda: False, 0.15)
        count = len(client.joint_states)
        spin_until(ros_executor, lambda: False, 0.4)
        assert len(client.joint_states) == count, 'stepped while paused'
        assert client.call(client.pause_client, SetBool.Request(data=False)).success
        assert spin_until(ros_executor, lambda: len(client.joint_states) > count + 3, 2.0)
    finally:
        sim.stop()


def test_realtime_holds_then_zeroes_the_command(ros_context, ros_executor):
    # HalfCheetah never terminates (1000-step episodes of 0.05 s): no reset in the window.
    task, timeout_s, command = 'HalfCheetah-v5', 0.4, 0.5
    sim = RunningSim(f'sim_hold_p{PID}', task=task, mode='realtime', command_timeout_s=timeout_s)
    try:
        client = SimClient(ros_context, ros_executor, f'sim_hold_p{PID}', lockstep=False)
        env = make_env(task, normalized_actions=False)
        model, _ = mujoco_handles(env)
        # effort of an actuated hinge = the motor's force = gear * ctrl
        actuated = {model.joint(int(model.actuator_trnid[a, 0])).name:
                    float(model.actuator_gear[a, 0]) for a in range(model.nu)}
        env.close()

        def efforts(msg: JointState) -> dict[str, float]:
            return {n: e for n, e in zip(msg.name, msg.effort, strict=True) if n in actuated}

        # Before any command, the controls are zero.
        assert spin_until(ros_executor, lambda: len(client.joint_states) > 2, 2.0)
        assert set(efforts(client.joint_states[-1][1]).values()) == {0.0}

        for _ in range(4):
            client.send([command] * model.nu)
            spin_until(ros_executor, lambda: False, 0.05)
        client.send([math.nan] * model.nu)  # rejected: the last valid command is kept
        last_sent = time.monotonic()
        client.joint_states.clear()
        spin_until(ros_executor, lambda: False, timeout_s + 0.45)

        held = [m for t, m in client.joint_states if t < last_sent + timeout_s - 0.1]
        zeroed = [m for t, m in client.joint_states if t > last_sent + timeout_s + 0.1]
        assert len(held) >= 3 and len(zeroed) >= 3, (len(held), len(zeroed))
        for msg in held:
            assert efforts(msg) == pytest.approx({n: g * command for n, g in actuated.items()})
        for msg in zeroed:
            assert set(efforts(msg).values()) == {0.0}
        assert sim.node.rejected_commands == 1
    finally:
        sim.stop()


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec
