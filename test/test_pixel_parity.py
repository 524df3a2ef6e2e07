"""Pixel deploy parity: what a pixel policy sees through the realtime mujoco_sim and the
policy_controller equals what it sees in-process, frame for frame, across episode boundaries.

Real parts: a realtime mujoco_sim rendering offscreen (MUJOCO_GL egl/osmesa, as the camera
tests), the policy_controller (image mode, trigger observation, as ``deploy`` runs it) with a
real ONNX export, Fast DDS between them. The sim's episodes are short (6 env steps), so the
rollout crosses several automatic resets. Both nodes are instrumented, never replaced: the
controller's policy is wrapped to record every uint8 stack it is given (keyed by the stamp of
the newest frame), the sim's episode logic to record each episode's seed and the actions it
applied and the stamp of every state. The same policy metadata then builds the in-process env
(fpmd_core.tasks.env_from_metadata: the rehearsal's reference), which replays those seeds and
actions; its observations must equal the controller's stacks for the same states.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_helpers import spin_until
from sim_helpers import RunningSim

from fpmd_ros import messages
from fpmd_ros.graph import rehearsal_sim_parameters

PID = os.getpid()
SIZE = 32
FRAME_STACK = 3
EPISODE_CONTROL_STEPS = 12  # max_episode_steps (before action_repeat 2): 6 env steps
EPISODES_COMPARED = 4  # whole episodes whose first frame the controller saw: 3 boundaries


@pytest.fixture(scope='module')
def pixel_policy(tmp_path_factory):
    """An untrained cartpole-swingup pixel policy (32x32, 3 frames, action repeat 2)."""
    from runner_helpers import export_untrained_policy

    from fpmd_core.runtime import OnnxPolicy

    path = export_untrained_policy(tmp_path_factory.mktemp('parity') / 'pix.onnx',
                                   'cartpole-swingup', pixels=True, image_size=SIZE, hidden=32,
                                   seed=0)
    meta = OnnxPolicy(str(path)).metadata
    assert meta['frame_stack'] == FRAME_STACK
    return str(path), meta


class SimRecorder:
    """Records, from the sim's own thread, what its episode logic did."""

    def __init__(self, node):
        self.seeds: dict[int, int] = {}  # episode -> seed
        self.actions: dict[int, list[np.ndarray]] = {}  # episode -> applied actions
        self.states: dict[int, tuple[int, int]] = {}  # stamp -> (episode, step)
        episodes, node_stamp = node.episodes, node._new_state_stamp
        reset, step = episodes.reset, episodes.step

        def recorded_reset():
            seed = reset()
            self.seeds[episodes.episode_index] = seed
            self.actions[episodes.episode_index] = []
            return seed

        def recorded_step(action):
            self.actions.setdefault(episodes.episode_index, []).append(
                np.array(action, dtype=np.float64))
            return step(action)

        def recorded_stamp():
            stamp = node_stamp()
            self.states[stamp] = (episodes.episode_index, episodes.step_index)
            return stamp

        episodes.reset, episodes.step = recorded_reset, recorded_step
        node._new_state_stamp = recorded_stamp


class PolicyRecorder:
    """The controller's policy, recording each stack it is given by the newest frame's stamp
    (a later call for the same frame - a late episode start - replaces the earlier one)."""

    def __init__(self, policy, loop):
        self.policy, self.loop = policy, loop
        self.metadata, self.model_hash = policy.metadata, policy.model_hash
        self.stacks: dict[int, np.ndarray] = {}

    def __call__(self, observation):
        stamp = messages.stamp_to_ns(self.loop._latest_msg.header.stamp)
        self.stacks[stamp] = np.array(observation, copy=True)
        return self.policy(observation)


def replay_in_process(meta: dict, seed: int, actions: list[np.ndarray]) -> list[np.ndarray]:
    """The observations of one episode in the rehearsal's reference env: reset, then each
    action; the last one (terminal or truncated) is never acted on and is left out."""
    from fpmd_core.tasks import env_from_metadata

    env = env_from_metadata(meta, EPISODE_CONTROL_STEPS)
    try:
        observation, _ = env.reset(seed=seed)
        observations = [observation]
        for action in actions:
            observation, _, terminated, truncated, _ = env.step(action)
            observations.append(observation)
        assert terminated or truncated
        return observations[:-1]
    finally:
        env.close()


def test_the_controller_stacks_what_the_in_process_env_observes(pixel_policy, ros_context,
                                                                ros_executor):
    from fpmd_ros.controller.node import PolicyController

    path, meta = pixel_policy
    namespace = f'parity_p{PID}'
    sim = RunningSim(namespace, **rehearsal_sim_parameters(meta), mode='realtime', seed=5,
                     max_episode_steps=EPISODE_CONTROL_STEPS)
    controller = None
    try:
        recorder = SimRecorder(sim.node)
        controller = PolicyController(
            namespace=namespace, context=ros_context,
            cli_args=['--ros-args', '-r', 'image_raw:=camera/image_raw'],
            parameter_overrides=[Parameter(k, value=v) for k, v in {
                'policy': path, 'observation_mode': 'image', 'trigger': 'observation',
            }.items()])
        ros_executor.add_node(controller)
        assert controller.trigger_configure() == TransitionCallbackReturn.SUCCESS, (
            controller.failure_reason)
        policy = PolicyRecorder(controller.loop.policy, controller.loop)
        controller.loop.policy = policy
        assert controller.trigger_activate() == TransitionCallbackReturn.SUCCESS

        def first_frames_seen() -> list[int]:
            """Episodes whose initial state's stack the controller has recorded."""
            states = dict(recorder.states)
            return sorted(episode for stamp, (episode, step) in states.items()
                          if step == 0 and stamp in policy.stacks)

        assert spin_until(ros_executor, lambda: len(first_frames_seen()) > EPISODES_COMPARED,
                          120.0), (first_frames_seen(), len(policy.stacks))
    finally:
        if controller is not None:
            controller.destroy_node()
        sim.stop()

    compared = first_frames_seen()[:EPISODES_COMPARED]
    by_state = {state: stamp for stamp, state in recorder.states.items()}
    frames = 0
    for episode in compared:
        expected = replay_in_process(meta, recorder.seeds[episode], recorder.actions[episode])
        assert len(expected) == EPISODE_CONTROL_STEPS // 2
        for step, want in enumerate(expected):
            stamp = by_state[(episode, step)]
            if stamp not in policy.stacks:
                continue  # a frame the best-effort reader missed: no stack to compare
            got = policy.stacks[stamp]
            assert got.dtype == np.uint8 and got.shape == want.shape == (SIZE, SIZE,
                                                                          3 * FRAME_STACK)
            assert np.array_equal(got, want), (
                f'episode {episode} step {step}: the controller stacked other frames than the '
                f'in-process env ({int(np.sum(got != want))} bytes differ)')
            frames += 1
        # Every episode's first frame was compared (that is where the stacks used to differ).
        assert by_state[(episode, 0)] in policy.stacks
    assert frames >= EPISODES_COMPARED * 2
