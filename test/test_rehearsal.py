"""The deployment rehearsal (``./fpmd deploy`` = ``python -m fpmd_ros.rehearsal``): the deploy
graph with a realtime sim, run end to end by the project runner over real DDS, scored against the
in-process evaluation of the same policy. An untrained export is enough: what is checked is the
machinery (episodes scored, seeds matched, rate read, graph stopped), not the policy's quality."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from runner_helpers import RunnerProcess, export_untrained_policy

from fpmd_ros import rehearsal
from fpmd_ros.graph import GraphArgumentError

TASK = 'InvertedPendulum-v5'  # 25 Hz; an untrained policy drops the pole within a few steps
RUN_TIMEOUT_S = 400.0  # start-up, 2 short episodes, stop, in-process evaluation (loaded host)


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
    return export_untrained_policy(tmp_path_factory.mktemp('rehearsal') / 'policy.onnx', TASK)


def _returns(line: str) -> list[float]:
    return [float(x) for x in re.search(r'\[([^\]]*)\]', line).group(1).split(',')]


def _check_departures(out: str) -> None:
    """Every scored step's applied command reached the rehearsal, and each episode whose return
    differs from in-process has a line naming where it departed."""
    steps = int(re.search(r'episodes \((\d+) steps in', out).group(1))
    commands = re.search(r'  commands: (\d+) of (\d+) steps applied a late command \(one '
                         r'computed for an earlier state: it reached the sim after its next '
                         r'step\), (\d+) zeroed after command_timeout_s\n', out)
    assert commands and int(commands.group(2)) == steps, out[-3000:]
    equal, total = map(int, re.search(r'per episode: (\d+) of (\d+) returns equal', out).groups())
    lines = re.findall(r'^  episode \d+ \(seed \d+\): (?:first difference at step \d+: |no '
                       r'difference in the |every step got)', out, re.MULTILINE)
    assert len(lines) == total - equal, out[-3000:]


def test_rehearsal_runs_end_to_end_and_prints_both_returns(policy):
    namespace = f'rehearsal_p{os.getpid()}'
    run = RunnerProcess(None, f'policy:={policy}', 'episodes:=2', 'max_episode_steps:=20',
                        f'namespace:={namespace}', module='fpmd_ros.rehearsal')
    code = run.wait(timeout_s=RUN_TIMEOUT_S)
    out = run.output
    assert code in (0, 1), out[-5000:]
    assert f'deploy rehearsal: {TASK}' in out
    rate = re.search(r'control rate: achieved ([\d.]+) Hz \(target 25 Hz: trigger observation',
                     out)
    assert rate and float(rate.group(1)) > 0, out[-3000:]
    closed = next(line for line in out.splitlines() if 'closed-loop return' in line)
    in_process = next(line for line in out.splitlines() if 'in-process return' in line)
    assert len(_returns(closed)) == len(_returns(in_process)) == 2
    sim_line = next(line for line in out.splitlines() if line.startswith('  realtime sim:'))
    seeds = [int(s) for s in re.search(r'seeds (\d+(?:, \d+)*)$', sim_line).group(1).split(',')]
    assert seeds[1] == seeds[0] + 1  # consecutive sim episodes: seed + k
    assert re.search(r'ratio closed loop / in-process: [\d.]+ \(required >= 0.9\): (OK|FAIL)',
                     out)
    assert re.search(r'per episode: [0-2] of 2 returns equal, largest difference [\d.]+', out)
    _check_departures(out)
    if code == 1:
        assert 'FAIL: the closed-loop return' in out
    # The graph was stopped in order, the controller first (its safe action), then the sim.
    controller = out.index(f'/{namespace}/policy_controller stopped (exit code 0)')
    assert controller < out.index(f'/{namespace}/mujoco_sim stopped (exit code 0)')


def test_rehearsal_of_a_pixel_policy_watches_the_sim_camera(tmp_path):
    """A policy trained from pixels: the rehearsal picks observation_mode image, the realtime
    sim renders the camera the policy was trained with, and the controller acts on its frames."""
    pixel_policy = export_untrained_policy(tmp_path / 'pixels.onnx', 'cartpole-swingup',
                                           pixels=True)
    plan = rehearsal.make_plan({'policy': str(pixel_policy), 'max_episode_steps': '20'})
    assert plan.controller.parameters['observation_mode'] == 'image'
    assert plan.sim.parameters['camera_enabled'] and plan.sim.parameters['action_repeat'] == 2
    namespace = f'rehearsal_pix_p{os.getpid()}'
    run = RunnerProcess(None, f'policy:={pixel_policy}', 'episodes:=1', 'max_episode_steps:=20',
                        f'namespace:={namespace}', module='fpmd_ros.rehearsal')
    code = run.wait(timeout_s=RUN_TIMEOUT_S)
    out = run.output
    assert code in (0, 1), out[-5000:]
    rate = re.search(r'control rate: achieved ([\d.]+) Hz', out)
    assert rate and float(rate.group(1)) > 0, out[-3000:]
    closed = next(line for line in out.splitlines() if 'closed-loop return' in line)
    in_process = next(line for line in out.splitlines() if 'in-process return' in line)
    assert len(_returns(closed)) == len(_returns(in_process)) == 1
    _check_departures(out)


def test_in_process_evaluation_follows_the_seeds(policy):
    from fpmd_core.runtime import load_policy
    from fpmd_core.tasks import make_env

    loaded = load_policy(policy)
    first = rehearsal.evaluate_in_process(loaded, TASK, [3, 4, 3], max_episode_steps=20)
    assert first[0] == first[2] and [e.seed for e in first] == [3, 4, 3]
    env = make_env(TASK, 20, normalized_actions=False)
    observation, _ = env.reset(seed=4)
    total, length, done = 0.0, 0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(
            np.clip(loaded(observation), -3.0, 3.0))
        total, length, done = total + reward, length + 1, terminated or truncated
    assert (first[1].episode_return, first[1].length, first[1].terminated) == (
        total, length, terminated)
    assert 1 <= length <= 20


def test_pass_rule():
    assert rehearsal.passes(90.0, 100.0, 0.9) and not rehearsal.passes(89.9, 100.0, 0.9)
    assert rehearsal.passes(-105.0, -100.0, 0.9) and not rehearsal.passes(-111.0, -100.0, 0.9)
    assert rehearsal.passes(0.0, 0.0, 0.9)


@pytest.mark.parametrize('args, argument, expected', [
    ({'episodes': '0'}, 'episodes', 'expected an integer >= 1'),
    ({'realtime_factor': '500'}, 'realtime_factor', 'from 0.01 to 100'),
    ({'seed': '-1'}, 'seed', 'expected an integer >= 0'),
    ({'min_ratio': 'most'}, 'min_ratio', 'expected a number >= 0'),
    ({'trigger': 'often'}, 'trigger', 'expected one of: timer, observation'),
    ({'sim': 'false'}, 'sim', 'unknown argument'),
    ({'policy': '/no/such.onnx'}, 'policy', 'file not found'),
])
def test_argument_errors_name_the_argument(args, argument, expected, policy):
    with pytest.raises(GraphArgumentError, match=expected) as caught:
        rehearsal.make_plan({'policy': str(policy), **args})
    assert caught.value.argument == argument


def test_plan_sets_the_sim_and_a_fast_enough_timer(policy, capsys):
    plan = rehearsal.make_plan({'policy': str(policy), 'realtime_factor': '2', 'seed': '7',
                                'max_episode_steps': '50', 'trigger': 'timer'})
    assert plan.sim.parameters == {'task': TASK, 'mode': 'realtime', 'publish_clock': False,
                                   'realtime_factor': 2.0, 'seed': 7, 'max_episode_steps': 50,
                                   'action_repeat': 1}
    # A timer loop keeps up with a sim at twice real time; the observation trigger needs none.
    assert plan.controller.parameters['control_rate_hz'] == 50.0
    assert rehearsal.make_plan({'policy': str(policy)}).controller.parameters == {
        'policy': str(policy), 'observation_mode': 'observation', 'control_rate_hz': 0.0,
        'trigger': 'observation', 'use_sim_time': False}
    assert rehearsal.main(['--show-args']) == 0
    assert 'episodes (default: \'3\')' in capsys.readouterr().out
    assert rehearsal.main([f'policy:={policy}', 'episodes:=none']) == 2
    assert "argument 'episodes'" in capsys.readouterr().err
