"""A robot policy's observation built from measurements (fpmd_core.robots.observer) equals the
env's own observation for the same physics state, over rollouts of the shipped robots; what a
robot cannot measure is refused by name. No ROS here (the topics: test_controller_robot.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from fpmd_core.robots import RobotEnv, load_task, robot_metadata
from fpmd_core.robots.observer import ObserverError, RobotObserver
from fpmd_core.tasks import make_env

SIM = Path(__file__).resolve().parents[1] / 'sim'


def measured_observation(observer: RobotObserver, robot: RobotEnv) -> np.ndarray:
    """What a robot would measure in ``robot``'s state: encoders, an IMU, the command, its own
    last action."""
    imu = {}
    if observer.needs_imu:
        imu = {'base_quat': robot.data.xquat[robot.robot.base_body].copy(),
               'base_ang_vel': robot.base_ang_vel}
    return observer.observe(robot.joint_pos.copy(), robot.joint_vel.copy(), robot.command.copy(),
                            robot.last_action.copy(), **imu)


def noise_free_quadruped() -> RobotEnv:
    """The quadruped without observation noise (noise is training-only: the deployed
    observation has none, so a noisy training observation cannot equal it)."""
    task = load_task(SIM / 'quadruped_walk.yaml')
    terms = tuple(dataclasses.replace(t, noise=0.0) for t in task.observations)
    return RobotEnv(dataclasses.replace(task, observations=terms))


@pytest.mark.parametrize('robot_kind', ['arm', 'quadruped'])
def test_measured_observation_equals_the_env_observation_over_a_rollout(robot_kind):
    if robot_kind == 'arm':
        env = make_env('sim/arm_reach.yaml')
        robot = env.unwrapped
    else:
        robot = noise_free_quadruped()
        env = robot
    observer = RobotObserver(robot_metadata(robot))
    assert observer.needs_imu == (robot_kind == 'quadruped')
    rng = np.random.default_rng(3)
    obs, _ = env.reset(seed=3)
    episodes, checked = 0, 0
    while checked < 300:
        measured = measured_observation(observer, robot)
        # Bit-equal in the policy's float32: the same term functions on the same numbers.
        np.testing.assert_array_equal(measured.astype(np.float32), np.float32(obs))
        checked += 1
        obs, _, terminated, truncated, _ = env.step(
            rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            * (env.action_space.high if robot_kind == 'quadruped' else 1.0))
        if terminated or truncated or checked % 100 == 0:
            obs, _ = env.reset()
            episodes += 1
    assert episodes >= 2


def test_a_different_measurement_gives_a_different_observation():
    """The parity above can fail: a goal off by 1 cm or a stale last action shows."""
    env = make_env('sim/arm_reach.yaml')
    robot = env.unwrapped
    observer = RobotObserver(robot_metadata(env))
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(np.full(3, 0.5, dtype=np.float32))
    good = measured_observation(observer, robot)
    np.testing.assert_array_equal(good.astype(np.float32), obs)
    moved = observer.observe(robot.joint_pos, robot.joint_vel, robot.command + [0.01, 0, 0],
                             robot.last_action)
    assert not np.allclose(moved, good)
    stale = observer.observe(robot.joint_pos, robot.joint_vel, robot.command, np.zeros(3))
    assert not np.allclose(stale, good)


def test_site_terms_use_the_task_files_kinematics_and_refuse_a_changed_file(tmp_path):
    for name in ('arm_reach.yaml', 'arm3.xml'):
        shutil.copy(SIM / name, tmp_path / name)
    task_file = tmp_path / 'arm_reach.yaml'
    meta = robot_metadata(task_file)
    RobotObserver(meta)  # the metadata's own path
    model = tmp_path / 'arm3.xml'
    model.write_text(model.read_text().replace('</mujoco>', '<!-- edited --></mujoco>'))
    with pytest.raises(ObserverError, match=r'model .*arm3.xml of task file .*changed since'):
        RobotObserver(meta)
    shutil.copy(SIM / 'arm3.xml', model)
    task_file.write_text(task_file.read_text() + '\n# edited\n')
    with pytest.raises(ObserverError, match='task file .* changed since the policy was trained'):
        RobotObserver(meta)
    with pytest.raises(ObserverError, match='not found'):
        RobotObserver(meta, task_file=tmp_path / 'missing.yaml')
    # The original file given explicitly (a robot's own copy) is accepted.
    observer = RobotObserver(meta, task_file=SIM / 'arm_reach.yaml')
    assert observer.obs_dim == meta['obs_dim']


def test_terms_a_robot_cannot_measure_are_refused_by_name():
    meta = robot_metadata(SIM / 'quadruped_walk.yaml')
    lin = dict(meta['observations'][0], term='base_lin_vel', name='base_lin_vel')
    with pytest.raises(ObserverError, match="'base_lin_vel' cannot be measured"):
        RobotObserver({**meta, 'observations': [lin, *meta['observations'][1:]]})
    site = dict(meta['observations'][0], term='site_pos', name='site_pos/imu', site='imu')
    with pytest.raises(ObserverError, match="'site_pos' of a floating-base robot"):
        RobotObserver({**meta, 'observations': [site, *meta['observations'][1:]]})


def test_bad_readings_are_refused_naming_the_reading():
    observer = RobotObserver(robot_metadata(SIM / 'quadruped_walk.yaml'))
    good = dict(joint_pos=np.zeros(12), joint_vel=np.zeros(12), command=np.zeros(3),
                last_action=np.zeros(12), base_quat=[1.0, 0, 0, 0], base_ang_vel=np.zeros(3))
    assert observer.observe(**good).shape == (observer.obs_dim,)
    cases = {'joint_vel': ([np.nan] + [0.0] * 11, 'joint velocities'),
             'base_quat': ([0.0, 0, 0, 0], 'not a rotation'),
             'base_ang_vel': (None, 'needs an IMU reading'),
             'command': (np.zeros(2), 'command: 2 values, expected 3')}
    for field, (value, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            observer.observe(**{**good, field: value})
    # Upright and level: projected gravity is (0, 0, -1) whatever the yaw.
    yaw = np.array([np.cos(0.4), 0, 0, np.sin(0.4)])
    obs = observer.observe(**{**good, 'base_quat': yaw})
    start = next(t['start'] for t in robot_metadata(SIM / 'quadruped_walk.yaml')['observations']
                 if t['term'] == 'projected_gravity')
    np.testing.assert_allclose(obs[start:start + 3], [0, 0, -1], atol=1e-12)


def test_observation_noise_off_is_the_measured_observation_with_the_same_random_stream():
    """What a deploy rehearsal's in-process loop uses for a controller in joint_states mode: the
    task file's noise left out of the observation, every other random draw (pushes, commands,
    randomisation) unchanged."""
    noisy = RobotEnv(SIM / 'quadruped_walk.yaml')
    clean = RobotEnv(SIM / 'quadruped_walk.yaml')
    clean.observation_noise = False
    observer = RobotObserver(robot_metadata(clean))
    noisy_obs, _ = noisy.reset(seed=5)
    clean_obs, _ = clean.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(450):  # past a push (every 8 s = 400 steps) and a command redraw
        assert not np.array_equal(noisy_obs, clean_obs)  # the noise is there, and left out
        np.testing.assert_allclose(measured_observation(observer, clean), clean_obs,
                                   rtol=0, atol=1e-12)
        action = clean.default_pos + 0.2 * rng.uniform(-1, 1, 12)
        noisy_obs, *_ = noisy.step(action)
        clean_obs, *_ = clean.step(action)
        np.testing.assert_array_equal(noisy.data.qpos, clean.data.qpos)
        np.testing.assert_array_equal(noisy.command, clean.command)


def test_a_task_file_gone_from_its_recorded_path_is_found_as_a_task_id(tmp_path):
    """A deploy machine with another layout: the recorded /…/sim/arm_reach.yaml is missing, so
    sim/arm_reach.yaml is looked up as a task id (here: this checkout's, the same bytes)."""
    from fpmd_core.robots import TaskFileError
    from fpmd_core.robots.metadata import locate_task_file

    own = tmp_path / 'sim'
    own.mkdir()
    for name in ('arm_reach.yaml', 'arm3.xml'):
        shutil.copy(SIM / name, own / name)
    meta = robot_metadata(own / 'arm_reach.yaml')
    shutil.rmtree(own)
    assert locate_task_file(meta).resolve() == (SIM / 'arm_reach.yaml').resolve()
    assert RobotObserver(meta).obs_dim == meta['obs_dim']
    with pytest.raises(TaskFileError, match='missing.yaml: not found; the policy was trained on'):
        locate_task_file(meta, tmp_path / 'missing.yaml')
