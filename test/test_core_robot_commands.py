"""RobotEnv.set_command (a command override that lasts until the next reset) and RobotEnv.imu
(the base IMU reading mujoco_sim publishes), with real MuJoCo and no ROS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from test_core_robots import SIM, _set, _update, arm_task

from fpmd_core.robots import RobotEnv
from fpmd_core.tasks import get_env_state, make_env, set_env_state

ARM_GOAL = np.array([0.3, 0.15, 0.1])  # inside the arm's goal box, far from most draws


def _fingertip_distance(robot, goal) -> float:
    return float(np.linalg.norm(goal - robot.site_pos('fingertip')))


# --- set_command -------------------------------------------------------------------------------

def test_a_goal_override_is_what_the_reward_and_the_observation_use():
    env = make_env('sim/arm_reach.yaml', normalized_actions=False)
    env.reset(seed=3)
    robot = env.unwrapped
    drawn = robot.command.copy()
    assert not np.allclose(drawn, ARM_GOAL)
    robot.set_command(ARM_GOAL)
    assert robot.command_overridden
    obs, reward, _, _, info = env.step(robot.default_pos)
    distance = _fingertip_distance(robot, ARM_GOAL)
    assert info['goal_distance'] == distance
    assert info['reward/goal_distance'] == -distance
    assert reward == pytest.approx(-distance + info['reward/action_rate'])
    # observation: joint_pos (3), joint_vel (3), then command x 3 and goal_offset x 3
    np.testing.assert_allclose(obs[6:9], 3.0 * ARM_GOAL, rtol=1e-6)
    np.testing.assert_allclose(obs[9:12], 3.0 * (ARM_GOAL - robot.site_pos('fingertip')),
                               rtol=1e-5)


def test_a_velocity_override_is_what_the_tracking_rewards_use():
    env = make_env('sim/quadruped_walk.yaml', normalized_actions=False)
    env.reset(seed=0)
    robot = env.unwrapped
    command = np.array([0.7, -0.2, 0.4])
    robot.set_command(command)
    _, _, _, _, info = env.step(robot.default_pos)
    lin_error = np.sum((command[:2] - robot.base_lin_vel[:2]) ** 2)
    ang_error = (command[2] - robot.base_ang_vel[2]) ** 2
    assert info['reward/tracking_lin_vel'] == pytest.approx(np.exp(-lin_error / 0.25))
    assert info['reward/tracking_ang_vel'] == pytest.approx(0.5 * np.exp(-ang_error / 0.25))


def test_the_override_outlives_the_redraws_and_ends_at_the_next_reset(tmp_path):
    task = str(arm_task(tmp_path, _set('command.resample_seconds', 0.2)))  # every 5 steps
    overridden, plain = make_env(task), make_env(task)
    for env in (overridden, plain):
        env.reset(seed=4)
    overridden.unwrapped.set_command(ARM_GOAL)
    for _ in range(12):  # two redraws
        overridden.step(np.zeros(3))
        plain.step(np.zeros(3))
        assert np.array_equal(overridden.unwrapped.command, ARM_GOAL)
    assert not np.array_equal(plain.unwrapped.command, ARM_GOAL)
    # The redraws still drew: the random stream is the one of an episode without override.
    assert (overridden.unwrapped.np_random.bit_generator.state ==
            plain.unwrapped.np_random.bit_generator.state)
    # The next episode draws its own command, as if no override had ever been made.
    first, _ = overridden.reset(seed=5)
    again, _ = plain.reset(seed=5)
    assert not overridden.unwrapped.command_overridden
    assert np.array_equal(overridden.unwrapped.command, plain.unwrapped.command)
    assert np.array_equal(first, again)


def test_an_override_resumes_exactly_from_an_env_state(tmp_path):
    task = str(arm_task(tmp_path, _set('command.resample_seconds', 0.2)))
    env = make_env(task)
    env.reset(seed=1)
    env.unwrapped.set_command(ARM_GOAL)
    env.step(np.full(3, 0.3))
    torch.save({'state': get_env_state(env)}, tmp_path / 'state.pt')
    state = torch.load(tmp_path / 'state.pt', weights_only=True)['state']
    actions = np.random.default_rng(2).uniform(-1, 1, (8, 3))  # past a redraw
    expected = [env.step(a) for a in actions]
    fresh = make_env(task)
    fresh.reset(seed=9)
    set_env_state(fresh, state)
    assert fresh.unwrapped.command_overridden
    resumed = [fresh.step(a) for a in actions]
    for (obs, reward, *_), (obs2, reward2, *_) in zip(expected, resumed, strict=True):
        assert np.array_equal(obs, obs2) and reward == reward2
    # A state saved before overrides existed has no flag: the redraw replaces the command.
    del state['extra']['command_overridden']
    set_env_state(fresh, state)
    assert not fresh.unwrapped.command_overridden
    for action in actions:
        fresh.step(action)
    assert not np.array_equal(fresh.unwrapped.command, ARM_GOAL)


@pytest.mark.parametrize('values, message', [
    ([0.1, 0.2], r'expected 3 numbers \(x, y, z\), got shape \(2,\)'),
    ([[0.1, 0.2, 0.3]], r'expected 3 numbers \(x, y, z\), got shape \(1, 3\)'),
    ([0.1, float('nan'), 0.3], r'y is nan, expected a finite number'),
    ([0.1, 0.2, float('-inf')], r'z is -inf, expected a finite number'),
    (['left', 'up', 'far'], r"expected 3 numbers \(x, y, z\), got \['left', 'up', 'far'\]"),
])
def test_a_bad_override_names_what_is_wrong_and_changes_nothing(values, message):
    robot = RobotEnv('sim/arm_reach.yaml')
    robot.reset(seed=0)
    drawn = robot.command.copy()
    with pytest.raises(ValueError, match=r'set_command: ' + message):
        robot.set_command(values)
    assert np.array_equal(robot.command, drawn) and not robot.command_overridden


def test_a_task_without_a_command_refuses_an_override(tmp_path):
    task = arm_task(tmp_path, _update(command={'kind': 'none'},
                                      observations=[{'term': 'joint_pos'}],
                                      rewards=[{'term': 'alive', 'weight': 1.0}]))
    robot = RobotEnv(task)
    robot.reset(seed=0)
    with pytest.raises(ValueError, match=rf"set_command: task file {task} has no command "
                       r"\(command.kind is 'none'\)"):
        robot.set_command([0.0, 0.0, 0.0])


# --- imu ---------------------------------------------------------------------------------------

def test_imu_reads_the_base_orientation_rate_and_accelerometer():
    import mujoco  # after fpmd_core, which picks the headless GL backend

    env = make_env('sim/quadruped_walk.yaml')
    env.reset(seed=2)
    robot = env.unwrapped
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, 12))
    orientation, angular_velocity, acceleration = robot.imu()
    assert robot.base_body_name == 'torso'
    assert np.array_equal(orientation, robot.data.xquat[robot.robot.base_body])
    assert np.array_equal(angular_velocity, robot.base_ang_vel)
    sensor = robot.model.sensor('imu_acc')
    start = int(sensor.adr[0])
    assert np.array_equal(acceleration, robot.data.sensordata[start:start + 3])
    # The orientation is the free joint's: rotating a world vector by it gives the base frame
    # the env's own terms use (gravity in the base frame).
    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, orientation)
    np.testing.assert_allclose(rotation.reshape(3, 3).T @ [0, 0, -1], robot.projected_gravity,
                               atol=1e-12)
    # Standing still, an accelerometer reads the support force: about +g along the base z.
    for _ in range(100):
        env.step(np.zeros(12))
    _, _, acceleration = robot.imu()
    assert acceleration[2] == pytest.approx(9.81, abs=0.5)


def test_imu_without_an_accelerometer_and_without_a_floating_base(tmp_path):
    model = (SIM / 'quadruped12.xml').read_text()
    assert '<accelerometer' in model
    (tmp_path / 'quadruped12.xml').write_text(
        '\n'.join(line for line in model.splitlines() if '<accelerometer' not in line))
    task = yaml.safe_load((SIM / 'quadruped_walk.yaml').read_text())
    (tmp_path / 'walk.yaml').write_text(yaml.safe_dump(task))
    robot = RobotEnv(tmp_path / 'walk.yaml')
    robot.reset(seed=0)
    orientation, _, acceleration = robot.imu()
    assert acceleration is None and orientation.shape == (4,)
    arm = RobotEnv('sim/arm_reach.yaml')
    arm.reset(seed=0)
    with pytest.raises(ValueError, match=r"imu: task file .*arm_reach.yaml: the model "
                       r"'arm3.xml' has no floating base"):
        arm.imu()
