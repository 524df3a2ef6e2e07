"""policy_controller with ``observation_mode: image`` over real DDS and real onnxruntime.

The test policy is an untrained pixel FPMD export (cpu_pixels profile) for dm_control
cartpole-swingup at 32x32 with 3 stacked frames: obs (32, 32, 9) uint8, one actuator with bounds
[-1, 1], model rate 50 Hz (control period 0.02 s including action repeat 2). Expected commands
are computed here with the same ONNX file through :class:`fpmd_core.runtime.OnnxPolicy` and the
training env's :class:`fpmd_core.frames.FrameStack`, fed the frames the test sends.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_helpers import controller_factory, reliable_qos
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

from fpmd_ros import messages
from fpmd_ros.controller.safety import Safety

NAME = 'policy_controller'
SIZE = 32
FRAME_STACK = 3
SAFE = [0.5]  # the default safe action: far from what the untrained policy outputs (~ -0.06)
MATCH_TOL = 1e-6
DISTINCT = 1e-4  # expectations this far apart cannot be confused within MATCH_TOL


@pytest.fixture(scope='session')
def pixel_policy_path(tmp_path_factory):
    """An untrained pixel policy (random initialisation, seed 0) exported to ONNX."""
    from runner_helpers import export_untrained_policy

    return str(export_untrained_policy(tmp_path_factory.mktemp('pixels') / 'pix.onnx',
                                       'cartpole-swingup', pixels=True, image_size=SIZE,
                                       hidden=32, seed=0))


@pytest.fixture(scope='session')
def reference(pixel_policy_path):
    from fpmd_core.runtime import OnnxPolicy

    policy = OnnxPolicy(pixel_policy_path)
    assert policy.pixels and policy.metadata['obs_shape'] == [SIZE, SIZE, 3 * FRAME_STACK]
    return policy


def make_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(count)]


def act(reference, stack: np.ndarray) -> np.ndarray:
    meta = reference.metadata
    return np.clip(np.asarray(reference(stack), np.float64), meta['action_low'],
                   meta['action_high'])


def stacked(*frames: np.ndarray) -> np.ndarray:
    return np.concatenate(frames, axis=-1)


def expected_commands(reference, frames, refill_at=(0,)) -> list[np.ndarray]:
    """The command for each frame when the controller stacks them as training does (refilled
    with the frame at the indices in ``refill_at``)."""
    from fpmd_core.frames import FrameStack

    stack = FrameStack(FRAME_STACK)
    return [act(reference, stack.reset(f) if i in refill_at else stack.push(f))
            for i, f in enumerate(frames)]


def assert_distinct(want: np.ndarray, *others: np.ndarray) -> None:
    """The expectation differs from the alternatives, so matching it means something."""
    for other in others:
        assert np.max(np.abs(want - other)) > DISTINCT, (want, other)


class ImageProbe:
    """The test's side: publishes images on ``image_raw`` and records what the controller
    publishes."""

    def __init__(self, context, executor):
        self.executor = executor
        self.node = rclpy.create_node('image_probe', context=context)
        executor.add_node(self.node)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.diagnostics: list[tuple[int, str, dict]] = []
        self.image_pub = self.node.create_publisher(Image, 'image_raw', reliable_qos(10))
        self.node.create_subscription(
            Float64MultiArray, 'commands',
            lambda m: self.commands.append((time.monotonic(), np.array(m.data))),
            reliable_qos(100))
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      reliable_qos(100))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'/{NAME}'):
                self.diagnostics.append((status.level[0], status.message,
                                         messages.diagnostic_values(status)))

    def spin(self, seconds: float, feed=None, hz: float = 50.0) -> None:
        end = time.monotonic() + seconds
        next_feed = time.monotonic()
        while (now := time.monotonic()) < end:
            if feed is not None and now >= next_feed:
                feed()
                next_feed = max(next_feed + 1.0 / hz, now)
            self.executor.spin_once(timeout_sec=min(0.002, max(end - now, 0.0)))

    def spin_until(self, predicate, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return bool(predicate())
            self.spin(0.01)
        return True

    def publish(self, msg: Image) -> None:
        self.image_pub.publish(msg)

    def frame_msg(self, frame: np.ndarray) -> Image:
        return messages.encode_image(frame, time.time_ns(), 'camera')

    def commands_since(self, index: int) -> list[np.ndarray]:
        return [c for _, c in self.commands[index:]]

    def send_and_expect(self, msg: Image, want, what: str) -> None:
        """Publish one image and wait for its command (a watchdog or timer tick with the
        previous result may come first while the image is in flight)."""
        count = len(self.commands)
        self.publish(msg)
        assert self.spin_until(lambda: any(np.allclose(c, want, atol=MATCH_TOL)
                                           for c in self.commands_since(count))), (
            what, want, self.commands_since(count)[-3:])


@pytest.fixture
def make_controller(ros_context, ros_executor):
    """make_controller(**parameters) -> (PolicyController, ImageProbe) on the test executor."""
    return controller_factory(ros_context, ros_executor, ImageProbe)


def active(make_controller, path, **parameters):
    node, probe = make_controller(policy=path, observation_mode='image', safe_action='default',
                                  default_action=SAFE, **parameters)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.failure_reason
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert probe.spin_until(lambda: node._command_pub.get_subscription_count() > 0
                            and probe.image_pub.get_subscription_count() > 0)
    return node, probe


# --- configure ----------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', ['observation', 'joint_states'])
def test_configure_refuses_a_pixel_policy_without_image_mode(mode, make_controller,
                                                             pixel_policy_path):
    node, _ = make_controller(policy=pixel_policy_path, observation_mode=mode)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.lifecycle_state == 'unconfigured' and node.policy is None
    assert re.search(
        rf"parameter 'observation_mode' is '{mode}' but the policy takes camera frames "
        r"\(obs_shape \[32, 32, 9\], frame_stack 3\); expected 'image'", node.failure_reason), \
        node.failure_reason
    # The same node configures once the mode fits the policy.
    assert node.set_parameters([Parameter('observation_mode', value='image')])[0].successful
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.failure_reason
    assert node._subscription.topic_name == '/image_raw'


# --- control --------------------------------------------------------------------------------------

@pytest.mark.parametrize('trigger', ['timer', 'observation'])
def test_commands_are_the_policy_on_the_stacked_frames(trigger, make_controller,
                                                       pixel_policy_path, reference):
    """Each new image is pushed once into the frame stack (the first fills it) and the command
    is the policy on that stack; ticks without a new image push nothing."""
    node, probe = active(make_controller, pixel_policy_path, trigger=trigger,
                         state_timeout_s=5.0)
    assert probe.spin_until(lambda: len(probe.commands) >= 2)  # no image yet: the safe action
    assert all(np.array_equal(c, SAFE) for _, c in probe.commands)
    frames = make_frames(5, seed=1)
    want = expected_commands(reference, frames)
    for i in range(1, len(frames)):
        assert_distinct(want[i], act(reference, stacked(*[frames[i]] * FRAME_STACK)))
    for i in range(2, len(frames)):  # what pushing the same image at every tick would give
        assert_distinct(want[i], act(reference, stacked(frames[i - 1], frames[i - 1],
                                                        frames[i])))
    for i, frame in enumerate(frames):
        probe.send_and_expect(probe.frame_msg(frame), want[i], f'frame {i}')
        count = len(probe.commands)
        probe.spin(0.15)  # several 50 Hz ticks with no new image
        later = probe.commands_since(count)
        if trigger == 'timer':
            assert later and all(np.allclose(c, want[i], atol=MATCH_TOL) for c in later)
        else:  # fresh input: the watchdog stays quiet
            assert not later, later
    assert node.inferences == len(frames)  # one inference per image, none per tick
    assert node.safety.state is Safety.OK and node.safety.trouble_episodes == 0


@pytest.mark.parametrize('trigger', ['timer', 'observation'])
def test_a_stream_of_images_is_controlled(trigger, make_controller, pixel_policy_path):
    node, probe = active(make_controller, pixel_policy_path, trigger=trigger,
                         state_timeout_s=0.5)
    messages_bank = [probe.frame_msg(f) for f in make_frames(8, seed=2)]
    sent = [0]

    def feed():
        probe.publish(messages_bank[sent[0] % len(messages_bank)])
        sent[0] += 1

    probe.spin(0.5, feed)
    count = len(probe.commands)
    probe.spin(2.0, feed)
    window = probe.commands_since(count)
    assert len(window) >= 10, (len(window), sent[0])
    assert all(np.isfinite(c).all() and -1.0 <= c[0] <= 1.0 for c in window)
    assert sum(not np.array_equal(c, SAFE) for c in window) >= 0.9 * len(window)
    assert node.safety.state is Safety.OK
    assert node.inferences >= 10
    assert probe.spin_until(lambda: any(level == 0 and values['safety_state'] == 'ok'
                                        for level, _, values in probe.diagnostics), 5.0)
    level, message, values = [d for d in probe.diagnostics if d[2]['safety_state'] == 'ok'][-1]
    assert values['observation_mode'] == 'image' and values['input_topic'] == '/image_raw'
    assert values['image_size'] == '32x32' and values['frame_stack'] == '3'
    assert int(values['frames_stacked']) >= 10 and values['frame_stack_refills'] == '1'
    assert 0.0 <= float(values['input_age_ms']) < 500.0
    assert float(values['inference_latency_p50_ms']) > 0.0


def malformed_images(frame: np.ndarray) -> dict[str, Image]:
    def edited(**fields) -> Image:
        msg = messages.encode_image(frame, 0, 'camera')
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    good = messages.encode_image(frame, 0, 'camera')
    return {
        'wrong size': messages.encode_image(frame[:, : SIZE // 2], 0, 'camera'),
        'bgr8': edited(encoding='bgr8'),  # right size and data: only the encoding is wrong
        'step too small': edited(step=3 * SIZE - 1),
        'empty data': edited(data=b''),
        'short data': edited(data=bytes(good.data)[: -3 * SIZE]),
        'empty image': edited(height=0, width=0, step=0, data=b''),
    }


def test_malformed_images_give_the_safe_action_and_never_enter_the_stack(
        make_controller, pixel_policy_path, reference):
    node, probe = active(make_controller, pixel_policy_path, state_timeout_s=5.0)
    frames = make_frames(4, seed=3)
    want = expected_commands(reference, frames)
    bad = malformed_images(frames[3][:, :, ::-1].copy())  # bgr8 of a frame never sent as good
    # Had the bgr8 frame entered the stack, frame 2's stack would differ:
    assert_distinct(want[2], act(reference, stacked(frames[1], frames[3][:, :, ::-1],
                                                    frames[2])),
                    act(reference, stacked(*[frames[2]] * FRAME_STACK)))
    probe.send_and_expect(probe.frame_msg(frames[0]), want[0], 'frame 0')
    probe.send_and_expect(probe.frame_msg(frames[1]), want[1], 'frame 1')
    for label, msg in bad.items():
        count = len(probe.commands)
        probe.publish(msg)
        assert probe.spin_until(lambda c=count: node.safety.state is Safety.MALFORMED
                                and probe.commands_since(c)
                                and np.array_equal(probe.commands[-1][1], SAFE)), label
        probe.spin(0.1)  # ticks keep publishing the safe action for this message
        assert np.array_equal(probe.commands[-1][1], SAFE), label
        assert node.lifecycle_state == 'active', label
    assert node.safety.trouble_episodes == 1
    assert probe.spin_until(lambda: any(
        level == 2 and values['safety_state'] == 'malformed' and 'image' in values['safety_reason']
        for level, _, values in probe.diagnostics), 5.0)
    # Good images again: the stack continues from the last good frames (none of the bad ones).
    probe.send_and_expect(probe.frame_msg(frames[2]), want[2], 'frame 2 after the bad ones')
    probe.send_and_expect(probe.frame_msg(frames[3]), want[3], 'frame 3')
    assert node.safety.state is Safety.OK
    assert probe.spin_until(lambda: probe.diagnostics[-1][2]['safety_state'] == 'ok', 5.0)
    assert all(np.isfinite(c).all() for _, c in probe.commands)


def test_a_gap_or_reactivation_refills_the_stack(make_controller, pixel_policy_path, reference):
    """Frames across a gap longer than state_timeout_s are not consecutive steps: the first
    frame after the gap (or after activation) refills the stack, as at an episode start."""
    timeout_s = 1.0
    node, probe = active(make_controller, pixel_policy_path, trigger='observation',
                         state_timeout_s=timeout_s)
    frames = make_frames(5, seed=4)
    want = expected_commands(reference, frames, refill_at=(0, 1, 3))
    continued = expected_commands(reference, frames)
    assert_distinct(want[1], continued[1])
    probe.send_and_expect(probe.frame_msg(frames[0]), want[0], 'frame 0')
    assert probe.spin_until(lambda: node.safety.state is Safety.STALE, 5.0)
    stale_from = len(probe.commands)
    assert probe.spin_until(lambda: len(probe.commands_since(stale_from)) >= 2)
    assert all(np.array_equal(c, SAFE) for c in probe.commands_since(stale_from))
    # Stale for less than 5 x state_timeout_s: a warning (an error only if it persists).
    assert probe.spin_until(lambda: any(level == 1 and values['safety_state'] == 'stale'
                                        for level, _, values in probe.diagnostics), 5.0)
    probe.send_and_expect(probe.frame_msg(frames[1]), want[1], 'frame 1 after the gap')
    probe.send_and_expect(probe.frame_msg(frames[2]), want[2], 'frame 2')
    # Deactivate and activate again: the next frame starts a new stack.
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert_distinct(want[3], act(reference, stacked(frames[1], frames[2], frames[3])))
    probe.send_and_expect(probe.frame_msg(frames[3]), want[3], 'frame 3 after reactivation')
    probe.send_and_expect(probe.frame_msg(frames[4]), want[4], 'frame 4')
    assert all(np.isfinite(c).all() for _, c in probe.commands)
