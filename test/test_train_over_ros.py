"""Training over ROS through the runner: mujoco_sim processes + the trainer process, real DDS.

A short run completes and writes its outputs; a sim killed mid-run is named and the trainer
either gives up cleanly (exit code 3, with a checkpoint) or recovers once the runner has
respawned the sim. Every wait is bounded; the bounds are loose on purpose (shared 2-core hosts).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import NodeNameNonExistentError
from runner_helpers import REPO_ROOT, Listener, RunnerProcess, runner_environment, trainer_statuses

RUN_TIMEOUT_S = 420.0  # a whole run, including process start-up under load


def _config(tmp_path, total_steps: int, warmup_steps: int):
    path = tmp_path / 'tiny.yaml'
    path.write_text(
        'profile: cpu\n'
        'task: {id: InvertedPendulum-v5, num_envs: 1}\n'
        'agent: {algo: fpmd_m, hidden: 32, batch_size: 32}\n'
        f'trainer: {{torch_threads: 1, total_steps: {total_steps}, '
        f'warmup_steps: {warmup_steps}, eval_interval: 0, eval_episodes: 2, '
        'checkpoint_interval: 0, log_interval: 100, replay_size: 5000}\n')
    return path


@pytest.fixture
def listener():
    listener = Listener()
    yield listener
    listener.close()


def _env_steps(diagnostics) -> int:
    statuses = trainer_statuses(diagnostics)
    return max((int(values['env_steps']) for _, _, values in statuses), default=0)


def test_short_training_run_over_ros(tmp_path, listener):
    diagnostics = listener.subscribe(DiagnosticArray, '/diagnostics')
    out = tmp_path / 'out'
    run = RunnerProcess('train_sim', 'num_envs:=2', f'config:={_config(tmp_path, 200, 100)}',
                        f'output_dir:={out}')
    try:
        # Collect /diagnostics while it trains (the runner exits on its own).
        listener.spin_until(lambda: run.proc.poll() is not None, RUN_TIMEOUT_S)
        code = run.wait(timeout_s=60)
    finally:
        run.stop()
    assert code == 0, run.output[-5000:]
    elapsed = time.monotonic() - run.started
    print(f'short training run: {elapsed:.1f} s')
    for name in ('policy.onnx', 'checkpoints/final.pt', 'learning_curve.png', 'eval.csv'):
        assert (out / name).is_file(), f'{name} missing:\n{run.output[-3000:]}'
    assert list((out / 'tensorboard').iterdir())
    assert f'policy: {out / "policy.onnx"}' in run.output
    assert f'checkpoint: {out / "checkpoints" / "final.pt"}' in run.output
    assert 'training finished: 200 env steps, 51 updates' in run.output  # from step 100 on
    assert run.output.count('training finished:') == 1  # logged, not also printed
    assert '/trainer exited with code 0' in run.output
    # The run was resolved once, by the graph, and recorded in its folder.
    from fpmd_core.config import make_config

    cfg = make_config(file=out / 'config.yaml')
    assert (cfg.task.num_envs, cfg.trainer.total_steps, cfg.trainer.output_dir) == (
        2, 200, str(out))

    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(out / 'policy.onnx')).metadata_props}
    meta = json.loads(metadata['fpmd_metadata'])
    assert (meta['task'], meta['algorithm'], meta['env_steps']) == (
        'InvertedPendulum-v5', 'fpmd_m', 200)

    statuses = trainer_statuses(diagnostics)
    assert statuses, 'no trainer status on /diagnostics'
    values = statuses[-1][2]
    assert values['sims'] == 'env_0,env_1' and values['task'] == 'InvertedPendulum-v5'
    assert values['total_steps'] == '200'
    assert {'env_steps', 'updates', 'env_steps_per_s', 'recoveries'} <= set(values)


def test_short_pixel_training_run_over_ros(tmp_path):
    """The sims publish camera frames, the trainer stacks them and exports a uint8-input
    policy: the pixel pipeline end to end over real DDS, in seconds."""
    config = tmp_path / 'pixels.yaml'
    config.write_text(
        'profile: cpu_pixels\n'
        'task: {id: cartpole-swingup, num_envs: 1, image_size: 32, max_episode_steps: 20}\n'
        'agent: {algo: fpmd_m, hidden: 32, batch_size: 16}\n'
        'trainer: {total_steps: 60, warmup_steps: 40, eval_interval: 0, eval_episodes: 1, '
        'checkpoint_interval: 0, log_interval: 20, replay_size: 1000}\n')
    out = tmp_path / 'out'
    run = RunnerProcess('train_sim', f'config:={config}', f'output_dir:={out}')
    try:
        code = run.wait(timeout_s=RUN_TIMEOUT_S)
    finally:
        run.stop()
    assert code == 0, run.output[-5000:]
    assert 'training finished: 60 env steps, 21 updates' in run.output
    from fpmd_core.runtime import OnnxPolicy

    meta = OnnxPolicy(out / 'policy.onnx').metadata
    assert (meta['task'], meta['obs_shape'], meta['action_repeat']) == (
        'cartpole-swingup', [32, 32, 9], 2)


def _kill_sim_mid_run(run: RunnerProcess, listener: Listener, diagnostics) -> float:
    """Wait until the trainer has stepped a while, then SIGKILL /env_1/mujoco_sim."""
    stepping = listener.spin_until(
        lambda: _env_steps(diagnostics) >= 100 or run.proc.poll() is not None, RUN_TIMEOUT_S)
    stepping = stepping and _env_steps(diagnostics) >= 100
    assert stepping, f'the trainer never reported 100 env steps:\n{run.output[-5000:]}'
    assert run.proc.poll() is None, run.output[-5000:]
    os.kill(run.pid_of('/env_1/mujoco_sim'), signal.SIGKILL)
    return time.monotonic()


def test_killed_sim_is_named_and_the_trainer_exits(tmp_path, listener):
    diagnostics = listener.subscribe(DiagnosticArray, '/diagnostics')
    out = tmp_path / 'out'
    # Warm-up (random actions): fast steps, and far more of them than the test needs.
    run = RunnerProcess('train_sim', 'num_envs:=2',
                        f'config:={_config(tmp_path, 10**6, 10**6 - 1)}',
                        f'output_dir:={out}', 'step_timeout_s:=2.0', 'max_recoveries:=0')
    try:
        killed_at = _kill_sim_mid_run(run, listener, diagnostics)
        code = run.wait(timeout_s=120)
        took = time.monotonic() - killed_at
    finally:
        run.stop()
    print(f'killed sim -> runner exit: {took:.1f} s')
    assert code == 3, run.output[-5000:]
    assert took < 90, f'{took:.1f} s from the kill to the exit'
    output = run.output
    assert 'sim env_1: no transition' in output
    assert 'gave up after 0 recoveries' in output
    assert (out / 'checkpoints' / 'interrupted.pt').is_file()
    assert 'checkpoint written at env step' in output
    assert '/trainer exited with code 3' in output
    assert '/trainer failed (exit code 3); its log above says why' in output


def test_killed_sim_is_respawned_and_training_recovers(tmp_path, listener):
    diagnostics = listener.subscribe(DiagnosticArray, '/diagnostics')
    out = tmp_path / 'out'
    run = RunnerProcess('train_sim', 'num_envs:=2', f'config:={_config(tmp_path, 4000, 3950)}',
                        f'output_dir:={out}', 'step_timeout_s:=3.0', 'max_recoveries:=3')
    try:
        _kill_sim_mid_run(run, listener, diagnostics)
        listener.spin_until(lambda: run.proc.poll() is not None, RUN_TIMEOUT_S)
        code = run.wait(timeout_s=60)
    finally:
        run.stop()
    output = run.output
    assert code == 0, output[-5000:]
    assert 'sim env_1: no transition' in output
    assert 'recovery 1/3: reconnecting to the sims' in output
    assert 'respawning /env_1/mujoco_sim' in output
    assert 'training finished: 4000 env steps' in output
    assert (out / 'checkpoints' / 'interrupted.pt').is_file()
    assert (out / 'policy.onnx').is_file()
    levels = {(level, values['state']) for level, _, values in trainer_statuses(diagnostics)}
    assert (1, 'recovering') in levels, levels  # WARN while it reconnected


def test_ctrl_c_stops_training_with_a_checkpoint(tmp_path, listener):
    diagnostics = listener.subscribe(DiagnosticArray, '/diagnostics')
    out = tmp_path / 'out'
    run = RunnerProcess('train_sim', 'num_envs:=2',
                        f'config:={_config(tmp_path, 10**6, 10**6 - 1)}', f'output_dir:={out}')
    try:
        # Stop waiting as soon as the runner exits: a failed start is reported at once.
        listener.spin_until(lambda: _env_steps(diagnostics) >= 50 or run.proc.poll() is not None,
                            RUN_TIMEOUT_S)
        assert _env_steps(diagnostics) >= 50, run.output[-5000:]
        # `ros2 node info /trainer`: the sims' topics are the trainer node's own.
        transitions = {'/env_0/transition', '/env_1/transition'}

        def trainer_subscriptions() -> set[str]:
            try:
                return {topic for topic, _ in
                        listener.node.get_subscriber_names_and_types_by_node('trainer', '/')}
            except NodeNameNonExistentError:  # not discovered yet
                return set()

        listener.spin_until(lambda: transitions <= trainer_subscriptions(), 60.0)
        assert transitions <= trainer_subscriptions(), trainer_subscriptions()
        commands = {topic for topic, _ in
                    listener.node.get_publisher_names_and_types_by_node('trainer', '/')}
        assert {'/env_0/commands', '/env_1/commands', '/diagnostics'} <= commands
        run.proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends the runner
        code = run.wait(timeout_s=120)
    finally:
        run.stop()
    output = run.output
    # A stop on request, not a failure: the trainer writes its checkpoint and exits 0.
    assert code == 0, output[-5000:]
    checkpoint = out / 'checkpoints' / 'interrupted.pt'
    assert checkpoint.is_file()
    assert f'checkpoint: {checkpoint}. Continue with the same arguments and ' \
        f'resume:={checkpoint}' in output
    assert re.search(r'\[INFO\] \[[\d.]+\] \[trainer\]: stopped on request at env step \d+ '
                     r'of 1000000', output), output[-5000:]
    assert '[ERROR]' not in output and '[FATAL]' not in output
    # The trainer stops first (its sims still answer while it writes the checkpoint).
    trainer_stopped = output.index('/trainer stopped (exit code 0)')
    for sim in ('/env_0/mujoco_sim', '/env_1/mujoco_sim'):
        assert output.index(f'{sim} stopped (exit code 0)') > trainer_stopped
    assert (out / 'config.yaml').is_file()


def _trainer_process(*params: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """``python -m fpmd_ros.trainer_node`` alone (what the console script runs)."""
    args = [sys.executable, '-m', 'fpmd_ros.trainer_node', '--ros-args']
    for param in params:
        args += ['-p', param]
    return subprocess.run(args, cwd=REPO_ROOT, env=runner_environment(), capture_output=True,
                          text=True, timeout=timeout_s)


@pytest.mark.parametrize('params, expected', [
    (['config:=/no/such.yaml'], "parameter 'config': file not found: /no/such.yaml"),
    (['config:={bad}'], "parameter 'config': {bad}: agent.algo: expected one of ('fpmd_r', "
     "'fpmd_m', 'dpmd', 'sac'), got 'ppo'"),
    (['step_timeout_s:=5'], "parameter 'step_timeout_s': Trying to set parameter"),
    (["env_namespaces:=['a','b']"], "parameter 'env_namespaces' lists 2 sims (a, b) but the "
     'config'),
    (['max_recoveries:=-1'], "parameter 'max_recoveries'"),
    # rclpy would ignore these: the trainer has no such parameters.
    (['task:=Hopper-v5'], "[trainer]: parameter 'task' is not a trainer parameter; the run's "
     'settings come from the config file (config:=...)'),
    (['step_timeout:=5.0'], "parameter 'step_timeout' is not a trainer parameter (did you mean "
     "'step_timeout_s'?)"),
])
def test_trainer_node_refuses_bad_parameters(params, expected, tmp_path):
    # The trainer reads its config file as it is: the graph resolved it (no overrides here).
    bad = tmp_path / 'bad.yaml'
    bad.write_text('agent: {algo: ppo}\n')
    params = [p.format(bad=bad) for p in params]
    expected = expected.format(bad=bad)
    result = _trainer_process(*params)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_trainer_without_its_sims_names_them():
    ghost = f'ghost_p{os.getpid()}'
    start = time.monotonic()
    result = _trainer_process(f"env_namespaces:=['{ghost}']", 'connect_timeout_s:=2.0')
    assert result.returncode == 3, result.stderr
    assert f'sim {ghost}: not found after 2 s (missing sims: {ghost})' in result.stderr
    assert time.monotonic() - start < 90


def test_ctrl_c_while_waiting_for_the_sims_stops_with_exit_0():
    """A stop asked for before training began is still a stop on request: announced at once,
    exit 0 (nothing to save) at the latest when the wait for the sims ends."""
    ghost = f'ghost_c{os.getpid()}'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'fpmd_ros.trainer_node', '--ros-args', '-p',
         f"env_namespaces:=['{ghost}']", '-p', 'connect_timeout_s:=15.0'],
        cwd=REPO_ROOT, env=runner_environment(), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:
            if f'over 1 sims ({ghost})' in line:  # logged as it starts waiting for them
                break
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert 'SIGINT: stopping at the next step' in out
    assert 'stopped on request before training began; nothing to save' in out
