"""Deployment rehearsal: the exported policy drives the realtime sim, scored against in-process.

    python -m fpmd_ros.rehearsal [policy:=runs/fpmd/policy.onnx] [episodes:=3] [name:=value ...]
    ./fpmd deploy [name:=value ...]                      # the same command
    python -m fpmd_ros.rehearsal --show-args             # the arguments and their defaults

1. Starts the ``deploy`` graph with ``sim:=true`` (:func:`fpmd_ros.graph.deploy_graph`, run by the
   project runner :class:`fpmd_ros.runner.Runner`, exactly as ``python -m fpmd_ros.runner deploy``
   would): the ``policy_controller`` lifecycle node, configured and activated, and a realtime
   ``mujoco_sim`` of the policy's task, talking over Fast DDS.
2. Waits until the controller is active and receiving observations (its ``/diagnostics``), then
   pauses the sim (``~/set_pause``), resets it (``~/reset``), lets the controller answer the new
   episode's first observation for ``SETTLE_S`` and resumes the sim: every scored episode is
   driven by the policy from its first step, as in-process (the sim's episode 0 started before
   the controller was active, and a reset between two sim steps could otherwise meet the
   command computed for the previous episode's last state). The reply names the first scored
   episode k and its seed (the sim's rule: episode k is reset with ``seed + k``).
3. Collects the sim's ``episode`` summaries (return, length, seed) of ``episodes`` episodes,
   the sim's ``~/applied_command`` of each of their steps (the action the physics got, and
   whether the sim held an older command or zeroed the controls) and the controller's achieved
   control rate from ``/diagnostics``, then stops the graph (the controller first: it publishes
   its safe action; then the sim).
4. Evaluates the same policy in-process, in deploy mode: :func:`fpmd_core.runtime.load_policy`
   stepping ``make_env(task, max_episode_steps, normalized_actions=False)``, reset with the same
   seeds as the scored sim episodes, the action clipped to the bounds as the controller does.
5. Replays each closed-loop episode in-process from its seed with the actions the sim applied
   (:func:`analyse_closed_loop`): in every state the sim went through it compares the applied
   action with the policy's own. The first step where they differ is where the closed loop
   departed from the in-process loop; the reason is named: the command computed for an earlier
   step (late by k control periods: it reached the sim after its next step), no command within
   the sim's ``command_timeout_s`` (zero controls), the controller's zero safe action, or a
   different input (the controller saw another observation or frame stack, or rate-limited).
6. Prints the achieved control rate against its target, the closed-loop and in-process returns
   (mean ± std and per episode) and their ratio; for each episode whose return differs, its
   first difference, e.g. ``episode 2 (seed 2): first difference at step 137: the sim applied
   the command computed for step 136 (late by one control period); 3 late commands in this
   episode``; and how many steps applied a late command overall.

Exit codes: 0 the closed-loop mean return is at least ``min_ratio`` (0.9) of the in-process one
(for a non-positive in-process return: at most ``1 - min_ratio`` of its magnitude below it);
1 it is not (the reason is printed); 2 invalid arguments; 3 the rehearsal could not run (a node
failed, or no episodes within ``timeout_s``); 130 interrupted.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpmd_ros import interface
from fpmd_ros.graph import (
    DEPLOY_ARGUMENTS,
    MAX_SEED,
    GraphArgumentError,
    LaunchArgument,
    SimEpisodes,
    _float,
    _int,
    _text,
    _with_defaults,
    check_policy_file,
    deploy_graph,
    policy_metadata,
)
from fpmd_ros.interface import (
    CONTROLLER_NODE_NAME,
    EXIT_INTERRUPTED,
    EXIT_INVALID_PARAMETERS,
    SIM_NODE_NAME,
)
from fpmd_ros.participant import PrivateParticipant

PROGRAM = 'fpmd rehearsal'
START_TIMEOUT_S = 180.0  # process start-up, imports, policy loading and activation (loaded host)
EXIT_BELOW, EXIT_FAILED = 1, 3
POLL_S = 0.05
# How long the paused sim waits after the reset for the controller's first command. Shorter than
# the controller's default state_timeout_s (0.2 s), so its watchdog does not take the pause for
# stale input; longer than two periods of a timer-triggered controller at the tasks' rates.
SETTLE_S = 0.1
# How long the rehearsal waits, after the last episode summary, for the sim's applied commands
# still in flight on their own topic.
APPLIED_GRACE_S = 2.0
_RESET_REPLY = re.compile(r'episode (\d+) seed (\d+)')

REHEARSAL_ARGUMENTS = (
    *(row for row in DEPLOY_ARGUMENTS if row.name != 'sim'),
    LaunchArgument('episodes', '3', (
        'Closed-loop episodes to score (each also evaluated in-process with the same seed).')),
    LaunchArgument('realtime_factor', '1.0', (
        'Sim seconds per wall-clock second of the realtime sim (1: real time).')),
    LaunchArgument('seed', '0', (
        'The sim\'s seed: its episode k is reset with seed + k (the in-process evaluation uses '
        'the seeds of the scored episodes).')),
    LaunchArgument('max_episode_steps', '0', (
        'Episode length limit in env steps, in the sim and in-process; 0: the task\'s own.')),
    LaunchArgument('min_ratio', '0.9', (
        'Pass if the closed-loop mean return is at least this fraction of the in-process one.')),
    LaunchArgument('timeout_s', '0', (
        'Wall-clock limit for the scored episodes; 0: twice their longest possible duration '
        '(episodes x max_episode_steps x control period / realtime_factor) plus 60 s.')),
)
_REHEARSAL_ONLY = ('episodes', 'realtime_factor', 'seed', 'max_episode_steps', 'min_ratio',
                   'timeout_s')


class RehearsalError(RuntimeError):
    """The rehearsal could not run to the end; the message says why."""


@dataclass(frozen=True)
class Plan:
    """A validated rehearsal: the deploy graph's nodes and what to score."""

    specs: list
    policy: str
    task: str
    episodes: int
    realtime_factor: float
    seed: int
    max_episode_steps: int
    min_ratio: float
    timeout_s: float
    model_rate_hz: float
    trigger: str
    measured_observation: bool = False
    """The controller builds a robot policy's observation from topics (joint_states mode):
    without the task file's training noise, so the in-process loop leaves it out too."""
    task_file: str = ''
    """A robot policy's task file, where given (``task_file``)."""

    @property
    def sim(self):
        return next(s for s in self.specs if s.name == SIM_NODE_NAME)

    @property
    def controller(self):
        return next(s for s in self.specs if s.name == CONTROLLER_NODE_NAME)


@dataclass(frozen=True)
class Episode:
    seed: int
    episode_return: float
    length: int
    terminated: bool


def make_plan(args: dict[str, Any]) -> Plan:
    """The deploy graph (sim:=true) for ``args`` with the rehearsal's sim settings, or
    GraphArgumentError naming the argument."""
    from fpmd_core.tasks import env_from_metadata, task_spec

    values = _with_defaults(args, REHEARSAL_ARGUMENTS)
    # Read once, here; deploy_graph is given it.
    meta = policy_metadata(check_policy_file(_text(values, 'policy')))
    if 'observation_mode' not in args:
        # A policy trained from pixels watches the sim's camera; a robot policy builds its
        # observation from the topics a robot has (joint_states, imu, goal / cmd_vel).
        values['observation_mode'] = ('image' if meta.get('frame_stack') else
                                      'joint_states' if meta.get('robot') else 'observation')

    episodes = _int(values, 'episodes', 1, 10_000)
    realtime_factor = _float(values, 'realtime_factor', 0.0, inclusive=False)
    if not 0.01 <= realtime_factor <= 100.0:
        raise GraphArgumentError('realtime_factor', f'{realtime_factor:g}; expected a number '
                                 'from 0.01 to 100')
    seed = _int(values, 'seed', 0, MAX_SEED)
    max_episode_steps = _int(values, 'max_episode_steps', 0, 10**9)
    min_ratio = _float(values, 'min_ratio', 0.0, inclusive=True)
    timeout_s = _float(values, 'timeout_s', 0.0, inclusive=True)
    deploy_args = {k: v for k, v in values.items() if k not in _REHEARSAL_ONLY}
    specs = deploy_graph({**deploy_args, 'sim': 'true'}, meta=meta,
                         sim_episodes=SimEpisodes(realtime_factor, seed, max_episode_steps))
    controller = next(s for s in specs if s.name == CONTROLLER_NODE_NAME)
    task = str(meta['task'])
    model_rate_hz = interface.model_rate_hz(meta)
    env = env_from_metadata(meta, max_episode_steps,
                            task_file=controller.parameters.get('task_file'))
    limit = task_spec(env, task).max_episode_steps
    env.close()
    if not timeout_s:
        timeout_s = 2.0 * episodes * limit / model_rate_hz / realtime_factor + 60.0
    return Plan(specs, controller.parameters['policy'], task, episodes, realtime_factor, seed,
                max_episode_steps, min_ratio, timeout_s, model_rate_hz,
                controller.parameters['trigger'],
                interface.builds_robot_observation(values['observation_mode'], meta),
                str(controller.parameters.get('task_file', '')))


# --- in-process deploy-mode evaluation -----------------------------------------------------------

def in_process_env(meta: dict, max_episode_steps: int, measured_observation: bool,
                   task_file: str = ''):
    """The policy's env for the in-process loop; ``measured_observation``: a robot policy's
    observation without training noise, as its controller computes it from topics."""
    from fpmd_core.tasks import env_from_metadata

    env = env_from_metadata(meta, max_episode_steps, task_file=task_file or None)
    if measured_observation:
        env.unwrapped.observation_noise = False
    return env


def evaluate_in_process(policy, task: str, seeds, max_episode_steps: int = 0,
                        measured_observation: bool = False, task_file: str = ''
                        ) -> list[Episode]:
    """``policy`` (env units) stepping the task in-process, one episode per seed, the action
    clipped to the bounds as ``policy_controller`` does; a pixel policy sees the frames of the
    camera it was trained with (``measured_observation``: see :func:`in_process_env`)."""
    low = np.asarray(policy.metadata['action_low'], dtype=np.float64)
    high = np.asarray(policy.metadata['action_high'], dtype=np.float64)
    if policy.metadata['task'] != task:
        raise ValueError(f'policy task {policy.metadata["task"]!r}, expected {task!r}')
    env = in_process_env(policy.metadata, max_episode_steps, measured_observation, task_file)
    results = []
    try:
        for seed in seeds:
            observation, _ = env.reset(seed=int(seed))
            total, length, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                action = np.clip(np.asarray(policy(observation), dtype=np.float64), low, high)
                observation, reward, terminated, truncated, _ = env.step(action)
                total, length = total + float(reward), length + 1
            results.append(Episode(int(seed), total, length, bool(terminated)))
    finally:
        env.close()
    return results


# --- where a closed loop departed from the in-process loop ---------------------------------------

# Two actions closer than this fraction of the action range, per component, are the same action.
# The controller and the in-process policy run the same ONNX model with one thread on the same
# float32 input, so they agree to the bit; a command one control period late differs by far more
# unless the policy barely changed its action (and then being late changed nothing either).
ACTION_TOLERANCE = 1e-6
# How many control periods back a late command is looked for.
MAX_LATENESS = 5


@dataclass(frozen=True)
class Departure:
    """The first step whose applied action differs from the policy's action in that state."""

    step: int
    reason: str


@dataclass(frozen=True)
class EpisodeAnalysis:
    """One closed-loop episode: what the sim applied, compared step by step with what the policy
    takes in the states the sim went through."""

    length: int  # env steps (the sim's summary)
    recorded_steps: int  # applied commands received, steps 0.. without a gap
    late_steps: int  # the sim applied a command computed for an earlier state (or held one)
    zeroed_steps: int  # no command within command_timeout_s: zero controls
    departure: Departure | None  # None: every recorded step got the policy's own action
    replay_return: float  # the recorded actions replayed in-process from the episode's seed


def policy_actions_along(policy, env, seed: int, actions) -> tuple[np.ndarray, float]:
    """Replays ``actions`` (env units, as the sim applied them) in ``env`` reset with ``seed``:
    the clipped policy action in each state the replay reaches (MuJoCo is deterministic, so
    these are the sim's states, pixels included), and the replay's return. The replay stops
    where its episode ends, so it may return fewer actions than it was given."""
    low = np.asarray(policy.metadata['action_low'], dtype=np.float64)
    high = np.asarray(policy.metadata['action_high'], dtype=np.float64)
    observation, _ = env.reset(seed=int(seed))
    taken, total = [], 0.0
    for action in actions:
        taken.append(np.clip(np.asarray(policy(observation), dtype=np.float64), low, high))
        observation, reward, terminated, truncated, _ = env.step(np.asarray(action))
        total += float(reward)
        if terminated or truncated:
            break
    return np.asarray(taken, dtype=np.float64).reshape(len(taken), low.size), total


def _periods(k: int) -> str:
    return 'one control period' if k == 1 else f'{k} control periods'


def compare_steps(applied, policy_actions: np.ndarray, tolerance: np.ndarray
                  ) -> tuple[Departure | None, int, int]:
    """The first step where the sim's applied action (``applied``: messages.AppliedCommand of
    steps 0, 1, ...) differs from the policy's action in the same state (``policy_actions``,
    from :func:`policy_actions_along`), with the reason; and the counts of late and of zeroed
    steps. Plain arrays in, so it is tested without DDS."""
    def same(a, b) -> bool:
        return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= tolerance))

    departure, late, zeroed = None, 0, 0
    for step, (command, policy_action) in enumerate(zip(applied, policy_actions, strict=False)):
        action = np.asarray(command.action, dtype=np.float64)
        lateness = 0
        if not same(action, policy_action):
            lateness = next((k for k in range(1, min(step, MAX_LATENESS) + 1)
                             if same(action, policy_actions[step - k])), 0)
        if command.timed_out:
            zeroed += 1
        elif command.held or lateness:
            late += 1
        if departure is not None or same(action, policy_action):
            continue
        if command.timed_out:
            reason = ('no command within command_timeout_s: the sim zeroed the controls')
        elif lateness:
            reason = (f'the sim applied the command computed for step {step - lateness} (late by '
                      f'{_periods(lateness)})')
        elif not np.any(action):
            reason = ("the sim applied a zero action: the controller's safe action (its input "
                      'was stale or malformed; see its log)')
        else:
            reason = (f'the sim applied an action the policy takes in none of this and the '
                      f'{min(step, MAX_LATENESS)} states before: the controller acted on a '
                      'different input (the observation, or a pixel policy\'s frame stack) or '
                      'limited the action (max_action_delta)')
        departure = Departure(step, reason)
    return departure, late, zeroed


def analyse_closed_loop(policy, episodes: list[Episode], applied, max_episode_steps: int = 0,
                        measured_observation: bool = False, task_file: str = ''
                        ) -> list[EpisodeAnalysis]:
    """For each closed-loop episode (``episodes``, with ``applied``: the sim's applied commands
    of its steps 0.. as recorded), replays the applied actions in-process and compares them step
    by step with the policy's (:func:`compare_steps`). Until the first difference the closed
    loop and the in-process loop went through the same states, so that step is where the closed
    loop departed from in-process; after it the comparison follows the sim's own states, so the
    late-command counts cover the whole episode."""
    low = np.asarray(policy.metadata['action_low'], dtype=np.float64)
    high = np.asarray(policy.metadata['action_high'], dtype=np.float64)
    tolerance = ACTION_TOLERANCE * np.maximum(high - low, 1.0)
    env = in_process_env(policy.metadata, max_episode_steps, measured_observation, task_file)
    results = []
    try:
        for episode, commands in zip(episodes, applied, strict=True):
            commands = list(commands)
            policy_actions, replay_return = policy_actions_along(
                policy, env, episode.seed, [c.action for c in commands])
            departure, late, zeroed = compare_steps(commands, policy_actions, tolerance)
            results.append(EpisodeAnalysis(episode.length, len(commands), late, zeroed,
                                           departure, replay_return))
    finally:
        env.close()
    return results


def departure_line(index: int, seed: int, analysis: EpisodeAnalysis, sim_return: float) -> str:
    """The report's line for a closed-loop episode whose return differs from in-process."""
    late = f'{analysis.late_steps} late command{"s" if analysis.late_steps != 1 else ""}'
    if analysis.zeroed_steps:
        late += f', {analysis.zeroed_steps} zeroed after command_timeout_s'
    head = f'  episode {index} (seed {seed}): '
    if analysis.departure is not None:
        return (f'{head}first difference at step {analysis.departure.step}: '
                f'{analysis.departure.reason}; {late} in this episode')
    if analysis.recorded_steps < analysis.length:
        return (f'{head}no difference in the {analysis.recorded_steps} of {analysis.length} '
                'steps whose applied commands the rehearsal received (the first difference '
                f'is at step {analysis.recorded_steps} or later); {late} in them')
    return (f'{head}every step got the policy\'s action for its state, yet the return differs: '
            f'replaying the applied commands in-process returns {analysis.replay_return:.2f}, '
            f'the sim reported {sim_return:.2f} (the sim\'s physics differed from in-process)')


# --- watching the graph over ROS -----------------------------------------------------------------

class _Watcher(PrivateParticipant):
    """The rehearsal's own DDS participant: episode summaries, controller diagnostics, the
    sim's reset service."""

    def __init__(self, plan: Plan):
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool, Trigger

        from fpmd_ros.qos import APPLIED_COMMAND_QOS, DIAGNOSTICS_QOS, EPISODE_QOS

        super().__init__(f'fpmd_rehearsal_{os.getpid()}')
        self.status_name = f'{plan.controller.fully_qualified_name}: control loop'
        self.summaries: list = []
        self.diagnostics: list[tuple[float, dict[str, str]]] = []  # (monotonic, values)
        self.rejected: list[str] = []
        # episode -> step -> what the sim applied there, from episode record_from on (set once
        # the scored episodes are known: the steps before are not kept)
        self.applied: dict[int, dict[int, Any]] = {}
        self.record_from: int | None = None
        self.node.create_subscription(Float64MultiArray,
                                      f'{plan.sim.fully_qualified_name}/applied_command',
                                      self._on_applied_command, APPLIED_COMMAND_QOS)
        self.node.create_subscription(Float64MultiArray,
                                      f'{plan.sim.fully_qualified_name.rsplit("/", 1)[0]}/episode',
                                      self._on_episode, EPISODE_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      DIAGNOSTICS_QOS)
        self.reset_client = self.node.create_client(
            Trigger, f'{plan.sim.fully_qualified_name}/reset')
        self.pause_client = self.node.create_client(
            SetBool, f'{plan.sim.fully_qualified_name}/set_pause')
        self._trigger, self._set_bool = Trigger, SetBool

    def _on_episode(self, msg) -> None:
        from fpmd_ros import messages

        try:
            self.summaries.append((time.monotonic(), messages.decode_episode_summary(msg)))
        except ValueError as error:
            self.rejected.append(str(error))

    def _on_applied_command(self, msg) -> None:
        from fpmd_ros import messages

        try:
            applied = messages.decode_applied_command(msg)
        except ValueError as error:
            self.rejected.append(str(error))
            return
        if self.record_from is None or applied.episode < self.record_from:
            return
        self.applied.setdefault(applied.episode, {})[applied.step] = applied

    def recorded(self, episode: int, length: int) -> list:
        """The applied commands of ``episode``'s steps 0..length-1, up to the first missing one."""
        steps = self.applied.get(episode, {})
        commands = []
        for step in range(length):
            if step not in steps:
                break
            commands.append(steps[step])
        return commands

    def _on_diagnostics(self, msg) -> None:
        from fpmd_ros import messages

        for status in msg.status:
            if status.name == self.status_name:
                self.diagnostics.append((time.monotonic(), messages.diagnostic_values(status)))

    def spin(self, seconds: float = POLL_S) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def latest_status(self) -> dict[str, str] | None:
        return self.diagnostics[-1][1] if self.diagnostics else None

    def _call(self, client, request, deadline: float, keep_going):
        while not client.service_is_ready():
            keep_going()
            if time.monotonic() > deadline:
                raise RehearsalError(f'service {client.service_name} did not appear')
            self.spin()
        future = client.call_async(request)
        while not future.done():
            keep_going()
            if time.monotonic() > deadline:
                future.cancel()
                raise RehearsalError(f'{client.service_name} did not answer')
            self.spin()
        reply = future.result()
        if not reply.success:
            raise RehearsalError(f'{client.service_name} failed: {reply.message!r}')
        return reply

    def restart_episode(self, deadline: float, keep_going) -> tuple[int, int]:
        """Pause, reset, let the controller answer the first observation, resume: (episode
        index, seed) of the episode the sim started."""
        self._call(self.pause_client, self._set_bool.Request(data=True), deadline, keep_going)
        reply = self._call(self.reset_client, self._trigger.Request(), deadline, keep_going)
        match = _RESET_REPLY.search(reply.message or '')
        if not match:
            raise RehearsalError(f'{self.reset_client.service_name} answered {reply.message!r}; '
                                 "expected 'episode <k> seed <s>'")
        # Paused: no step of the new episode has been applied yet; keep all of them.
        self.record_from = int(match.group(1))
        settle = time.monotonic() + SETTLE_S
        while time.monotonic() < settle:
            self.spin(max(0.0, min(POLL_S, settle - time.monotonic())))
        self._call(self.pause_client, self._set_bool.Request(data=False), deadline, keep_going)
        return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class ClosedLoop:
    episodes: list[Episode]
    first_episode: int
    wall_s: float
    achieved_rate_hz: float  # mean over the controller's diagnostics windows while scoring
    min_rate_hz: float
    target_rate_hz: float  # the controller's control_rate_hz (the watchdog's, for observation)
    rate_windows: int
    trouble_episodes: int  # times the controller fell back to its safe action while scoring
    # per scored episode, the sim's applied commands of its steps 0.. (up to the first one the
    # rehearsal did not receive)
    applied: tuple = ()
    sim_indices: tuple = ()  # the sim's index k of each scored episode


def _float_value(values: dict[str, str], key: str) -> float:
    try:
        return float(values.get(key, 'nan'))
    except ValueError:
        return math.nan


def run_closed_loop(plan: Plan, log=print) -> ClosedLoop:
    """Runs the deploy graph until ``plan.episodes`` episodes are scored; always stops it."""
    from fpmd_ros.controller.node import DIAGNOSTICS_PERIOD_S
    from fpmd_ros.runner import Runner

    runner = Runner(plan.specs)
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(runner.run()),
                              name='deploy graph', daemon=True)
    watcher = _Watcher(plan)
    thread.start()

    def keep_going() -> None:
        if not thread.is_alive():
            code = exit_codes[0] if exit_codes else '?'
            raise RehearsalError(f'the deploy graph stopped (exit code {code}); see the node '
                                 'log above')

    try:
        # 1. The controller is active and controls on the sim's observations.
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            keep_going()
            status = watcher.latest_status()
            if status and status.get('lifecycle_state') == 'active' and \
                    status.get('safety_state') == 'ok':
                break
            if time.monotonic() > deadline:
                state = ('no diagnostics from the controller' if status is None else
                         f"controller {status.get('lifecycle_state')}, safety "
                         f"{status.get('safety_state')}: {status.get('safety_reason')}")
                raise RehearsalError(f'the controller was not controlling the sim after '
                                     f'{START_TIMEOUT_S:g} s ({state})')
            watcher.spin()
        # 2. A fresh episode, driven by the policy from its first step.
        first, first_seed = watcher.restart_episode(time.monotonic() + 30.0, keep_going)
        started = time.monotonic()
        trouble_before = int(_float_value(watcher.latest_status(), 'trouble_episodes'))
        log(f'{PROGRAM}: controller active; scoring sim episodes {first}..'
            f'{first + plan.episodes - 1} (seeds {first_seed}..{first_seed + plan.episodes - 1})'
            f', at most {plan.timeout_s:.0f} s')
        # 3. The scored episodes.
        deadline = started + plan.timeout_s

        def scored():
            return [s for _, s in watcher.summaries if s.episode >= first]

        while len(scored()) < plan.episodes:
            keep_going()
            if time.monotonic() > deadline:
                raise RehearsalError(f'{len(scored())} of {plan.episodes} episodes ended within '
                                     f'timeout_s = {plan.timeout_s:g} s')
            watcher.spin()
        finished = max(t for t, s in watcher.summaries if s.episode >= first)
        summaries = sorted(scored(), key=lambda s: s.episode)[:plan.episodes]
        # The applied commands travel on a topic of their own: let the last ones arrive.
        grace = time.monotonic() + APPLIED_GRACE_S
        while time.monotonic() < grace and any(
                len(watcher.recorded(s.episode, s.length)) < s.length for s in summaries):
            watcher.spin()
        # The controller's ~1 s windows that began after the sim resumed (an earlier one counts
        # the pause); for a run shorter than that, whatever overlaps it, or the nearest one.
        windows = ([v for t, v in watcher.diagnostics
                    if started + DIAGNOSTICS_PERIOD_S < t <= finished + 0.5]
                   or [v for t, v in watcher.diagnostics if started < t <= finished + 0.5]
                   or [min(watcher.diagnostics, key=lambda d: abs(d[0] - finished))[1]])
        rates = [_float_value(v, 'achieved_rate_hz') for v in windows]
        trouble = int(_float_value(windows[-1], 'trouble_episodes')) - trouble_before
        return ClosedLoop(
            episodes=[Episode(s.seed, s.episode_return, s.length, s.terminated)
                      for s in summaries],
            first_episode=first, wall_s=finished - started,
            achieved_rate_hz=float(np.mean(rates)), min_rate_hz=float(np.min(rates)),
            target_rate_hz=_float_value(windows[-1], 'target_rate_hz'),
            rate_windows=len(rates), trouble_episodes=max(trouble, 0),
            applied=tuple(watcher.recorded(s.episode, s.length) for s in summaries),
            sim_indices=tuple(s.episode for s in summaries))
    finally:
        runner.request_stop()
        thread.join(timeout=2 * (runner.stop_timeout_s + runner.kill_timeout_s) + 10.0)
        watcher.close()


# --- the report --------------------------------------------------------------------------------

def _mean_std(episodes: list[Episode]) -> tuple[float, float]:
    returns = np.array([e.episode_return for e in episodes], dtype=np.float64)
    return float(returns.mean()), float(returns.std())


def passes(closed_loop: float, in_process: float, min_ratio: float) -> bool:
    """closed_loop >= min_ratio x in_process, generalised to non-positive returns: at most
    (1 - min_ratio) x |in_process| below it."""
    return closed_loop >= in_process - (1.0 - min_ratio) * abs(in_process)


def report(plan: Plan, loop: ClosedLoop, reference: list[Episode], model_hash: str,
           algorithm: str, analyses: list[EpisodeAnalysis] | None = None) -> tuple[str, bool]:
    """The printed report and whether the closed loop passes; ``analyses``
    (:func:`analyse_closed_loop` of ``loop``) add, for each episode whose return differs, where
    it departed from in-process and why, and the count of late commands."""
    closed_mean, closed_std = _mean_std(loop.episodes)
    ref_mean, ref_std = _mean_std(reference)
    ok = passes(closed_mean, ref_mean, plan.min_ratio)
    steps = sum(e.length for e in loop.episodes)
    sim_rate = plan.model_rate_hz * plan.realtime_factor
    if plan.trigger == 'observation':
        target = (f'target {sim_rate:g} Hz: trigger observation, one command per sim step; '
                  f'watchdog at {loop.target_rate_hz:g} Hz')
        target_hz = sim_rate
    else:
        target = f'target {loop.target_rate_hz:g} Hz: trigger timer'
        target_hz = loop.target_rate_hz

    differences = [abs(a.episode_return - b.episode_return)
                   for a, b in zip(loop.episodes, reference, strict=True)]
    same_return = [d <= 1e-9 * max(1.0, abs(b.episode_return))
                   for d, b in zip(differences, reference, strict=True)]
    equal = sum(same_return)
    largest = max(differences)

    def returns(episodes):
        return ', '.join(f'{e.episode_return:.1f}' for e in episodes)

    lines = [
        f'deploy rehearsal: {plan.task}, policy {plan.policy} ({algorithm}, sha256 '
        f'{model_hash[:12]})',
        f'  realtime sim: realtime_factor {plan.realtime_factor:g}, {len(loop.episodes)} '
        f'episodes ({steps} steps in {loop.wall_s:.1f} s wall: {steps / max(loop.wall_s, 1e-9):.1f}'
        f' steps/s), seeds {", ".join(str(e.seed) for e in loop.episodes)}',
        f'  control rate: achieved {loop.achieved_rate_hz:.1f} Hz ({target}); lowest of '
        f'{loop.rate_windows} diagnostics windows {loop.min_rate_hz:.1f} Hz',
        f'  closed-loop return (realtime sim over ROS 2): {closed_mean:9.2f} ± {closed_std:.2f}  '
        f'[{returns(loop.episodes)}]',
        f'  in-process return (deploy mode, same seeds):  {ref_mean:9.2f} ± {ref_std:.2f}  '
        f'[{returns(reference)}]',
        f'  per episode: {equal} of {len(reference)} returns equal, largest difference '
        f'{largest:.2f}',
    ]
    late = 0
    if analyses is not None:
        indices = loop.sim_indices or tuple(range(loop.first_episode,
                                                  loop.first_episode + len(loop.episodes)))
        for index, episode, analysis, equal_return in zip(indices, loop.episodes, analyses,
                                                          same_return, strict=True):
            if not equal_return:
                lines.append(departure_line(index, episode.seed, analysis,
                                            episode.episode_return))
        late = sum(a.late_steps for a in analyses)
        recorded = sum(a.recorded_steps for a in analyses)
        received = (f' (the rehearsal received the applied commands of {recorded} of {steps} '
                    'steps)' if recorded < steps else '')
        lines.append(f'  commands: {late} of {recorded} steps applied a late command (one '
                     'computed for an earlier state: it reached the sim after its next step), '
                     f'{sum(a.zeroed_steps for a in analyses)} zeroed after command_timeout_s'
                     f'{received}')
    if ref_mean > 0:
        lines.append(f'  ratio closed loop / in-process: {closed_mean / ref_mean:.3f} (required '
                     f'>= {plan.min_ratio:g}): {"OK" if ok else "FAIL"}')
    else:
        lines.append(f'  in-process return <= 0, so no ratio; required closed loop >= '
                     f'{ref_mean - (1.0 - plan.min_ratio) * abs(ref_mean):.2f}: '
                     f'{"OK" if ok else "FAIL"}')
    if not ok:
        why = [f'FAIL: the closed-loop return {closed_mean:.2f} is below {plan.min_ratio:g} of '
               f'the in-process return {ref_mean:.2f} with the same policy and seeds']
        if loop.trouble_episodes:
            why.append(f'the controller published its safe action in {loop.trouble_episodes} '
                       'episode(s) of stale or malformed input (see its log)')
        if loop.achieved_rate_hz < 0.9 * target_hz:
            why.append(f'the control rate {loop.achieved_rate_hz:.1f} Hz fell short of '
                       f'{target_hz:g} Hz (an overloaded host? try realtime_factor:=0.5)')
        if steps / max(loop.wall_s, 1e-9) < 0.9 * sim_rate:
            why.append('the sim did not keep real time (an overloaded host?)')
        if late:
            why.append(f'{late} command(s) reached the sim late (the lines above name where '
                       'each differing episode departed)')
        if plan.trigger == 'timer':
            why.append('trigger timer: commands can be a control period late (try '
                       'trigger:=observation)')
        lines.append('; '.join(why))
    elif loop.trouble_episodes:
        lines.append(f'  note: the controller fell back to its safe action '
                     f'{loop.trouble_episodes} time(s)')
    return '\n'.join(lines), ok


# --- command line ------------------------------------------------------------------------------

def usage() -> str:
    return ('usage: python -m fpmd_ros.rehearsal [name:=value ...]   (./fpmd deploy [name:=value '
            '...])\n       python -m fpmd_ros.rehearsal --show-args')


def _describe() -> str:
    lines = ['arguments of the deploy rehearsal (name:=value):']
    for row in REHEARSAL_ARGUMENTS:
        lines.append(f"  {row.name} (default: '{row.default}')\n      {row.description}")
    return '\n'.join(lines)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ('-h', '--help') for a in argv):
        print(f'{usage()}\n\n{__doc__}')
        return 0
    if any(a in ('--show-args', '-s') for a in argv):
        print(_describe())
        return 0
    args = {}
    for item in argv:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            print(f'{PROGRAM}: {item!r}: expected name:=value (--show-args lists the arguments)',
                  file=sys.stderr)
            return EXIT_INVALID_PARAMETERS
        args[name] = value
    try:
        plan = make_plan(args)
    except GraphArgumentError as error:
        print(f'{PROGRAM}: {error}', file=sys.stderr)
        return EXIT_INVALID_PARAMETERS
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        loop = run_closed_loop(plan, log=lambda text: print(text, file=sys.stderr, flush=True))
    except RehearsalError as error:
        print(f'{PROGRAM}: FAILED: {error}', file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f'{PROGRAM}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)

    from fpmd_core.runtime import load_policy

    policy = load_policy(plan.policy)
    reference = evaluate_in_process(policy, plan.task, [e.seed for e in loop.episodes],
                                    plan.max_episode_steps, plan.measured_observation,
                                    plan.task_file)
    analyses = analyse_closed_loop(policy, loop.episodes, loop.applied, plan.max_episode_steps,
                                   plan.measured_observation, plan.task_file)
    text, ok = report(plan, loop, reference, policy.model_hash,
                      str(policy.metadata.get('algorithm', '')), analyses)
    print(text, flush=True)
    return 0 if ok else EXIT_BELOW


if __name__ == '__main__':
    sys.exit(main())
