"""mujoco_sim camera topics over real DDS: frames equal the in-process pixel env's, stamps pair
frames with transitions, nothing is rendered without a subscriber, bad camera settings refused.

The sim runs on its own context and executor thread (a separate DDS participant, with its own
OpenGL context in that thread); the test talks to it through its topics and services.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from ros_helpers import spin_until
from sensor_msgs.msg import CameraInfo, Image
from sim_helpers import RunningSim
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from fpmd_core.tasks import PixelOptions, make_env
from fpmd_ros import messages
from fpmd_ros.qos import CAMERA_REALTIME_QOS, LOCKSTEP_QOS
from fpmd_ros.sim.node import MujocoSimNode, SimParameterError

PID = os.getpid()  # in namespaces: another run sharing the DDS domain cannot interfere
TASK = 'cartpole-swingup'  # default camera 0 ('fixed', fovy 45); control period 0.01 s
SIZE = 32
REPEAT = 2
MAX_STEPS = 8  # control steps: 4 env steps per episode with action repeat 2
SEED = 5


class CameraClient:
    """Transitions, frames (by stamp) and camera_info of one sim, from the test's own node."""

    def __init__(self, context, executor, namespace: str, qos=LOCKSTEP_QOS, images: bool = True,
                 info: bool = False, lockstep: bool = True):
        self.executor = executor
        self.ns = f'/{namespace}'
        self.node = rclpy.create_node(f'camera_client_{namespace}', context=context)
        executor.add_node(self.node)
        self.transitions: list[messages.Transition] = []
        self.frames: dict[int, np.ndarray] = {}
        self.images: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.command_pub = self.node.create_publisher(Float64MultiArray, f'{self.ns}/commands',
                                                      LOCKSTEP_QOS)
        self.transition_sub = self.node.create_subscription(
            Float64MultiArray, f'{self.ns}/transition',
            lambda m: self.transitions.append(messages.decode_transition(m)), LOCKSTEP_QOS)
        if images:
            self.subscribe_images(qos)
        if info:
            self.node.create_subscription(CameraInfo, f'{self.ns}/camera/camera_info',
                                          self.infos.append, qos)
        self.reset_client = self.node.create_client(Trigger, f'{self.ns}/mujoco_sim/reset')
        # Our transition reader matched too (lockstep sims have one): a reset's transition
        # published before that is lost (VOLATILE), which a loaded machine showed once.
        assert spin_until(executor, lambda: (
            self.command_pub.get_subscription_count() > 0
            and (self.transition_sub.get_publisher_count() > 0 or not lockstep)
            and self.reset_client.service_is_ready()), 10.0), 'sim not found'

    def subscribe_images(self, qos) -> None:
        self.node.create_subscription(Image, f'{self.ns}/camera/image_raw', self._on_image, qos)

    def _on_image(self, msg: Image) -> None:
        self.images.append(msg)
        self.frames[messages.stamp_to_ns(msg.header.stamp)] = messages.decode_image(msg)

    def reset(self) -> messages.Transition:
        future = self.reset_client.call_async(Trigger.Request())
        assert spin_until(self.executor, future.done, 5.0), 'reset timeout'
        episode = int(future.result().message.split()[1])
        assert self.wait_for(episode, 0)
        return self.transitions[-1]

    def send(self, values) -> None:
        msg = Float64MultiArray()
        msg.data = [float(v) for v in values]
        self.command_pub.publish(msg)

    def wait_for(self, episode: int, step: int, timeout_s: float = 5.0) -> bool:
        return spin_until(self.executor, lambda: bool(self.transitions) and (
            self.transitions[-1].episode, self.transitions[-1].step) == (episode, step),
            timeout_s)

    def frame_of(self, transition: messages.Transition) -> np.ndarray:
        assert spin_until(self.executor, lambda: transition.stamp_ns in self.frames, 5.0), (
            f'no frame stamped {transition.stamp_ns} (episode {transition.episode} step '
            f'{transition.step})')
        return self.frames[transition.stamp_ns]


def _wait_matched(executor, sim: RunningSim) -> None:
    """Until the sim's image publisher has matched our reader (it renders only then)."""
    assert spin_until(executor, lambda: sim.node.image_subscription_count() > 0, 10.0)


@pytest.fixture
def camera_sim():
    sim = RunningSim(f'sim_camera_p{PID}', task=TASK, seed=SEED, max_episode_steps=MAX_STEPS,
                     action_repeat=REPEAT, camera_enabled=True, image_width=SIZE,
                     image_height=SIZE)
    yield sim
    sim.stop()


def test_lockstep_frames_equal_the_in_process_pixel_env(ros_context, ros_executor, camera_sim):
    client = CameraClient(ros_context, ros_executor, f'sim_camera_p{PID}')
    _wait_matched(ros_executor, camera_sim)
    first = client.reset()  # episode 1 (the node reset once at start)
    env = make_env(TASK, MAX_STEPS, normalized_actions=False, action_repeat=REPEAT,
                   pixels=PixelOptions(SIZE, SIZE, '', frame_stack=3))
    episode = first.episode
    pixels, _ = env.reset(seed=SEED + episode)
    np.testing.assert_array_equal(client.frame_of(first), pixels[..., -3:])

    rng = np.random.default_rng(0)
    compared, step, ends = [client.frame_of(first)], 0, 0
    while ends < 2:
        action = rng.uniform(-1.0, 1.0, size=1)
        client.send(action)
        pixels, _, terminated, truncated, _ = env.step(action)
        step += 1
        assert client.wait_for(episode, step), f'no transition ({episode}, {step})'
        got = client.frame_of(client.transitions[-1])
        np.testing.assert_array_equal(got, pixels[..., -3:],
                                      err_msg=f'frame of episode {episode} step {step}')
        compared.append(got)
        if terminated or truncated:
            ends, episode, step = ends + 1, episode + 1, 0
            assert client.wait_for(episode, 0)  # the autoreset's initial state
            pixels, _ = env.reset(seed=SEED + episode)
            got = client.frame_of(client.transitions[-1])
            np.testing.assert_array_equal(got, pixels[..., -3:],
                                          err_msg=f'initial frame of episode {episode}')
            compared.append(got)
    env.close()
    assert len(compared) == 2 + 2 * (MAX_STEPS // REPEAT) + 1
    assert len({frame.tobytes() for frame in compared}) > len(compared) // 2, 'frames constant'

    # Every state has a stamp of its own (also the terminal and the next initial state), one
    # control period (2 x 0.01 s) apart, and each is the header.stamp of that state's frame.
    stamps = [t.stamp_ns for t in client.transitions if t.episode >= first.episode]
    assert len(set(stamps)) == len(stamps), stamps
    assert set(np.diff(stamps)) == {20_000_000}, stamps
    assert set(stamps) <= set(client.frames)
    assert {m.header.frame_id for m in client.images} == {'fixed'}


def test_camera_info_describes_the_images(ros_context, ros_executor, camera_sim):
    client = CameraClient(ros_context, ros_executor, f'sim_camera_p{PID}', info=True)
    assert spin_until(ros_executor, lambda: camera_sim.node.count_subscribers(
        f'/sim_camera_p{PID}/camera/camera_info') > 0, 10.0)
    spin_until(ros_executor, lambda: False, 0.3)  # let the sim's writer match our reader
    first = client.reset()
    assert spin_until(ros_executor, lambda: any(
        messages.stamp_to_ns(i.header.stamp) == first.stamp_ns for i in client.infos), 5.0)
    info = client.infos[-1]
    assert (info.width, info.height) == (SIZE, SIZE)
    assert info.header.frame_id == 'fixed'
    fx, _, cx, _, fy, cy, _, _, one = info.k
    focal = 0.5 * SIZE / np.tan(np.radians(45.0) / 2)  # cartpole's camera 0 has fovy 45
    assert fx == pytest.approx(focal) and fy == pytest.approx(focal)
    assert (cx, cy, one) == ((SIZE - 1) / 2, (SIZE - 1) / 2, 1.0)
    assert info.k[1] == info.k[3] == info.k[6] == info.k[7] == 0.0


def test_no_frame_is_rendered_without_a_subscriber(ros_context, ros_executor, camera_sim):
    client = CameraClient(ros_context, ros_executor, f'sim_camera_p{PID}', images=False)
    first = client.reset()
    for step in range(1, 4):
        client.send([0.3])
        assert client.wait_for(first.episode, step)
    assert camera_sim.node.frames_rendered == 0

    client.subscribe_images(LOCKSTEP_QOS)
    _wait_matched(ros_executor, camera_sim)
    client.send([0.3])
    assert client.wait_for(first.episode, 4)
    assert client.frame_of(client.transitions[-1]).shape == (SIZE, SIZE, 3)
    assert camera_sim.node.frames_rendered >= 1


@pytest.mark.parametrize('publish_clock', [True, False])
def test_realtime_frames_follow_the_sims_clock(publish_clock, ros_context, ros_executor):
    """One clock per configuration: with /clock the frames carry sim time (whole control
    periods from 0); without, the node clock (here the wall clock, like the controller's)."""
    sim = RunningSim(f'sim_camera_rt_p{PID}', task=TASK, mode='realtime', camera_enabled=True,
                     image_width=48, image_height=SIZE, camera='lookatcart',
                     publish_clock=publish_clock)
    try:
        client = CameraClient(ros_context, ros_executor, f'sim_camera_rt_p{PID}',
                              qos=CAMERA_REALTIME_QOS, lockstep=False)
        assert spin_until(ros_executor, lambda: len(client.images) >= 5, 10.0)
        stamps = [messages.stamp_to_ns(m.header.stamp) for m in client.images]
        assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), stamps
        if publish_clock:
            assert all(s % 10_000_000 == 0 for s in stamps), stamps  # whole control periods
            assert stamps[-1] < 3600 * 10**9  # sim time starts at 0
        else:
            assert abs(stamps[-1] - time.time_ns()) < 3600 * 10**9  # wall clock, not sim time
        assert {(m.width, m.height, m.header.frame_id) for m in client.images} == {
            (48, SIZE, 'lookatcart')}
        assert sim.node.frames_rendered >= len(client.images)
    finally:
        sim.stop()


@pytest.mark.parametrize(('overrides', 'reason'), [
    ({'image_width': 0}, 'image_width'),
    ({'image_height': 2000}, 'image_height'),
    ({'camera': 'nowhere'}, r"'camera'.*0 \(fixed\), 1 \(lookatcart\)"),
    ({'camera': '7'}, r"'camera'.*0 \(fixed\), 1 \(lookatcart\)"),
    ({'camera': '-2'}, "'camera'"),
    ({'action_repeat': 0}, 'action_repeat'),
])
def test_bad_camera_parameters_are_refused(ros_context, overrides, reason):
    with pytest.raises(SimParameterError, match=reason):
        MujocoSimNode(context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {'task': TASK, 'camera_enabled': True,
                                               **overrides}.items()])


def test_a_machine_without_opengl_is_told_what_to_install():
    # GLFW without a display cannot make a context: the same failure as EGL/OSMesa missing.
    env = {k: v for k, v in os.environ.items() if k != 'DISPLAY'}
    env.update(MUJOCO_GL='glfw', PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         env.get('PYTHONPATH', '')]))
    result = subprocess.run(
        [sys.executable, '-m', 'fpmd_ros.sim_node', '--ros-args', '-r',
         f'__ns:=/sim_no_gl_p{PID}', '-p', f'task:={TASK}', '-p', 'camera_enabled:=true'],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr  # invalid setup: the runner does not respawn
    assert "MUJOCO_GL='glfw'" in result.stderr and 'apt-get install' in result.stderr, \
        result.stderr
