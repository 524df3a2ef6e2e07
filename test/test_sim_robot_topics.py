"""mujoco_sim's robot topics over real DDS: ``imu`` and the command in force (``~/goal``,
``~/cmd_vel``) for every state, stamped like its joint_states, and the ``goal`` / ``cmd_vel``
overrides that last until the next episode. Lockstep, checked against an in-process env driven
the same way (same seeds, actions and overrides)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from geometry_msgs.msg import PointStamped, Twist
from ros_helpers import reliable_qos, spin_until
from runner_helpers import REPO_ROOT
from sensor_msgs.msg import Imu
from sim_helpers import RunningSim
from test_sim_node import SimClient

from fpmd_core.tasks import make_env
from fpmd_ros import messages
from fpmd_ros.qos import ROBOT_COMMAND_QOS

PID = os.getpid()
ARM = os.path.join(REPO_ROOT, 'sim', 'arm_reach.yaml')
QUADRUPED = os.path.join(REPO_ROOT, 'sim', 'quadruped_walk.yaml')
ARM_GOAL = np.array([0.3, 0.15, 0.1])


class RobotTopics:
    """The sim's robot topics from the test's side (on a SimClient's node): what arrived on
    ``imu``, ``~/goal`` and ``~/cmd_vel`` by stamp, and publishers of overrides."""

    def __init__(self, sim: RunningSim, client: SimClient):
        self.sim, self.client, node = sim, client, client.node
        ns = f'/{sim.namespace}'
        self.imu: dict[int, Imu] = {}
        self.goal: list[PointStamped] = []
        self.cmd_vel: list[Twist] = []
        node.create_subscription(
            Imu, f'{ns}/imu',
            lambda m: self.imu.setdefault(messages.stamp_to_ns(m.header.stamp), m),
            reliable_qos(100))
        node.create_subscription(PointStamped, f'{ns}/mujoco_sim/goal', self.goal.append,
                                 reliable_qos(100))
        node.create_subscription(Twist, f'{ns}/mujoco_sim/cmd_vel', self.cmd_vel.append,
                                 reliable_qos(100))
        self.goal_pub = node.create_publisher(PointStamped, f'{ns}/goal', ROBOT_COMMAND_QOS)
        self.cmd_vel_pub = node.create_publisher(Twist, f'{ns}/cmd_vel', ROBOT_COMMAND_QOS)
        # The sim publishes only to matched readers: wait until its writers see ours.
        writers = [w for w in (sim.node._imu_pub, sim.node._command_pub)
                   if w is not None]
        assert spin_until(client.executor, lambda: all(
            w.get_subscription_count() >= 1 for w in writers), 10.0)

    def joint_states_at(self, stamp_ns: int):
        return [m for _, m in self.client.joint_states
                if messages.stamp_to_ns(m.header.stamp) == stamp_ns]

    def step(self, action, episode: int, step: int) -> messages.Transition:
        """Send one lockstep command; the transition of (episode, step), once its state's
        joint_states has arrived too."""
        self.client.send(action)
        return self.state(episode, step)

    def state(self, episode: int, step: int) -> messages.Transition:
        client = self.client
        assert client.wait_for(lambda t: (t.episode, t.step) >= (episode, step))
        transition = next(t for t in client.transitions if (t.episode, t.step) == (episode, step))
        assert spin_until(client.executor,
                          lambda: self.joint_states_at(transition.stamp_ns), 5.0)
        return transition

    def override(self, publisher, msg, accepted: bool) -> None:
        """Publish an override and wait until the sim has taken or rejected it."""
        node = self.sim.node
        counter = 'command_overrides' if accepted else 'rejected_overrides'
        before = getattr(node, counter)
        publisher.publish(msg)
        assert spin_until(self.client.executor, lambda: getattr(node, counter) > before, 5.0)


def _goal_at(topics: RobotTopics, stamp_ns: int) -> np.ndarray:
    assert spin_until(topics.client.executor, lambda: any(
        messages.stamp_to_ns(g.header.stamp) == stamp_ns for g in topics.goal), 5.0)
    goal = next(g for g in topics.goal if messages.stamp_to_ns(g.header.stamp) == stamp_ns)
    assert goal.header.frame_id == 'world'
    return messages.decode_goal(goal)


def _topics_of(sim: RunningSim) -> tuple[set, set]:
    """The sim node's own publisher and subscriber topic names (its local graph: no
    discovery involved)."""
    node, ns = sim.node, f'/{sim.namespace}'
    published = {name for name, _ in node.get_publisher_names_and_types_by_node(
        'mujoco_sim', ns)}
    subscribed = {name for name, _ in node.get_subscriber_names_and_types_by_node(
        'mujoco_sim', ns)}
    return published, subscribed


def test_arm_goal_topic_overrides_and_the_next_episode(ros_context, ros_executor):
    namespace = f'arm_goal_p{PID}'
    sim = RunningSim(namespace, task=ARM, seed=5, max_episode_steps=4)
    try:
        published, subscribed = _topics_of(sim)
        ns = f'/{namespace}'
        assert f'{ns}/mujoco_sim/goal' in published and f'{ns}/goal' in subscribed
        assert f'{ns}/imu' not in published  # a fixed base has no IMU
        assert f'{ns}/cmd_vel' not in subscribed and f'{ns}/mujoco_sim/cmd_vel' not in published
        client = SimClient(ros_context, ros_executor, namespace)
        topics = RobotTopics(sim, client)
        first = client.reset()
        episode = first.episode
        mirror = make_env(ARM, max_episode_steps=4, normalized_actions=False)
        plain = make_env(ARM, max_episode_steps=4, normalized_actions=False)
        mirror.reset(seed=5 + episode)
        plain.reset(seed=5 + episode)
        robot = mirror.unwrapped
        drawn = robot.command.copy()
        topics.state(episode, 0)
        np.testing.assert_array_equal(_goal_at(topics, first.stamp_ns), drawn)

        actions = np.random.default_rng(3).uniform(mirror.action_space.low,
                                                   mirror.action_space.high, (4, 3))
        t1 = topics.step(actions[0], episode, 1)
        mirror.step(actions[0])
        plain.step(actions[0])
        np.testing.assert_array_equal(_goal_at(topics, t1.stamp_ns), drawn)

        # A goal in the world frame is the goal in force from the next step on.
        topics.override(topics.goal_pub, messages.point_stamped(0, ARM_GOAL), accepted=True)
        robot.set_command(ARM_GOAL)
        t2 = topics.step(actions[1], episode, 2)
        obs, reward, *_ = mirror.step(actions[1])
        _, plain_reward, *_ = plain.step(actions[1])
        np.testing.assert_array_equal(_goal_at(topics, t2.stamp_ns), ARM_GOAL)
        np.testing.assert_array_equal(t2.observation, obs)
        assert t2.reward == reward != plain_reward  # the distance to the new goal

        # A NaN goal and a goal in a frame the sim cannot transform are dropped.
        topics.override(topics.goal_pub, messages.point_stamped(0, [0.2, math.nan, 0.1]),
                        accepted=False)
        topics.override(topics.goal_pub, messages.point_stamped(0, [0.2, 0.0, 0.1], 'map'),
                        accepted=False)
        t3 = topics.step(actions[2], episode, 3)
        obs, reward, *_ = mirror.step(actions[2])
        np.testing.assert_array_equal(_goal_at(topics, t3.stamp_ns), ARM_GOAL)
        assert t3.reward == reward
        assert sim.node.rejected_overrides == 2

        # The episode ends at its 4-step limit: the next one draws a goal of its own.
        client.send(actions[3])
        initial = topics.state(episode + 1, 0)
        initial_obs, _ = mirror.reset(seed=5 + episode + 1)
        assert not robot.command_overridden
        np.testing.assert_array_equal(_goal_at(topics, initial.stamp_ns), robot.command)
        assert not np.array_equal(robot.command, ARM_GOAL)
        np.testing.assert_array_equal(initial.observation, initial_obs)
    finally:
        sim.stop()


def test_quadruped_imu_and_cmd_vel(ros_context, ros_executor):
    import mujoco  # after fpmd_core, which picks the headless GL backend

    namespace = f'quadruped_imu_p{PID}'
    sim = RunningSim(namespace, task=QUADRUPED, seed=11)
    try:
        published, subscribed = _topics_of(sim)
        ns = f'/{namespace}'
        assert {f'{ns}/imu', f'{ns}/mujoco_sim/cmd_vel'} <= published
        assert f'{ns}/cmd_vel' in subscribed and f'{ns}/goal' not in subscribed
        client = SimClient(ros_context, ros_executor, namespace)
        topics = RobotTopics(sim, client)
        first = client.reset()
        episode = first.episode
        mirror = make_env(QUADRUPED, normalized_actions=False)
        mirror.reset(seed=11 + episode)
        robot = mirror.unwrapped
        actions = np.random.default_rng(4).uniform(mirror.action_space.low,
                                                   mirror.action_space.high, (3, 12))
        command = np.array([0.6, -0.3, 0.8])
        states = [topics.state(episode, 0)]
        for step, action in enumerate(actions, start=1):
            if step == 3:
                topics.override(topics.cmd_vel_pub, messages.twist(command), accepted=True)
            states.append(topics.step(action, episode, step))
        # Lockstep: exactly these four states were published since our readers matched.
        assert spin_until(ros_executor, lambda: all(
            s.stamp_ns in topics.imu for s in states) and len(topics.cmd_vel) >= 4, 5.0)
        assert len(topics.cmd_vel) == 4

        mirror.reset(seed=11 + episode)
        for step, state in enumerate(states):
            if step:
                if step == 3:
                    robot.set_command(command)
                obs, reward, *_ = mirror.step(actions[step - 1])
                np.testing.assert_array_equal(state.observation, obs)
                assert state.reward == reward
            imu = topics.imu[state.stamp_ns]  # the stamp of this state's joint_states
            assert topics.joint_states_at(state.stamp_ns)
            assert imu.header.frame_id == 'torso'
            orientation, rate, acceleration = robot.imu()
            quaternion, angular_velocity = messages.decode_imu(imu, frame_id='torso')
            np.testing.assert_array_equal(quaternion, orientation)
            np.testing.assert_array_equal(angular_velocity, rate)
            a = imu.linear_acceleration
            np.testing.assert_array_equal([a.x, a.y, a.z], acceleration)
            assert imu.linear_acceleration_covariance[0] == 0.0  # the model has one
            cmd_vel = messages.decode_twist(topics.cmd_vel[step])
            np.testing.assert_array_equal(cmd_vel, robot.command)
        np.testing.assert_array_equal(cmd_vel, command)  # the override, after step 3
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, quaternion)
        assert rotation.reshape(3, 3).T @ [0, 0, -1] == pytest.approx(robot.projected_gravity)
    finally:
        sim.stop()


def test_realtime_quadruped_stamps_imu_like_joint_states(ros_context, ros_executor):
    namespace = f'quadruped_realtime_p{PID}'
    sim = RunningSim(namespace, task=QUADRUPED, mode='realtime', seed=1, realtime_factor=2.0)
    try:
        client = SimClient(ros_context, ros_executor, namespace, lockstep=False)
        topics = RobotTopics(sim, client)
        client.joint_states.clear()  # from now on every state has an IMU reading for us
        assert spin_until(ros_executor, lambda: len(client.joint_states) >= 12, 10.0)
        assert spin_until(ros_executor, lambda: len(topics.cmd_vel) >= 10, 5.0)
        # (the first two could have been on their way before our IMU reader matched)
        stamps = [messages.stamp_to_ns(m.header.stamp) for _, m in client.joint_states][2:12]
        assert spin_until(ros_executor, lambda: all(s in topics.imu for s in stamps), 5.0)
        assert all(topics.imu[s].header.frame_id == 'torso' for s in stamps)
    finally:
        sim.stop()


def test_a_benchmark_task_has_no_robot_topics(ros_context):
    sim = RunningSim(f'pendulum_p{PID}', task='InvertedPendulum-v5')
    try:
        published, subscribed = _topics_of(sim)
        assert not {t.rsplit('/', 1)[-1] for t in published} & {'imu', 'goal', 'cmd_vel'}
        assert not {t.rsplit('/', 1)[-1] for t in subscribed} & {'goal', 'cmd_vel'}
    finally:
        sim.stop()
