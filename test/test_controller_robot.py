"""The policy_controller with a robot policy (joint_states mode): the observation built from
joint_states, imu and goal / cmd_vel equals the env's over closed-loop rollouts through the
ControlLoop; goals and velocity commands have their documented safe behaviour; a changed command
changes the action. The loop and input without DDS here; over DDS at the end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PointStamped, Twist
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_helpers import reliable_qos, spin_until
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray

from fpmd_core.robots import RobotEnv, load_task, robot_metadata
from fpmd_core.robots.observer import RobotObserver
from fpmd_core.tasks import make_env
from fpmd_ros import messages
from fpmd_ros.controller.inputs import make_input
from fpmd_ros.controller.loop import ControlLoop
from fpmd_ros.controller.robot_input import RobotInput
from fpmd_ros.controller.rules import ConfigureError
from fpmd_ros.controller.safety import Safety

SIM = Path(__file__).resolve().parents[1] / 'sim'
PERIOD_NS = 40_000_000


def loop_meta(robot: RobotEnv) -> dict:
    """The part of a policy's metadata the loop and the input read, for ``robot``."""
    return {'action_low': robot.action_space.low.tolist(),
            'action_high': robot.action_space.high.tolist(),
            'act_dim': robot.action_space.shape[0],
            'obs_dim': robot.observation_space.shape[0],
            'obs_terms': [list(t) for t in robot.obs_terms],
            'robot': robot_metadata(robot)}


class LinearPolicy:
    """A deterministic stand-in policy: actions in the robot's bounds that depend on every
    observation value (so any difference in the observation shows in the action)."""

    def __init__(self, obs_dim: int, low, high, seed: int = 0):
        self.weights = np.random.default_rng(seed).normal(0, 0.5, (len(low), obs_dim))
        self.low, self.high = np.asarray(low), np.asarray(high)

    def __call__(self, observation):
        unit = np.tanh(self.weights @ np.asarray(observation, dtype=np.float64))
        return self.low + (unit + 1) / 2 * (self.high - self.low)


def joint_states_of(robot: RobotEnv, stamp_ns: int, names=None) -> JointState:
    names = list(names or robot.joint_names)
    return messages.joint_state(stamp_ns, names[::-1], position=robot.joint_pos[::-1].tolist(),
                                velocity=robot.joint_vel[::-1].tolist())


def imu_of(robot: RobotEnv) -> Imu:
    msg = Imu()
    w, x, y, z = robot.data.xquat[robot.robot.base_body]
    msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = w, x, y, z
    wx, wy, wz = robot.base_ang_vel
    msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = wx, wy, wz
    return msg


def goal_msg(point, frame_id: str = 'world') -> PointStamped:
    msg = PointStamped()
    msg.header.frame_id = frame_id
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in point)
    return msg


def twist_msg(vx: float, vy: float, yaw_rate: float) -> Twist:
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.angular.z = float(vx), float(vy), float(yaw_rate)
    return msg


def noise_free_quadruped() -> RobotEnv:
    task = load_task(SIM / 'quadruped_walk.yaml')
    terms = tuple(dataclasses.replace(t, noise=0.0) for t in task.observations)
    return RobotEnv(dataclasses.replace(task, observations=terms))


def closed_loop(robot: RobotEnv, steps: int, seed: int = 0) -> int:
    """Run the ControlLoop on ``robot`` through messages as mujoco_sim publishes them; assert
    every observation equals the env's. Returns the episodes started."""
    meta = loop_meta(robot)
    source = RobotInput(meta)
    policy = LinearPolicy(meta['robot']['obs_dim'], meta['action_low'], meta['action_high'],
                          seed)
    loop = ControlLoop(policy, meta, source, rate_hz=25.0, state_timeout_s=1.0)
    now = 1_000_000_000
    loop.activate(now)
    obs, _ = robot.reset(seed=seed)
    stamp, episodes = 0, 1
    loop.episode_start(stamp)
    for _ in range(steps):
        now += PERIOD_NS
        if robot.task.command.kind == 'goal_position':
            source.receive_command(goal_msg(robot.command), now)
        elif robot.task.command.kind == 'velocity':
            source.receive_command(twist_msg(*robot.command), now)
        if source.observer.needs_imu:
            source.receive_imu(imu_of(robot), now)
        loop.receive(joint_states_of(robot, stamp), now)
        step = loop.step(now)
        assert step.log is None and loop.safety.state is Safety.OK, loop.safety.reason
        np.testing.assert_allclose(step.observation, obs, rtol=0, atol=1e-12)
        obs, _, terminated, truncated, _ = robot.step(step.command)
        stamp += PERIOD_NS
        if terminated or truncated or robot.steps >= robot.task.episode_steps:
            obs, _ = robot.reset()
            stamp += PERIOD_NS
            loop.episode_start(stamp)
            episodes += 1
    return episodes


def test_arm_observation_from_topics_equals_the_env_over_closed_loop_episodes():
    robot = make_env('sim/arm_reach.yaml', normalized_actions=False).unwrapped
    assert closed_loop(robot, 300) >= 3  # 125-step episodes: the last action restarts each time


def test_quadruped_observation_from_topics_equals_the_env_over_closed_loop_episodes():
    robot = noise_free_quadruped()
    assert closed_loop(robot, 200, seed=1) >= 1


def test_the_parity_can_fail_without_the_episode_start():
    """Without the announcement, the first step of the next episode keeps the last action of
    the previous one: the check above would see it."""
    robot = make_env('sim/arm_reach.yaml', normalized_actions=False).unwrapped
    robot.reset(seed=0)
    meta = loop_meta(robot)
    source = RobotInput(meta)
    source.receive_command(goal_msg(robot.command), 0)
    observed = source.observation(joint_states_of(robot, 0), 0, 10**9)
    source.commanded(np.asarray(meta['action_high']))
    again = source.observation(joint_states_of(robot, PERIOD_NS), 0, 10**9)
    assert not np.array_equal(observed, again)
    source.episode_start(2 * PERIOD_NS, None)
    restarted = source.observation(joint_states_of(robot, 2 * PERIOD_NS), 0, 10**9)
    np.testing.assert_array_equal(restarted, observed)


# --- commands ------------------------------------------------------------------------------

@pytest.fixture
def arm():
    robot = make_env('sim/arm_reach.yaml', normalized_actions=False).unwrapped
    robot.reset(seed=1)
    meta = loop_meta(robot)
    source = RobotInput(meta)
    policy = LinearPolicy(meta['robot']['obs_dim'], meta['action_low'], meta['action_high'])
    loop = ControlLoop(policy, meta, source, rate_hz=25.0, state_timeout_s=0.2)
    loop.activate(0)
    return robot, source, loop


def tick(robot, loop, now: int):
    loop.receive(joint_states_of(robot, now), now)
    return loop.step(now)


def test_goal_missing_waits_with_the_default_pose_then_follows_each_goal(arm):
    robot, source, loop = arm
    step = tick(robot, loop, 1)
    assert loop.safety.state is Safety.WAITING and 'no goal on goal yet' in loop.safety.reason
    np.testing.assert_array_equal(step.command, robot.default_pos)
    source.receive_command(goal_msg([0.3, 0.1, 0.2]), 2)
    first = tick(robot, loop, 3)
    assert loop.safety.state is Safety.OK
    source.receive_command(goal_msg([0.2, -0.15, 0.3]), 4)
    second = tick(robot, loop, 5)
    assert not np.allclose(first.command, second.command), 'a new goal changes the action'
    # A goal is a set point: it holds however old it gets.
    later = tick(robot, loop, 5 + 60 * 10**9)
    assert loop.safety.state is Safety.OK
    # (all but the last action, the final 3 values)
    np.testing.assert_array_equal(later.observation[:12], second.observation[:12])


@pytest.mark.parametrize('bad, reason', [
    (goal_msg([np.nan, 0.0, 0.2]), "goal field 'point.x' is nan"),
    (goal_msg([0.3, 0.0, 0.2], frame_id='base_link'), "frame_id is 'base_link'"),
])
def test_a_bad_goal_is_rejected_and_the_previous_goal_holds(arm, bad, reason):
    robot, source, loop = arm
    source.receive_command(goal_msg([0.3, 0.1, 0.2]), 1)
    before = tick(robot, loop, 2)
    source.receive_command(bad, 3)
    assert len(source.notes) == 1 and reason in source.notes[0] and 'holds' in source.notes[0]
    after = tick(robot, loop, 4)
    assert loop.safety.state is Safety.OK
    np.testing.assert_array_equal(after.observation[:12], before.observation[:12])
    assert source.command.rejected == 1


def test_a_goal_outside_the_trained_box_is_clipped_into_it(arm):
    robot, source, loop = arm
    source.receive_command(goal_msg([0.9, 0.0, 0.2]), 1)
    assert 'x 0.9 not in [0.15, 0.35]' in source.notes[0]
    np.testing.assert_array_equal(source.command.value(2), [0.35, 0.0, 0.2])


def test_velocity_command_missing_stale_or_not_finite_is_zero():
    robot = noise_free_quadruped()
    robot.reset(seed=0)
    meta = loop_meta(robot)
    source = RobotInput(meta, command_timeout_s=0.5)
    command = source.command
    np.testing.assert_array_equal(command.value(0), [0, 0, 0])  # none yet: stand still
    source.receive_command(twist_msg(0.5, -0.2, 0.3), 10**9)
    np.testing.assert_array_equal(command.value(10**9 + 4 * 10**8), [0.5, -0.2, 0.3])
    np.testing.assert_array_equal(command.value(10**9 + 6 * 10**8), [0, 0, 0])  # timed out
    source.receive_command(twist_msg(0.5, -0.2, 0.3), 2 * 10**9)
    source.receive_command(twist_msg(np.inf, 0.0, 0.0), 2 * 10**9 + 1)
    np.testing.assert_array_equal(command.value(2 * 10**9 + 2), [0, 0, 0])  # at once
    assert 'zero velocity' in source.notes[-1]
    # And the command reaches the observation, where the policy sees it.
    source.receive_imu(imu_of(robot), 3 * 10**9)
    source.receive_command(twist_msg(0.8, 0.0, 0.0), 3 * 10**9)
    moving = source.observation(joint_states_of(robot, 0), 3 * 10**9, 10**8)
    source.receive_command(twist_msg(-0.8, 0.0, 0.0), 3 * 10**9)
    backwards = source.observation(joint_states_of(robot, 0), 3 * 10**9, 10**8)
    assert not np.array_equal(moving, backwards)


def test_imu_missing_waits_and_stale_imu_is_stale():
    robot = noise_free_quadruped()
    robot.reset(seed=0)
    meta = loop_meta(robot)
    source = RobotInput(meta)
    loop = ControlLoop(LinearPolicy(meta['robot']['obs_dim'], meta['action_low'],
                                    meta['action_high']), meta, source, 50.0, 0.2)
    loop.activate(0)
    tick(robot, loop, 10)
    assert loop.safety.state is Safety.WAITING and 'no imu message yet' in loop.safety.reason
    source.receive_imu(imu_of(robot), 20)
    tick(robot, loop, 30)
    assert loop.safety.state is Safety.OK
    step = tick(robot, loop, 30 + 3 * 10**8)
    assert loop.safety.state is Safety.STALE and 'imu' in loop.safety.reason
    np.testing.assert_array_equal(step.command, robot.default_pos)


def test_configure_refuses_what_a_robot_policy_cannot_take():
    robot = make_env('sim/arm_reach.yaml', normalized_actions=False).unwrapped
    meta = loop_meta(robot)
    with pytest.raises(ConfigureError, match="'exclude_joint_positions' is set"):
        make_input('joint_states', meta, None, ['yaw'])
    with pytest.raises(ConfigureError, match="'joint_names' has 2 names; this robot policy "
                                             'needs 3, in its order: yaw, shoulder, elbow'):
        make_input('joint_states', meta, ['a', 'b'], None)
    lin = dict(meta['robot']['observations'][0], term='base_lin_vel')
    bad = {**meta, 'robot': {**meta['robot'], 'observations': [lin]}}
    with pytest.raises(ConfigureError, match="cannot run from joint_states: observation term "
                                             "'base_lin_vel'"):
        make_input('joint_states', bad, None, None)
    # Renamed joints: the robot's names, the policy's order.
    source = make_input('joint_states', meta, ['j0', 'j1', 'j2'], None)
    robot.reset(seed=0)
    source.receive_command(goal_msg(robot.command), 0)
    renamed = source.observation(joint_states_of(robot, 0, ['j0', 'j1', 'j2']), 0, 10**9)
    expected = RobotInput(meta)
    expected.receive_command(goal_msg(robot.command), 0)
    np.testing.assert_array_equal(
        renamed, expected.observation(joint_states_of(robot, 0), 0, 10**9))


# --- over DDS ------------------------------------------------------------------------------

def test_controller_node_builds_the_robot_observation_from_topics(ros_context, ros_executor,
                                                                  tmp_path):
    """A real policy_controller with an exported arm policy: joint_states and a goal in,
    the observation it published (~/observation) equals RobotObserver's, and a new goal over
    DDS changes the position targets."""
    from test_core_robot_policy import export_arm

    from fpmd_core.runtime import OnnxPolicy
    from fpmd_ros.controller.node import PolicyController

    path = export_arm(SIM / 'arm_reach.yaml', tmp_path / 'arm.onnx')
    reference = OnnxPolicy(path)
    meta = reference.metadata
    node = PolicyController(context=ros_context, parameter_overrides=[
        Parameter('policy', value=str(path)), Parameter('observation_mode', value='joint_states'),
        Parameter('trigger', value='observation'), Parameter('state_timeout_s', value=30.0)])
    ros_executor.add_node(node)
    probe = rclpy.create_node('robot_probe', context=ros_context)
    ros_executor.add_node(probe)
    commands, observations = [], []
    probe.create_subscription(Float64MultiArray, 'commands',
                              lambda m: commands.append(np.array(m.data)), reliable_qos(100))
    probe.create_subscription(Float32MultiArray, '/policy_controller/observation',
                              lambda m: observations.append(np.array(m.data)), reliable_qos(100))
    joints = probe.create_publisher(JointState, 'joint_states', reliable_qos(10))
    goals = probe.create_publisher(PointStamped, 'goal', reliable_qos(10))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.failure_reason
    node.trigger_activate()
    assert spin_until(ros_executor, lambda: joints.get_subscription_count() >= 1
                      and goals.get_subscription_count() >= 1
                      and node._observation_pub.get_subscription_count() >= 1
                      and node._command_pub.get_subscription_count() >= 1)
    robot = make_env(str(SIM / 'arm_reach.yaml'), normalized_actions=False).unwrapped
    robot.reset(seed=2)
    observer = RobotObserver(meta['robot'])
    low, high = np.asarray(meta['action_low']), np.asarray(meta['action_high'])

    def control_step(goal, stamp_ns, last_action):
        """Send a goal (until the controller has it), then a state; the observation the
        controller published for it, checked against RobotObserver's, and the command."""
        source = node.loop.source
        received = source.command.received
        goals.publish(goal_msg(goal))
        assert spin_until(ros_executor, lambda: source.command.received > received)
        count = len(observations)
        for _ in range(3):  # the input is best-effort: a lost state is sent again
            joints.publish(joint_states_of(robot, stamp_ns))
            if spin_until(ros_executor, lambda: len(observations) > count, timeout_s=3.0):
                break
        expected = observer.observe(robot.joint_pos, robot.joint_vel, goal, last_action)
        np.testing.assert_allclose(observations[-1], expected, rtol=0, atol=1e-6)
        # Until the state arrived the watchdog published safe actions; the policy's command
        # for it is the last one then (fresh input stops the watchdog for state_timeout_s).
        command = np.clip(reference(expected), low, high)
        assert spin_until(ros_executor, lambda: bool(commands) and np.allclose(
            commands[-1], command, atol=1e-5), timeout_s=3.0), (commands[-3:], command)
        return command

    first_goal, second_goal = [0.3, 0.1, 0.2], [0.2, -0.15, 0.3]
    command = control_step(first_goal, 1_000, np.zeros(3))
    last_action = (command - (low + high) / 2) / ((high - low) / 2)
    command2 = control_step(second_goal, 2_000, last_action)
    assert not np.allclose(command2, command, atol=1e-4), 'a new goal changes the targets'
    node.trigger_deactivate()
