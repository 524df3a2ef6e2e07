"""Robot task files (sim/<name>.yaml): every shipped task loads, steps and matches its deploy
metadata; bad files fail before any work with errors naming the field; the URDF arm is the MJCF
arm; position control tracks its targets; seeds and checkpoints reproduce episodes exactly;
the trainer runs on a robot task."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fpmd_core.config import make_config
from fpmd_core.robots import RobotEnv, TaskFileError, load_task, robot_metadata
from fpmd_core.tasks import TaskError, get_env_state, make_env, set_env_state, task_spec
from fpmd_core.trainer import Trainer

SIM = Path(__file__).resolve().parents[1] / 'sim'
TASK_FILES = sorted(p.name for p in SIM.glob('*.yaml'))


def test_the_shipped_robots_are_there():
    assert {'arm_reach.yaml', 'arm_reach_urdf.yaml', 'quadruped_walk.yaml'} <= set(TASK_FILES)


# --- every shipped task ----------------------------------------------------------------------

@pytest.mark.parametrize('name', TASK_FILES)
def test_shipped_task_loads_steps_and_matches_its_metadata(name):
    task_id = f'sim/{name}'
    env = make_env(task_id)
    spec = task_spec(env, task_id)
    meta = robot_metadata(env)
    json.dumps(meta)  # plain data, for an ONNX file's metadata or a ROS parameter
    assert [(t['name'], t['size']) for t in meta['observations']] == list(spec.obs_terms)
    assert meta['obs_dim'] == spec.obs_dim == sum(size for _, size in spec.obs_terms)
    assert tuple(meta['joint_names']) == spec.joint_names == spec.actuator_names
    assert meta['action_low'] == pytest.approx(spec.action_low)
    assert meta['control_period'] == pytest.approx(spec.control_dt)
    assert meta['episode_steps'] == spec.max_episode_steps
    assert env.action_space.low.tolist() == [-1.0] * spec.act_dim
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (spec.obs_dim,)
    rng = np.random.default_rng(0)
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, spec.act_dim))
        assert np.isfinite(obs).all() and np.isfinite(reward)
        assert not terminated, 'a random minute of actions should not end these episodes'
    # The layout is the real one: each noise-free term sits where the metadata says.
    robot = env.unwrapped
    for term in meta['observations']:
        if term['noise'] or term['term'] not in ('joint_pos', 'command', 'last_action'):
            continue
        value = {'joint_pos': robot.joint_pos - robot.default_pos, 'command': robot.command,
                 'last_action': robot.last_action}[term['term']]
        part = obs[term['start']:term['start'] + term['size']]
        assert part == pytest.approx(value * np.array(term['scale']), abs=1e-5)


def test_metadata_states_the_deploy_convention():
    meta = robot_metadata('sim/quadruped_walk.yaml')
    assert meta['control_mode'] == 'position'
    assert meta['joint_names'][:3] == ['FL_hip_joint', 'FL_thigh_joint', 'FL_calf_joint']
    assert meta['default_joint_pos'][:3] == [0.0, 0.8, -1.5]
    assert meta['kp'] == [40.0] * 12 and meta['kd'] == [1.0] * 12
    assert meta['action_scale'] == [0.25] * 12
    assert meta['command']['kind'] == 'velocity'
    assert meta['command']['ranges'] == {'vx': [-1.0, 1.0], 'vy': [-0.5, 0.5],
                                         'yaw_rate': [-1.0, 1.0]}
    assert meta['observations'][2]['scale'] == [2.0, 2.0, 0.25]
    assert meta['control_period'] == pytest.approx(0.02) and meta['substeps'] == 4
    assert meta['floating_base'] is True


# --- validation ------------------------------------------------------------------------------

def arm_task(tmp_path: Path, edit=None, name='task.yaml') -> Path:
    """A copy of sim/arm_reach.yaml in tmp_path (model path made absolute), edited."""
    data = yaml.safe_load((SIM / 'arm_reach.yaml').read_text())
    data['model'] = str(SIM / data['model'])
    if edit is not None:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(path: str, value):
    def edit(data):
        keys = path.split('.')
        node = data
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _rename(path: str, new_key: str):
    def edit(data):
        keys = path.split('.')
        node = data
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[new_key] = node.pop(keys[-1])
    return edit


def _update(**fields):
    return lambda data: data.update(fields)


def _delete(key: str):
    return lambda data: data.pop(key)


@pytest.mark.parametrize(('edit', 'message'), [
    (_rename('episode_seconds', 'episode_secnds'),
     r"episode_secnds: unknown field \(did you mean 'episode_seconds'\?\)"),
    (_rename('observations.1.scale', 'scal'),
     r"observations\[1\]\.scal: unknown field \(did you mean 'scale'\?\)"),
    (_set('observations.1.scale', [1.0, 2.0]),
     r"observations\[1\]\.scale: expected one number or a list of 3 \(the size of 'joint_vel'\)"),
    (_set('observations.0.term', 'joint_position'),
     r"observations\[0\]\.term: expected one of .*joint_pos.*\(did you mean 'joint_pos'\?\)"),
    (_set('observations.0.scale', 'big'), r"observations\[0\]\.scale: expected a number, got str"),
    (_set('control_period', 'fast'), r"control_period: expected a number, got str 'fast'"),
    (_set('substeps', 2.5), r'substeps: expected an integer, got float 2.5'),
    (_set('actuation.joints.1.name', 'sholder'),
     r"actuation\.joints\[1\]\.name: the model '.*arm3.xml' has no joint 'sholder' "
     r"\(did you mean 'shoulder'\?\); its joints: yaw, shoulder, elbow"),
    (_set('actuation.kp', -3.0),
     r"actuation\.kp \(the default of 'yaw'\): expected a number > 0, got -3.0"),
    (_set('actuation.mode', 'torque'),
     r"actuation\.mode: expected one of position, effort, got 'torque'"),
    (_set('command.site', 'fingertp'),
     r"command\.site: the model .* has no site 'fingertp' \(did you mean 'fingertip'\?\)"),
    (_set('command.vx', [0.0, 1.0]), r"command\.vx: not used by command.kind 'goal_position'"),
    (_set('command.x', [0.4, 0.1]), r'command\.x: expected \[low, high\] with low <= high'),
    (_set('rewards.0', {'term': 'alive', 'weight': 1.0, 'sigma': 0.5}),
     r"rewards\[0\]\.sigma: not a parameter of the 'alive' term"),
    (_set('rewards.0', {'term': 'tracking_lin_vel', 'weight': 1.0}),
     r"rewards\[0\]\.term: the 'tracking_lin_vel' term needs command.kind 'velocity'"),
    (_update(command={'kind': 'none'}),
     r"observations\[2\]\.term: the 'command' term needs a command"),
    (_update(command={'kind': 'velocity', 'vx': [0, 1], 'vy': [0, 0], 'yaw_rate': [0, 0]},
             observations=[{'term': 'goal_offset'}]),
     r"observations\[0\]\.term: the 'goal_offset' term needs command.kind 'goal_position', "
     r"got 'velocity'"),
    (_set('observations.0', {'term': 'projected_gravity'}),
     r"observations\[0\]\.term: the 'projected_gravity' term needs a floating base"),
    (_set('sites.0.body', 'hand'), r"sites\[0\]\.body: the model .* has no body 'hand'"),
    (_set('randomization', {'friction': [1.2, 0.8]}),
     r'randomization\.friction: expected \[low, high\] with low <= high'),
    (_set('terminations', {'body_contacts': ['torso']}),
     r"terminations\.body_contacts\[0\]: the model .* has no body 'torso'"),
    (_delete('rewards'), r'rewards: required field missing'),
    (_set('model', 'arm3.stl'), r'model: expected an MJCF \(\.xml\) or URDF \(\.urdf\) file'),
    (_set('model', 'no_such_arm.xml'), r'model: file not found: .*no_such_arm.xml'),
])
def test_bad_task_files_name_the_file_and_the_field(tmp_path, edit, message):
    path = arm_task(tmp_path, edit)
    with pytest.raises(TaskFileError, match=message) as caught:
        make_env(str(path))
    assert str(caught.value).startswith(f'task file {path}: ')
    assert isinstance(caught.value, TaskError)  # the trainer and nodes treat it as a bad task


def test_an_unparsable_model_gives_mujoco_message_and_the_task_file(tmp_path):
    broken = tmp_path / 'broken.xml'
    broken.write_text('<mujoco><worldbody><body name="a"><geom type="sphere"/></body>'
                      '</worldbody')
    path = arm_task(tmp_path, _set('model', str(broken)))
    with pytest.raises(TaskFileError) as caught:
        RobotEnv(load_task(path))
    text = str(caught.value)
    assert text.startswith(f'task file {path}: model: MuJoCo cannot load {broken}: ')
    assert 'XML' in text or 'Error' in text  # MuJoCo's own parser message follows


def test_missing_or_invalid_yaml_task_file(tmp_path):
    with pytest.raises(TaskFileError, match=r"task file 'sim/nope.yaml': cannot read it"):
        make_env('sim/nope.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: [unclosed\n')
    with pytest.raises(TaskFileError, match=r'bad.yaml: not valid YAML'):
        load_task(bad)
    bad.write_text('- just\n- a list\n')
    with pytest.raises(TaskFileError, match=r'task file: expected a mapping of fields'):
        load_task(bad)


def test_effort_mode_refuses_position_gains(tmp_path):
    def to_effort(data):
        data['actuation'] = {'mode': 'effort', 'effort_limit': 5.0,
                             'joints': [{'name': 'yaw', 'kp': 10.0}]}
    with pytest.raises(TaskFileError, match=r'actuation\.joints\[0\]\.kp: only used in '
                                            r'position mode'):
        load_task(arm_task(tmp_path, to_effort))


# --- the same robot from MJCF and URDF --------------------------------------------------------

def test_urdf_arm_and_mjcf_arm_give_equal_trajectories():
    """The task file adds actuators, armature, the site, floor and physics options to both
    models, and the two files describe the same links and inertias: equal actions give equal
    trajectories, to the last bit."""
    envs = [make_env('sim/arm_reach.yaml'), make_env('sim/arm_reach_urdf.yaml')]
    models = [env.unwrapped.model for env in envs]
    for field in ('body_mass', 'body_inertia', 'body_pos', 'jnt_range', 'dof_armature',
                  'dof_damping', 'actuator_gainprm', 'actuator_biasprm', 'geom_size'):
        assert np.array_equal(getattr(models[0], field), getattr(models[1], field)), field
    first = [env.reset(seed=4)[0] for env in envs]
    assert np.array_equal(first[0], first[1])
    rng = np.random.default_rng(1)
    for _ in range(100):
        action = rng.uniform(-1, 1, 3)
        (obs_a, reward_a, *_), (obs_b, reward_b, *_) = [env.step(action) for env in envs]
        assert np.array_equal(obs_a, obs_b) and reward_a == reward_b
    assert np.array_equal(envs[0].unwrapped.data.qpos, envs[1].unwrapped.data.qpos)


# --- actuation -------------------------------------------------------------------------------

def test_position_control_settles_at_default_plus_scale_times_action():
    env = make_env('sim/arm_reach.yaml')
    env.reset(seed=0)
    robot = env.unwrapped
    robot.model.opt.gravity[:] = 0  # no load: the PD loop alone decides where it rests
    action = np.array([0.5, -0.4, 0.7])
    for _ in range(50):  # 2 s
        env.step(action)
    target = robot.default_pos + robot.action_half * action
    assert robot.joint_pos == pytest.approx(target, abs=1e-3)
    assert robot.data.ctrl == pytest.approx(target)
    assert np.abs(robot.joint_vel).max() < 1e-2


def test_gravity_sag_of_the_arm_is_what_kp_predicts():
    """Under gravity the PD loop rests where kp * error balances the gravity torque."""
    env = make_env('sim/arm_reach.yaml')
    env.reset(seed=0)
    robot = env.unwrapped
    for _ in range(50):
        env.step(np.zeros(3))
    gravity_torque = robot.data.qfrc_bias[robot.robot.dof_adr]  # velocities are ~0 at rest
    error = robot.default_pos - robot.joint_pos
    assert robot.kp * error == pytest.approx(gravity_torque, abs=2e-3)


def test_effort_mode_applies_effort_limit_times_action(tmp_path):
    def to_effort(data):
        data['actuation'] = {'mode': 'effort', 'effort_limit': 4.0,
                             'joints': [{'name': 'yaw'}, {'name': 'shoulder'},
                                        {'name': 'elbow', 'effort_limit': 2.0}]}
    env = make_env(str(arm_task(tmp_path, to_effort)))
    env.reset(seed=0)
    env.step(np.array([0.5, -1.0, 2.0]))  # the last is clipped to 1
    assert env.unwrapped.data.actuator_force == pytest.approx([2.0, -4.0, 2.0])
    assert robot_metadata(env)['action_rule'].startswith('torque = effort_limit * action')


def test_action_delay_holds_the_previous_command_for_one_step(tmp_path):
    path = arm_task(tmp_path, _set('randomization', {'action_delay': [1, 1]}))
    env = make_env(str(path))
    env.reset(seed=0)
    robot = env.unwrapped
    first, second = np.array([0.5, 0.5, 0.5]), np.array([-0.5, 0.0, 0.5])
    env.step(first)
    assert robot.data.ctrl == pytest.approx(robot.default_pos)  # nothing arrived yet
    env.step(second)
    assert robot.data.ctrl == pytest.approx(robot.default_pos + robot.action_half * first)


def test_every_goal_of_the_arm_is_reachable_within_the_action_bounds():
    """The reaching target (mean final distance <= 2 cm) is attainable: inverse kinematics
    within the action bounds reaches every corner, edge centre and the centre of the goal box."""
    import mujoco  # after fpmd_core, which picks the headless GL backend

    robot = RobotEnv('sim/arm_reach.yaml')
    model, data = robot.model, robot.data
    low = np.maximum(robot.action_space.low, robot.joint_range[:, 0])
    high = np.minimum(robot.action_space.high, robot.joint_range[:, 1])
    site = robot.robot.site_ids['fingertip']
    c = robot.task.command
    axes = [np.linspace(*r, 3) for r in (c.x, c.y, c.z)]
    goals = np.stack(np.meshgrid(*axes), -1).reshape(-1, 3)
    jacobian = np.zeros((3, model.nv))
    for goal in goals:
        best = np.inf
        for start in (robot.default_pos, low + 0.3 * (high - low), high - 0.3 * (high - low)):
            q = start.copy()
            for _ in range(60):
                data.qpos[:] = q
                mujoco.mj_kinematics(model, data)
                mujoco.mj_comPos(model, data)
                error = goal - data.site_xpos[site]
                mujoco.mj_jacSite(model, data, jacobian, None, site)
                step = np.linalg.solve(jacobian.T @ jacobian + 1e-4 * np.eye(3), jacobian.T @ error)
                q = np.clip(q + step, low, high)
            best = min(best, float(np.linalg.norm(error)))
        assert best < 0.005, f'goal {goal} is {best:.3f} m from the reachable set'


# --- terminations ----------------------------------------------------------------------------

def test_quadruped_stands_at_its_default_pose_and_ends_when_the_torso_touches_ground():
    import mujoco  # after fpmd_core, which picks the headless GL backend

    env = make_env('sim/quadruped_walk.yaml')
    env.reset(seed=0)
    robot = env.unwrapped
    for _ in range(100):
        _, _, terminated, _, _ = env.step(np.zeros(12))
        assert not terminated
    assert 0.25 < robot.base_pos[2] < 0.33
    assert robot.projected_gravity[2] < -0.98  # upright
    base = robot.robot.base_qpos_adr
    robot.data.qpos[base + 2] = 0.03  # torso into the floor
    mujoco.mj_forward(robot.model, robot.data)
    _, _, terminated, truncated, _ = env.step(np.zeros(12))
    assert terminated and not truncated


def test_a_diverged_simulation_ends_the_episode_without_reward():
    env = make_env('sim/arm_reach.yaml')
    env.reset(seed=0)
    robot = env.unwrapped
    robot.data.qvel[:] = np.nan  # MuJoCo resets such a state and only warns
    obs, reward, terminated, truncated, info = env.step(np.zeros(3))
    assert terminated and not truncated and reward == 0.0 and info == {}
    assert np.isfinite(obs).all()


# --- reproducibility -------------------------------------------------------------------------

def _rollout(env, seed: int, steps: int) -> list:
    out = [env.reset(seed=seed)[0]]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 12))
        out.append(np.append(obs, [reward, terminated]))
        if terminated or truncated:
            break
    return out


def test_same_seed_same_episode_with_every_randomisation_on():
    """quadruped_walk randomises friction, masses, gains, delay, pushes, commands and adds
    observation noise; all of it comes from the env's seeded generator."""
    a, b = make_env('sim/quadruped_walk.yaml'), make_env('sim/quadruped_walk.yaml')
    first, second = _rollout(a, 7, 450), _rollout(b, 7, 450)  # 9 s: one push at 8 s
    assert len(first) == len(second)
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))
    other = _rollout(b, 8, 5)
    assert not np.array_equal(first[0], other[0])


def test_env_state_snapshot_resumes_the_episode_exactly(tmp_path):
    env = make_env('sim/quadruped_walk.yaml')
    _rollout(env, 3, 30)
    # Through a file as checkpoints store it: plain types that weights_only loading accepts.
    torch.save({'state': get_env_state(env)}, tmp_path / 'state.pt')
    state = torch.load(tmp_path / 'state.pt', weights_only=True)['state']
    rng = np.random.default_rng(11)
    actions = rng.uniform(-1, 1, (40, 12))
    expected = [env.step(a)[0] for a in actions]
    fresh = make_env('sim/quadruped_walk.yaml')
    fresh.reset(seed=99)  # different randomisation, overwritten by the snapshot
    set_env_state(fresh, state)
    resumed = [fresh.step(a)[0] for a in actions]
    assert all(np.array_equal(x, y) for x, y in zip(expected, resumed, strict=True))


# --- training --------------------------------------------------------------------------------

def test_trainer_runs_on_the_arm(tmp_path):
    threads = torch.get_num_threads()
    try:
        cfg = make_config('cpu', overrides={
            'task.id': 'sim/arm_reach.yaml', 'agent.hidden': 32, 'agent.layers': 2,
            'agent.batch_size': 32, 'agent.particles': 4, 'agent.flow_steps': 2,
            'trainer.total_steps': 300, 'trainer.warmup_steps': 100,
            'trainer.replay_size': 1000, 'trainer.eval_episodes': 1,
            'trainer.eval_interval': 0, 'trainer.checkpoint_interval': 0,
            'trainer.progress': False, 'trainer.torch_threads': 1,
            'trainer.output_dir': str(tmp_path)})
        trainer = Trainer(cfg)
        result = trainer.run()
    finally:
        torch.set_num_threads(threads)
    assert trainer.env_steps == 300
    assert trainer.spec.obs_terms == make_env('sim/arm_reach.yaml').unwrapped.obs_terms
    assert np.isfinite(result.final_return_deploy)
    assert -200 < result.final_return_deploy < 0  # -distance per step over 125 steps


def test_task_files_are_independent_copies():
    """Two envs from one file share nothing: randomising one leaves the other's model alone."""
    a, b = RobotEnv('sim/quadruped_walk.yaml'), RobotEnv('sim/quadruped_walk.yaml')
    a.reset(seed=1)
    b.reset(seed=2)
    masses = copy.deepcopy(b.model.body_mass)
    a.reset(seed=3)
    assert np.array_equal(b.model.body_mass, masses)


def test_commands_are_redrawn_every_resample_seconds(tmp_path):
    env = make_env(str(arm_task(tmp_path, _set('command.resample_seconds', 0.2))))  # 5 steps
    env.reset(seed=0)
    robot = env.unwrapped
    seen = [robot.command.copy()]
    for _ in range(10):
        env.step(np.zeros(3))
        seen.append(robot.command.copy())
    assert all(np.array_equal(seen[0], s) for s in seen[1:5])
    assert not np.array_equal(seen[4], seen[5])
    assert all(np.array_equal(seen[5], s) for s in seen[6:10])
    assert not np.array_equal(seen[9], seen[10])
    box = robot.task.command
    for goal in seen:
        assert box.x[0] <= goal[0] <= box.x[1] and box.z[0] <= goal[2] <= box.z[1]


def test_preview_renders_the_robot():
    from fpmd_core.robots.preview import render_task

    image = render_task('sim/arm_reach_urdf.yaml', 96, 72, settle_steps=1)
    assert image.shape == (72, 96, 3) and image.dtype == np.uint8
    assert image.reshape(-1, 3).std(axis=0).max() > 10  # not a blank frame
