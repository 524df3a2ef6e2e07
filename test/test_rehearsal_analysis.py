"""The rehearsal's analysis of a closed loop, without DDS: replaying the sim's applied commands
in-process (real MuJoCo, real onnxruntime) finds the step where the closed loop departed from the
in-process loop and names why."""

from __future__ import annotations

import numpy as np
import pytest
from runner_helpers import export_untrained_policy

from fpmd_ros import rehearsal
from fpmd_ros.messages import AppliedCommand

TASK = 'HalfCheetah-v5'  # never terminates: an untrained policy runs the full 12 steps
STEPS, SEED, LATE_STEP = 12, 7, 5


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
    from fpmd_core.runtime import load_policy

    path = export_untrained_policy(tmp_path_factory.mktemp('analysis') / 'policy.onnx', TASK)
    return path, load_policy(path)


def _closed_loop_with_a_late_command(policy, late_step: int):
    """An episode as a realtime sim would record it when the command for ``late_step`` arrived
    after the sim's step: that step applied the previous state's command (held once)."""
    from fpmd_core.tasks import env_from_metadata

    low, high = policy.metadata['action_low'], policy.metadata['action_high']
    env = env_from_metadata(policy.metadata, STEPS)
    observation, _ = env.reset(seed=SEED)
    applied, previous, total = [], None, 0.0
    for step in range(STEPS):
        action = np.clip(np.asarray(policy(observation), dtype=np.float64), low, high)
        late = step == late_step
        if late:
            action = previous
        applied.append(AppliedCommand(episode=4, step=step, action=action, held=int(late),
                                      timed_out=False))
        previous = action
        observation, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
    env.close()
    assert truncated and not terminated
    return rehearsal.Episode(SEED, total, STEPS, False), applied


def test_a_late_command_is_named_with_its_step(policy):
    path, loaded = policy
    episode, applied = _closed_loop_with_a_late_command(loaded, LATE_STEP)
    [analysis] = rehearsal.analyse_closed_loop(loaded, [episode], [applied], STEPS)
    assert analysis.departure == rehearsal.Departure(
        LATE_STEP, f'the sim applied the command computed for step {LATE_STEP - 1} (late by one '
        'control period)')
    assert (analysis.late_steps, analysis.zeroed_steps) == (1, 0)
    assert (analysis.recorded_steps, analysis.length) == (STEPS, STEPS)
    assert analysis.replay_return == pytest.approx(episode.episode_return, abs=1e-12)

    # In the report: the episode's line names the departure; the summary counts the late command.
    reference = rehearsal.evaluate_in_process(loaded, TASK, [SEED], STEPS)
    assert reference[0].episode_return != episode.episode_return
    plan = rehearsal.make_plan({'policy': str(path), 'max_episode_steps': str(STEPS)})
    loop = rehearsal.ClosedLoop([episode], 4, 1.0, 20.0, 20.0, 20.0, 1, 0, (applied,), (4,))
    text, _ = rehearsal.report(plan, loop, reference, loaded.model_hash, 'fpmd_m', [analysis])
    assert (f'  episode 4 (seed {SEED}): first difference at step {LATE_STEP}: the sim applied '
            f'the command computed for step {LATE_STEP - 1} (late by one control period); 1 late '
            'command in this episode') in text.splitlines()
    assert (f'  commands: 1 of {STEPS} steps applied a late command (one computed for an earlier '
            'state: it reached the sim after its next step), 0 zeroed after '
            'command_timeout_s') in text.splitlines()


def test_an_episode_without_late_commands_has_no_departure(policy):
    _, loaded = policy
    episode, applied = _closed_loop_with_a_late_command(loaded, late_step=-1)
    [analysis] = rehearsal.analyse_closed_loop(loaded, [episode], [applied], STEPS)
    assert analysis.departure is None and analysis.late_steps == 0
    reference = rehearsal.evaluate_in_process(loaded, TASK, [SEED], STEPS)
    assert reference[0].episode_return == analysis.replay_return == episode.episode_return


def test_a_lost_tail_of_applied_commands_is_said(policy):
    _, loaded = policy
    episode, applied = _closed_loop_with_a_late_command(loaded, late_step=-1)
    [analysis] = rehearsal.analyse_closed_loop(loaded, [episode], [applied[:8]], STEPS)
    assert analysis.departure is None and analysis.recorded_steps == 8
    line = rehearsal.departure_line(4, SEED, analysis, episode.episode_return - 1.0)
    assert 'no difference in the 8 of 12 steps' in line and 'at step 8 or later' in line


def _commands(actions, held=None, timed_out=None):
    n = len(actions)
    held = held or [0] * n
    timed_out = timed_out or [False] * n
    return [AppliedCommand(0, step, np.asarray(a, dtype=np.float64), held[step], timed_out[step])
            for step, a in enumerate(actions)]


POLICY_ACTIONS = np.array([[0.1, -0.2], [0.3, 0.0], [0.5, 0.2], [0.7, 0.4], [0.9, 0.6]])
TOLERANCE = np.full(2, 2e-6)


@pytest.mark.parametrize('applied, held, timed_out, step, reason, late, zeroed', [
    # the command of step 1 reached the sim only after its step 3: held twice
    ([0, 1, 1, 1, 4], [0, 0, 1, 2, 0], None, 2,
     'the sim applied the command computed for step 1 (late by one control period)', 2, 0),
    # a new command that was computed for the state two steps back
    ([0, 1, 2, 1, 2], None, None, 3,
     'the sim applied the command computed for step 1 (late by 2 control periods)', 2, 0),
    ([0, 1, None, None, 4], None, [False, False, True, True, False], 2,
     'no command within command_timeout_s: the sim zeroed the controls', 0, 2),
    ([0, 1, None, 3, 4], None, None, 2,
     "the sim applied a zero action: the controller's safe action", 0, 0),
    ([0, 1, 'other', 3, 4], None, None, 2,
     'the controller acted on a different input', 0, 0),
])
def test_the_first_difference_and_its_reason(applied, held, timed_out, step, reason, late, zeroed):
    actions = [np.zeros(2) if i is None else np.array([9.0, 9.0]) if i == 'other' else
               POLICY_ACTIONS[i] for i in applied]
    departure, late_steps, zeroed_steps = rehearsal.compare_steps(
        _commands(actions, held, timed_out), POLICY_ACTIONS, TOLERANCE)
    assert departure.step == step and reason in departure.reason
    assert (late_steps, zeroed_steps) == (late, zeroed)


def test_float_noise_is_no_difference_but_a_held_command_counts_as_late():
    policy_actions = POLICY_ACTIONS.copy()
    policy_actions[2] = policy_actions[1]  # the policy repeats its action at step 2
    departure, late, zeroed = rehearsal.compare_steps(
        _commands(list(policy_actions + 1e-6), held=[0, 0, 1, 0, 0]), policy_actions, TOLERANCE)
    # Step 2 held the command of step 1: late, but the same action, so the states stay equal.
    assert departure is None and (late, zeroed) == (1, 0)
