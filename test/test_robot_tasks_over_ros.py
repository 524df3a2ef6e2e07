"""Robot task files (sim/<name>.yaml) over ROS 2: the graph resolves them, mujoco_sim runs them
(lockstep and realtime, joint_states of the robot's joints), the trainer trains on them through
the runner and exports a policy that carries the robot's deploy metadata."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from runner_helpers import REPO_ROOT, RunnerProcess
from sim_helpers import RunningSim
from test_sim_node import SimClient

from fpmd_core.robots import robot_metadata
from fpmd_core.tasks import make_env
from fpmd_ros.graph import GraphArgumentError, train_sim_graph
from fpmd_ros.sim.node import MujocoSimNode

PID = os.getpid()
ARM = 'sim/arm_reach.yaml'
ARM_PATH = os.path.join(REPO_ROOT, ARM)
ARM_JOINTS = ['yaw', 'shoulder', 'elbow']
RUN_TIMEOUT_S = 420.0  # a whole run, including process start-up under load


# --- the graph ---------------------------------------------------------------------------------

def test_graph_gives_every_node_the_task_file_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: found by fpmd_core's lookup
    nodes = train_sim_graph({'task': ARM, 'num_envs': '2', 'output_dir': str(tmp_path / 'o')})
    sims = [n for n in nodes if n.executable == 'mujoco_sim']
    assert [s.parameters['task'] for s in sims] == [ARM_PATH, ARM_PATH]
    from fpmd_core.config import make_config

    assert make_config(file=tmp_path / 'o' / 'config.yaml').task.id == ARM_PATH


def test_graph_prefers_a_task_file_in_the_working_directory(tmp_path, monkeypatch):
    own = tmp_path / 'sim'
    own.mkdir()
    shutil.copy(ARM_PATH, own / 'arm_reach.yaml')
    shutil.copy(os.path.join(REPO_ROOT, 'sim', 'arm3.xml'), own / 'arm3.xml')
    monkeypatch.chdir(tmp_path)
    nodes = train_sim_graph({'task': ARM, 'output_dir': str(tmp_path / 'o')})
    assert nodes[0].parameters['task'] == str(own / 'arm_reach.yaml')


@pytest.mark.parametrize('text, expected', [
    (None, "argument 'task': task file 'sim/no_such_task.yaml': cannot read it"),
    ('model: arm3.xml\nepisode_secnds: 3\n', "did you mean 'episode_seconds'"),
])
def test_graph_refuses_a_bad_task_file_naming_the_argument(tmp_path, monkeypatch, text,
                                                           expected):
    monkeypatch.chdir(tmp_path)
    task = 'sim/no_such_task.yaml'
    if text is not None:
        (tmp_path / 'sim').mkdir()
        (tmp_path / task).write_text(text)
    with pytest.raises(GraphArgumentError, match=expected) as caught:
        train_sim_graph({'task': task, 'output_dir': str(tmp_path / 'o')})
    assert caught.value.argument == 'task'
    assert not (tmp_path / 'o').exists()  # nothing written for a refused run


# --- mujoco_sim --------------------------------------------------------------------------------

def test_lockstep_sim_runs_a_task_file_like_in_process(ros_context, ros_executor):
    namespace = f'arm_lockstep_p{PID}'
    sim = RunningSim(namespace, task=ARM_PATH, seed=5, max_episode_steps=6)
    try:
        client = SimClient(ros_context, ros_executor, namespace)
        first = client.reset()  # episode 1, seed 6
        env = make_env(ARM_PATH, max_episode_steps=6, normalized_actions=False)
        expected, _ = env.reset(seed=5 + first.episode)
        np.testing.assert_array_equal(first.observation, expected)
        rng = np.random.default_rng(1)
        low, high = env.action_space.low, env.action_space.high
        for step in range(1, 7):
            action = rng.uniform(low, high)
            client.send(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            assert client.wait_for(lambda t, s=step: t.step == s or t.episode > first.episode)
            got = [t for t in client.transitions
                   if (t.episode, t.step) == (first.episode, step)][-1]
            np.testing.assert_array_equal(got.observation, obs)
            assert got.reward == reward
            assert (got.terminated, got.truncated) == (terminated, truncated)
        assert truncated  # the 6-step limit
        # joint_states: the robot's joints in action order (not every joint of the model).
        joint_msg = client.joint_states[-1][1]
        assert list(joint_msg.name) == ARM_JOINTS
        assert len(joint_msg.position) == len(joint_msg.velocity) == 3
        labels = [d.label for d in client.observations[-1].layout.dim]
        assert labels == ['joint_pos', 'joint_vel', 'command', 'goal_offset', 'last_action']
    finally:
        sim.stop()


def test_realtime_sim_runs_a_task_file(ros_context, ros_executor):
    namespace = f'arm_realtime_p{PID}'
    sim = RunningSim(namespace, task=ARM_PATH, mode='realtime', seed=2, max_episode_steps=4,
                     realtime_factor=4.0)
    try:
        client = SimClient(ros_context, ros_executor, namespace, lockstep=False)
        from ros_helpers import spin_until
        from std_msgs.msg import Float64MultiArray

        from fpmd_ros import messages
        from fpmd_ros.qos import APPLIED_COMMAND_QOS

        applied = []
        client.node.create_subscription(
            Float64MultiArray, f'/{namespace}/mujoco_sim/applied_command',
            lambda m: applied.append(messages.decode_applied_command(m, act_dim=3)),
            APPLIED_COMMAND_QOS)
        assert spin_until(ros_executor, lambda: len(client.episodes) >= 2 and applied, 15.0)
        assert all(s.length == 4 and s.seed == 2 + s.episode for s in client.episodes)
        assert list(client.joint_states[-1][1].name) == ARM_JOINTS
        # No command: the arm is held at its default pose, not driven to joint targets of 0 rad.
        pose = robot_metadata(ARM_PATH)['default_joint_pos']
        assert all(a.timed_out and a.action.tolist() == pose for a in applied)
    finally:
        sim.stop()


def test_sim_refuses_a_bad_task_file(ros_context, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: arm3.xml\n')
    from rclpy.parameter import Parameter

    from fpmd_ros.sim.node import SimParameterError

    with pytest.raises(SimParameterError, match=rf"parameter 'task': task file {bad}: "):
        MujocoSimNode(context=ros_context,
                      parameter_overrides=[Parameter('task', value=str(bad))])


# --- training over ROS -------------------------------------------------------------------------

def test_short_training_run_of_a_task_file_over_ros(tmp_path):
    config = tmp_path / 'arm.yaml'
    config.write_text(
        'profile: cpu\n'
        'task: {num_envs: 1}\n'
        'agent: {algo: fpmd_r, hidden: 32, batch_size: 32}\n'
        'trainer: {torch_threads: 1, eval_interval: 0, eval_episodes: 1, '
        'checkpoint_interval: 0, log_interval: 100, replay_size: 5000}\n')
    out = tmp_path / 'out'
    run = RunnerProcess('train_sim', f'task:={ARM}', f'config:={config}', 'total_steps:=300',
                        'warmup_steps:=200', f'output_dir:={out}')
    try:
        code = run.wait(timeout_s=RUN_TIMEOUT_S)
    finally:
        run.stop()
    assert code == 0, run.output[-5000:]
    assert 'training finished: 300 env steps, 101 updates' in run.output
    # A goal task's closing line says how close the arm ended, as eval.csv records it.
    import re

    finished = next(line for line in run.output.splitlines() if 'training finished' in line)
    assert re.search(r'final goal distance \d+\.\d\d cm \(deploy', finished), finished
    for name in ('policy.onnx', 'checkpoints/final.pt', 'eval.csv'):
        assert (out / name).is_file(), f'{name} missing:\n{run.output[-3000:]}'
    from fpmd_core.runtime import OnnxPolicy

    policy = OnnxPolicy(out / 'policy.onnx')
    meta = policy.metadata
    assert (meta['task'], meta['obs_dim'], meta['act_dim'], meta['joint_names']) == (
        ARM_PATH, 15, 3, ARM_JOINTS)
    assert meta['control_period_s'] == pytest.approx(0.04)
    assert meta['robot'] == robot_metadata(ARM_PATH)  # the robot's deploy metadata
    action = policy(np.zeros(15, np.float32))
    assert action.shape == (3,) and np.isfinite(action).all()
    # The checkpoint holds the same metadata (taken when the trainer made its env).
    from fpmd_core.runtime import CheckpointPolicy

    checkpoint = CheckpointPolicy(out / 'checkpoints' / 'final.pt')
    assert checkpoint.metadata['robot'] == meta['robot']
    np.testing.assert_allclose(checkpoint(np.zeros(15, np.float32)), action, atol=1e-5)


# --- the deploy rehearsal ----------------------------------------------------------------------

def test_rehearsal_of_a_task_file_policy(tmp_path):
    """The realtime sim runs the very task file the policy was trained on; the controller builds
    the observation from joint_states and the sim's goal, as on a robot; the closed loop is
    scored against in-process (the machinery, not the policy)."""
    import re

    from runner_helpers import export_untrained_policy

    from fpmd_ros import rehearsal

    policy = export_untrained_policy(tmp_path / 'arm.onnx', ARM)
    plan = rehearsal.make_plan({'policy': str(policy), 'max_episode_steps': '20'})
    assert plan.sim.parameters['task'] == ARM_PATH
    assert plan.controller.parameters['observation_mode'] == 'joint_states'
    assert ('goal', 'mujoco_sim/goal') in plan.controller.remappings
    assert plan.measured_observation  # the in-process loop leaves training noise out too
    namespace = f'rehearsal_arm_p{PID}'
    run = RunnerProcess(None, f'policy:={policy}', 'episodes:=2', 'max_episode_steps:=20',
                        f'namespace:={namespace}', module='fpmd_ros.rehearsal')
    code = run.wait(timeout_s=RUN_TIMEOUT_S)
    out = run.output
    assert code in (0, 1), out[-5000:]
    assert f'deploy rehearsal: {ARM}, policy {policy}' in out
    assert '2 episodes (40 steps in' in out, out[-3000:]
    for label in ('closed-loop return', 'in-process return'):
        line = next(line for line in out.splitlines() if label in line)
        assert len(re.search(r'\[([^\]]*)\]', line).group(1).split(',')) == 2, line
    assert re.search(r'per episode: [0-2] of 2 returns equal', out), out[-3000:]


def test_rehearsal_refuses_a_task_file_changed_since_training(tmp_path):
    for name in ('arm_reach.yaml', 'arm3.xml'):
        shutil.copy(os.path.join(REPO_ROOT, 'sim', name), tmp_path / name)
    task = tmp_path / 'arm_reach.yaml'
    from runner_helpers import export_untrained_policy

    from fpmd_ros import rehearsal

    policy = export_untrained_policy(tmp_path / 'arm.onnx', str(task))
    task.write_text(task.read_text() + '\n# edited after training\n')
    with pytest.raises(GraphArgumentError, match=rf"argument 'policy': task file {task}: "
                       'changed since the policy was trained on it') as caught:
        rehearsal.make_plan({'policy': str(policy)})
    assert caught.value.argument == 'policy'


def test_deploy_task_file_argument_for_a_policy_whose_task_file_moved(tmp_path):
    """A policy trained on a task file that is gone from its recorded path (and from every
    place a task id is looked up): deploy's task_file names the copy, for the sim, the
    controller's kinematics and the rehearsal's in-process loop; a wrong copy is refused
    naming the argument."""
    from runner_helpers import export_untrained_policy

    from fpmd_ros import rehearsal

    trained = tmp_path / 'trained'
    trained.mkdir()
    for name in ('arm_reach.yaml', 'arm3.xml'):
        shutil.copy(os.path.join(REPO_ROOT, 'sim', name), trained / name)
    policy = export_untrained_policy(tmp_path / 'arm.onnx', str(trained / 'arm_reach.yaml'))
    moved = tmp_path / 'moved'
    trained.rename(moved)
    with pytest.raises(GraphArgumentError, match="argument 'policy': task file .* not found"):
        rehearsal.make_plan({'policy': str(policy)})
    plan = rehearsal.make_plan({'policy': str(policy),
                                'task_file': str(moved / 'arm_reach.yaml')})
    assert plan.sim.parameters['task'] == str(moved / 'arm_reach.yaml')
    assert plan.controller.parameters['task_file'] == str(moved / 'arm_reach.yaml')
    assert plan.task_file == str(moved / 'arm_reach.yaml')
    (moved / 'arm_reach.yaml').write_text((moved / 'arm_reach.yaml').read_text() + '# x\n')
    with pytest.raises(GraphArgumentError, match="argument 'task_file': task file .* changed"):
        rehearsal.make_plan({'policy': str(policy), 'task_file': str(moved / 'arm_reach.yaml')})
