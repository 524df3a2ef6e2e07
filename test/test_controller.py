"""policy_controller over real DDS: lifecycle, configure failures, control loop, safety, params.

The controller and a probe node share one single-threaded executor driven by the test (bounded
spinning); all traffic goes through Fast DDS. Rates and latencies are asserted generously (the
machine is shared): timing targets live in bench/bench_control_loop.py.

The test policy is a small untrained FPMD-M export for Hopper-v5 (obs 11, 3 actuators, model rate
125 Hz): several actuators, and a joint_states mapping that needs ``exclude_joint_positions``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_helpers import controller_factory, reliable_qos, spin_until
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray

from fpmd_ros import messages
from fpmd_ros.controller.node import PolicyController
from fpmd_ros.controller.parameters import PARAMETERS, ControllerParameterError
from fpmd_ros.controller.rules import check_parameter
from fpmd_ros.controller.safety import Safety

TASK = 'Hopper-v5'
HOPPER_JOINTS = ('rootx', 'rootz', 'rooty', 'thigh_joint', 'leg_joint', 'foot_joint')
MODEL_RATE_HZ = 125.0  # Hopper-v5: control period 0.008 s
FEED_HZ = 100.0
DEFAULT_ACTION = [0.5, -0.5, 0.25]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def policy_files(tmp_path_factory):
    """(ONNX export, training-style checkpoint) of one small untrained FPMD-M agent."""
    import dataclasses

    import torch

    from fpmd_core import agents, config, tasks
    from fpmd_core.checkpoint import save_checkpoint
    from fpmd_core.export import export_onnx

    cfg = config.make_config('cpu', overrides={'task.id': TASK, 'agent.algo': 'fpmd_m',
                                               'agent.hidden': 32, 'agent.layers': 2})
    env = tasks.make_env(cfg.task.id)
    spec = tasks.task_spec(env, cfg.task.id)
    env.close()
    torch.manual_seed(0)
    agent = agents.make_agent(spec.obs_dim, spec.act_dim, cfg.agent, torch.device('cpu'))
    directory = tmp_path_factory.mktemp('policy')
    onnx_path = export_onnx(agent, spec, cfg, directory / 'hopper.onnx')
    pt_path = save_checkpoint({
        'config': cfg.to_dict(), 'task_spec': dataclasses.asdict(spec),
        'agent': agent.full_state(), 'counters': {'env_steps': 0},
        'rng': {'torch': torch.get_rng_state()}}, directory / 'hopper.pt')
    return str(onnx_path), str(pt_path)


@pytest.fixture(scope='session')
def policy_path(policy_files):
    return policy_files[0]


@pytest.fixture(scope='session')
def reference(policy_path):
    from fpmd_core.runtime import OnnxPolicy

    return OnnxPolicy(policy_path)


def obs_a():
    return np.linspace(-0.5, 0.5, 11).astype(np.float32)


def obs_b():
    return np.linspace(0.4, -0.3, 11).astype(np.float32)


def expected_action(reference, observation) -> np.ndarray:
    meta = reference.metadata
    return np.clip(np.asarray(reference(observation), np.float64), meta['action_low'],
                   meta['action_high'])


class Probe:
    """The test's side: a node that feeds the controller and records what it publishes."""

    def __init__(self, context, executor):
        self.executor = executor
        self.node = rclpy.create_node('controller_probe', context=context)
        executor.add_node(self.node)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.actions: list[JointState] = []
        self.diagnostics: list = []
        self.obs_pub = self.node.create_publisher(Float32MultiArray, 'observation',
                                                  reliable_qos(10))
        self.joint_pub = self.node.create_publisher(JointState, 'joint_states', reliable_qos(10))
        self.node.create_subscription(
            Float64MultiArray, 'commands',
            lambda m: self.commands.append((time.monotonic(), np.array(m.data))),
            reliable_qos(100))
        self.node.create_subscription(JointState, f'/{NAME}/action', self.actions.append,
                                      reliable_qos(100))
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      reliable_qos(100))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'/{NAME}'):
                self.diagnostics.append((status.level[0], status.message,
                                         messages.diagnostic_values(status)))

    def spin(self, seconds: float, feed=None, hz: float = FEED_HZ) -> None:
        """Spin for ``seconds``; ``feed()`` (if given) is called at about ``hz``."""
        end = time.monotonic() + seconds
        next_feed = time.monotonic()
        while (now := time.monotonic()) < end:
            if feed is not None and now >= next_feed:
                feed()
                next_feed += 1.0 / hz
                if next_feed < now:
                    next_feed = now + 1.0 / hz
            self.executor.spin_once(timeout_sec=min(0.002, max(end - now, 0.0)))

    def spin_until(self, predicate, timeout_s: float = 5.0, feed=None) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return bool(predicate())
            self.spin(0.02, feed)
        return True

    def publish_obs(self, values, segments=(('observation', 11),)):
        msg = messages.to_float32_multiarray(values, list(segments) if segments else None)
        return lambda: self.obs_pub.publish(msg)

    def commands_since(self, t0: float) -> list[np.ndarray]:
        return [c for t, c in self.commands if t >= t0]


NAME = 'policy_controller'


@pytest.fixture
def make_controller(ros_context, ros_executor):
    """make_controller(**parameters) -> (PolicyController, Probe) on the test executor."""
    return controller_factory(ros_context, ros_executor, Probe)


def configured(make_controller, policy_path, **parameters):
    node, probe = make_controller(policy=policy_path, **parameters)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.failure_reason
    return node, probe


def active(make_controller, policy_path, **parameters):
    node, probe = configured(make_controller, policy_path, **parameters)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    feeder = (probe.joint_pub if parameters.get('observation_mode') == 'joint_states'
              else probe.obs_pub)
    assert probe.spin_until(lambda: node._command_pub.get_subscription_count() > 0
                            and feeder.get_subscription_count() > 0)
    return node, probe


# Pure rules and the control loop without DDS: test_controller_rules.py.


# --- parameters and lifecycle -------------------------------------------------------------------

def test_parameters_are_declared_with_descriptors(make_controller):
    node, _ = make_controller()
    for name in PARAMETERS:
        descriptor = node.describe_parameter(name)
        assert descriptor.description, name
    assert node.describe_parameter('autostart').read_only
    rate = node.describe_parameter('control_rate_hz').floating_point_range[0]
    assert (rate.from_value, rate.to_value) == (0.0, 2000.0)
    threads = node.describe_parameter('inference_threads').integer_range[0]
    assert (threads.from_value, threads.to_value) == (1, 64)
    assert 'unconfigured' in node.describe_parameter('policy').additional_constraints
    assert node.get_parameter('control_rate_hz').value == 0.0
    assert node.get_parameter('safe_action').value == 'zero'
    assert node.get_parameter('state_timeout_s').value == 0.2
    assert node.lifecycle_state == 'unconfigured'


def test_lifecycle_through_services(make_controller, policy_path, ros_executor):
    node, probe = make_controller(policy=policy_path)
    change = probe.node.create_client(ChangeState, f'/{NAME}/change_state')
    get = probe.node.create_client(GetState, f'/{NAME}/get_state')
    assert probe.spin_until(lambda: change.service_is_ready() and get.service_is_ready())

    def call(client, request):
        future = client.call_async(request)
        assert spin_until(ros_executor, future.done, 10.0), client.service_name
        return future.result()

    def transition(transition_id):
        return call(change, ChangeState.Request(transition=Transition(id=transition_id)))

    def state():
        return call(get, GetState.Request()).current_state.label

    assert state() == 'unconfigured'
    assert probe.node.count_publishers('/commands') == 0
    assert transition(Transition.TRANSITION_CONFIGURE).success
    assert state() == 'inactive'
    assert probe.spin_until(lambda: probe.node.count_publishers('/commands') == 1)
    probe.spin(0.3)
    assert not probe.commands  # inactive: no control

    assert transition(Transition.TRANSITION_ACTIVATE).success
    assert state() == 'active'
    assert probe.spin_until(lambda: len(probe.commands) >= 3)  # no input yet: the safe action
    assert all(np.array_equal(c, [0.0, 0.0, 0.0]) for _, c in probe.commands)

    assert transition(Transition.TRANSITION_DEACTIVATE).success
    assert state() == 'inactive'
    probe.spin(0.2)
    count = len(probe.commands)
    probe.spin(0.3)
    assert len(probe.commands) == count  # stopped
    assert transition(Transition.TRANSITION_CLEANUP).success
    assert state() == 'unconfigured'
    assert node.policy is None
    assert probe.spin_until(lambda: probe.node.count_publishers('/commands') == 0)
    # Configure again after cleanup: the node can be reused.
    assert transition(Transition.TRANSITION_CONFIGURE).success
    assert state() == 'inactive'
    assert transition(Transition.TRANSITION_INACTIVE_SHUTDOWN).success
    assert state() == 'finalized'
    assert node.policy is None


def test_deactivate_and_shutdown_publish_the_safe_action(make_controller, policy_path,
                                                         reference):
    node, probe = active(make_controller, policy_path, safe_action='default',
                         default_action=DEFAULT_ACTION)
    feed = probe.publish_obs(obs_a())
    assert probe.spin_until(lambda: any(np.allclose(c, expected_action(reference, obs_a()))
                                        for _, c in probe.commands), feed=feed)
    t0 = time.monotonic()
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert probe.spin_until(lambda: probe.commands_since(t0))
    probe.spin(0.3)
    after = probe.commands_since(t0)  # may hold one command that was in flight
    assert np.array_equal(after[-1], DEFAULT_ACTION)
    assert sum(np.array_equal(c, DEFAULT_ACTION) for c in after) == 1
    probe.spin(0.3)
    assert len(probe.commands_since(t0)) == len(after)  # stopped

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    probe.spin(0.3, feed)
    t1 = time.monotonic()
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == 'finalized'
    assert probe.spin_until(lambda: probe.commands_since(t1))
    assert np.array_equal(probe.commands_since(t1)[-1], DEFAULT_ACTION)


CONFIGURE_FAILURES = {
    'missing': (dict(policy='{dir}/nope.onnx'), r'nope\.onnx: file not found'),
    'empty path': (dict(policy=''), r"parameter 'policy' is empty"),
    'directory': (dict(policy='{dir}/folder.onnx'),
                  r"'policy': .*folder\.onnx is a directory; expected a \.onnx or \.pt file"),
    'corrupt': (dict(policy='{corrupt}'), r'not a loadable ONNX model'),
    'corrupt checkpoint': (dict(policy='{corrupt_pt}'), r'corrupt\.pt: cannot be read'),
    'wrong suffix': (dict(policy='{dir}/model.txt'), r'expected a \.onnx or \.pt file'),
    'task mismatch': (dict(expected_task='Walker2d-v5'),
                      r"'expected_task'.*task is 'Hopper-v5' in the model, expected 'Walker2d"),
    'joint_names size': (dict(observation_mode='joint_states',
                              joint_names=['rootz', 'thigh_joint']),
                         r"joint_names' gives 4 values.*obs_dim is 11"),
    'model joints without exclusion': (dict(observation_mode='joint_states'),
                                       r'gives 12 values.*exclude_joint_positions: \[rootx\]'),
    'image with a state policy': (dict(observation_mode='image'),
                                  r"'observation_mode' is 'image' but the policy takes a state "
                                  r"vector \(obs_shape \[11\]\); expected 'observation' or "
                                  r"'joint_states'"),
    'rate below model': (dict(control_rate_hz=60.0), r"'control_rate_hz' is 60 Hz.*125 Hz"),
    'default wrong length': (dict(safe_action='default', default_action=[0.1, 0.2]),
                             r"'default_action' has 2 values; expected 3"),
    'default unset': (dict(safe_action='default'), r"'default_action' is not set"),
    'default wrong length, unused': (dict(safe_action='zero', default_action=[0.1, 0.2]),
                                     r"'default_action' has 2 values; expected 3"),
    'default out of bounds': (dict(safe_action='default', default_action=[0.0, 5.0, 0.0]),
                              r"'default_action'\[1\] is 5, outside the action bounds"),
}


@pytest.mark.parametrize('case', list(CONFIGURE_FAILURES))
def test_configure_fails_with_a_clear_reason(case, make_controller, policy_path, tmp_path,
                                             capfd):
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / 'corrupt.pt').write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / 'model.txt').write_text('not a model')
    (tmp_path / 'folder.onnx').mkdir()
    overrides, pattern = CONFIGURE_FAILURES[case]
    parameters = {'policy': policy_path}
    paths = dict(dir=tmp_path, corrupt=corrupt, corrupt_pt=tmp_path / 'corrupt.pt')
    parameters.update({k: v.format(**paths) if isinstance(v, str) else v
                       for k, v in overrides.items()})
    node, _ = make_controller(**parameters)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.lifecycle_state == 'unconfigured'
    assert node.policy is None and node._command_pub is None
    import re
    assert re.search(pattern, node.failure_reason), node.failure_reason
    time.sleep(0.05)
    assert 'configure failed: ' in capfd.readouterr().err


def test_configure_succeeds_after_fixing_parameters(make_controller, policy_path):
    node, probe = make_controller(policy=policy_path, observation_mode='joint_states')
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    result = node.set_parameters([Parameter('exclude_joint_positions', value=['rootx'])])[0]
    assert result.successful, result.reason
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.failure_reason == ''


def test_out_of_range_and_invalid_parameters_are_refused(make_controller, policy_path,
                                                         ros_executor):
    with pytest.raises(ControllerParameterError, match=r"'safe_action' is 'brake'"):
        make_controller(safe_action='brake')
    with pytest.raises(ControllerParameterError, match='control_rate_hz'):
        make_controller(control_rate_hz=1.0e5)
    # A name the node does not have: rclpy alone would ignore it.
    with pytest.raises(ControllerParameterError, match=r"^parameter 'state_timeout' is not a "
                       r"policy_controller parameter \(did you mean 'state_timeout_s'\?\)$"):
        make_controller(state_timeout=0.5, use_sim_time=True)
    node, probe = active(make_controller, policy_path)

    def refused(name, value):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, (name, value)
        return result.reason

    for name, value in (('control_rate_hz', 5000.0), ('state_timeout_s', 0.0),
                        ('max_action_delta', -1.0), ('inference_threads', 0)):
        assert 'range' in refused(name, value), name
    assert 'zero, hold, default' in refused('safe_action', 'brake')
    assert 'observation' in refused('observation_mode', 'lidar')
    assert "trained at 125 Hz" in refused('control_rate_hz', 60.0)
    assert 'unconfigured' in refused('policy', '/tmp/other.onnx')
    assert "'default_action' is not set" in refused('safe_action', 'default')
    # default_action is checked against the model whenever it is set, not only when used.
    assert "'default_action' has 2 values; expected 3" in refused('default_action', [0.0, 0.0])
    # Valid runtime changes are accepted and take effect.
    ok = node.set_parameters([Parameter('default_action', value=DEFAULT_ACTION),
                              Parameter('safe_action', value='default')])
    assert all(r.successful for r in ok), [r.reason for r in ok]
    assert node.set_parameters([Parameter('control_rate_hz', value=250.0)])[0].successful
    assert node.rate_hz == 250.0 and node._control_timer.timer_period_ns == 4_000_000
    assert np.array_equal(node.default_action, DEFAULT_ACTION)
    assert 'expected 3' in refused('default_action', [0.0, 0.0])  # safe_action is default now
    assert 'outside the action bounds' in refused('default_action', [0.0, 0.0, 9.0])

    # The same through the parameter service: the reason reaches a remote caller.
    client = probe.node.create_client(SetParameters, f'/{NAME}/set_parameters')
    assert probe.spin_until(client.service_is_ready)
    request = SetParameters.Request(parameters=[ParameterMsg(
        name='state_timeout_s',
        value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0))])
    future = client.call_async(request)
    assert spin_until(ros_executor, future.done, 10.0)
    result = future.result().results[0]
    assert not result.successful and 'state_timeout_s' in result.reason


# --- control loop -------------------------------------------------------------------------------

def test_commands_follow_the_policy_at_the_control_rate(make_controller, policy_path,
                                                        reference):
    # Staleness has its own tests; a generous timeout keeps a feed gap on a loaded machine
    # (CI saw 0.36 s) from turning a policy command into the safe action here.
    node, probe = active(make_controller, policy_path, state_timeout_s=5.0)
    feed_a = probe.publish_obs(obs_a())
    want_a = expected_action(reference, obs_a())
    assert probe.spin_until(lambda: probe.commands and np.allclose(probe.commands[-1][1], want_a,
                                                                   atol=1e-6), feed=feed_a)
    t0 = time.monotonic()
    probe.spin(2.0, feed_a)
    window = probe.commands_since(t0)
    expected = 2.0 * MODEL_RATE_HZ
    assert len(window) >= 0.5 * expected, f'{len(window)} commands in 2 s at 125 Hz'
    assert len(window) <= 1.5 * expected
    assert all(np.allclose(c, want_a, atol=1e-6) for c in window)

    feed_b = probe.publish_obs(obs_b())
    want_b = expected_action(reference, obs_b())
    assert not np.allclose(want_a, want_b)
    assert probe.spin_until(lambda: np.allclose(probe.commands[-1][1], want_b, atol=1e-6),
                            feed=feed_b)
    # A bare vector (no layout, or one unlabelled segment) is accepted as well.
    bare = Float32MultiArray(data=obs_b().tolist())
    assert probe.spin_until(lambda: np.allclose(probe.commands[-1][1], want_a, atol=1e-6),
                            feed=probe.publish_obs(obs_a(), segments=None))
    assert probe.spin_until(lambda: np.allclose(probe.commands[-1][1], want_b, atol=1e-6),
                            feed=lambda: probe.obs_pub.publish(bare))

    action = probe.actions[-1]
    assert list(action.name) == ['thigh_joint', 'leg_joint', 'foot_joint']
    assert action.header.stamp.sec > 0
    assert all(np.isfinite(c).all() for _, c in probe.commands)

    assert probe.spin_until(lambda: any(level == 0 and values['safety_state'] == 'ok'
                                        for level, _, values in probe.diagnostics), feed=feed_a)
    level, message, values = [d for d in probe.diagnostics if d[2]['safety_state'] == 'ok'][-1]
    assert values['model_hash'] == reference.model_hash
    assert float(values['achieved_rate_hz']) > 0.3 * MODEL_RATE_HZ
    assert float(values['inference_latency_p50_ms']) > 0
    assert float(values['inference_latency_p99_ms']) >= float(values['inference_latency_p50_ms'])
    assert float(values['input_age_ms']) < 1000
    assert values['task'] == TASK and values['lifecycle_state'] == 'active'


def test_a_checkpoint_drives_the_same_commands_as_its_export(make_controller, policy_files,
                                                             reference):
    node, probe = active(make_controller, policy_files[1])
    assert node.policy.__class__.__name__ == 'CheckpointPolicy'
    want = expected_action(reference, obs_a())  # from the ONNX export of the same agent
    assert probe.spin_until(lambda: probe.commands and np.allclose(
        probe.commands[-1][1], want, atol=1e-5), feed=probe.publish_obs(obs_a()))


def hopper_joint_state(reference, observation, order=None, extra=True, nan_joint=None):
    """A JointState whose mapping (positions of joints 1.., velocities of all) is
    ``observation``; joints in ``order``, plus an unused extra joint."""
    positions = dict(zip(HOPPER_JOINTS, [0.123, *observation[:5]], strict=True))
    velocities = dict(zip(HOPPER_JOINTS, observation[5:], strict=True))
    names = list(order or HOPPER_JOINTS)
    pos = [positions[n] for n in names]
    vel = [velocities[n] for n in names]
    if extra:
        names.append('camera_pan')
        pos.append(math.nan if nan_joint == 'camera_pan' else 0.0)
        vel.append(0.0)
    if nan_joint in HOPPER_JOINTS:
        vel[names.index(nan_joint)] = math.nan
    return messages.joint_state(1, names, pos, vel)


def test_joint_states_mode_maps_by_name(make_controller, policy_path, reference):
    node, probe = active(make_controller, policy_path, observation_mode='joint_states',
                         exclude_joint_positions=['rootx'], safe_action='default',
                         default_action=DEFAULT_ACTION)
    shuffled = ['foot_joint', 'rootz', 'thigh_joint', 'rootx', 'leg_joint', 'rooty']
    good = hopper_joint_state(reference, obs_a(), order=shuffled)
    want = expected_action(reference, obs_a())

    def feed(msg):
        return lambda: probe.joint_pub.publish(msg)

    def reaches(target, msg):
        return probe.spin_until(
            lambda: probe.commands and np.allclose(probe.commands[-1][1], target, atol=1e-6),
            feed=feed(msg))

    assert reaches(want, good)
    assert reaches(want, hopper_joint_state(reference, obs_a(), nan_joint='camera_pan'))
    missing = hopper_joint_state(reference, obs_a())
    missing.name = [n if n != 'foot_joint' else 'ankle' for n in missing.name]
    assert reaches(DEFAULT_ACTION, missing)
    assert reaches(want, good)
    assert reaches(DEFAULT_ACTION, hopper_joint_state(reference, obs_a(), nan_joint='leg_joint'))
    short = hopper_joint_state(reference, obs_a())
    short.velocity = short.velocity[:3]
    assert reaches(DEFAULT_ACTION, short)
    assert reaches(want, good)
    assert reaches(DEFAULT_ACTION, JointState())  # empty
    assert reaches(want, good)
    assert node.lifecycle_state == 'active'
    assert all(np.isfinite(c).all() for _, c in probe.commands)


@pytest.mark.parametrize('kind', ['zero', 'hold', 'default'])
def test_stale_input_gives_the_safe_action_and_diagnostics_error(kind, make_controller,
                                                                 policy_path, reference):
    timeout_s = 0.1
    node, probe = active(make_controller, policy_path, safe_action=kind,
                         default_action=DEFAULT_ACTION, state_timeout_s=timeout_s)
    feed = probe.publish_obs(obs_a())
    want = expected_action(reference, obs_a())
    assert probe.spin_until(lambda: probe.commands and np.allclose(probe.commands[-1][1], want,
                                                                   atol=1e-6), feed=feed)
    probe.spin(0.2, feed)
    last_feed = time.monotonic()
    safe = {'zero': [0.0, 0.0, 0.0], 'hold': probe.commands[-1][1],
            'default': DEFAULT_ACTION}[kind]
    assert probe.spin_until(lambda: node.safety.state is Safety.STALE, 5.0)
    # Generous: state_timeout_s + one period is the design; the machine is shared.
    assert time.monotonic() - last_feed < timeout_s + 1.0 / MODEL_RATE_HZ + 1.0
    t_stale = time.monotonic()
    assert probe.spin_until(lambda: len(probe.commands_since(t_stale)) >= 3)
    assert all(np.array_equal(c, safe) for c in probe.commands_since(t_stale))
    # Diagnostics: WARN while briefly stale, ERROR once it lasts > 5 x state_timeout_s.
    assert probe.spin_until(lambda: any(level == 2 and values['safety_state'] == 'stale'
                                        for level, _, values in probe.diagnostics), 5.0)
    # Recovers when input returns.
    assert probe.spin_until(lambda: node.safety.state is Safety.OK, feed=feed)
    assert probe.spin_until(lambda: np.allclose(probe.commands[-1][1], want, atol=1e-6),
                            feed=feed)
    assert node.safety.trouble_episodes == 1


def test_malformed_input_gives_the_safe_action_and_recovers(make_controller, policy_path,
                                                            reference):
    node, probe = active(make_controller, policy_path, safe_action='default',
                         default_action=DEFAULT_ACTION)
    want = expected_action(reference, obs_a())
    good = probe.publish_obs(obs_a())
    bad_values = obs_a().copy()
    nan, inf = bad_values.copy(), bad_values.copy()
    nan[3], inf[7] = math.nan, -math.inf
    bad = {
        'wrong length': probe.publish_obs(np.zeros(7, np.float32), segments=None),
        'NaN': probe.publish_obs(nan),
        'Inf': probe.publish_obs(inf),
        'empty': probe.publish_obs(np.zeros(0, np.float32), segments=None),
        'wrong layout': probe.publish_obs(obs_a(), segments=(('position', 5), ('velocity', 6))),
    }
    for label, feed in [('good', good), *bad.items(), ('good', good)]:
        target = want if label == 'good' else DEFAULT_ACTION
        assert probe.spin_until(lambda t=target: probe.commands and np.allclose(
            probe.commands[-1][1], t, atol=1e-6), feed=feed), label
        if label != 'good':
            assert node.safety.state is Safety.MALFORMED, label
            probe.spin(0.1, feed)
            assert np.array_equal(probe.commands[-1][1], DEFAULT_ACTION), label
    assert node.lifecycle_state == 'active'
    assert all(np.isfinite(c).all() for _, c in probe.commands)
    assert all(np.isfinite(a.position).all() for a in probe.actions)
    assert probe.spin_until(lambda: any(level == 0 and values['safety_state'] == 'ok'
                                        for level, _, values in probe.diagnostics), feed=good)


def test_max_action_delta_limits_each_tick(make_controller, policy_path, reference):
    delta = 0.01
    node, probe = active(make_controller, policy_path, max_action_delta=delta)
    probe.spin(0.2)  # the safe action (zero) while waiting for input
    want = expected_action(reference, obs_a())
    assert np.max(np.abs(want)) > 5 * delta
    t0 = time.monotonic()
    probe.spin(1.0, probe.publish_obs(obs_a()))
    commands = [probe.commands[-1][1] * 0, *probe.commands_since(t0)]
    steps = np.max(np.abs(np.diff(np.array(commands), axis=0)), axis=1)
    assert np.mean(steps <= delta + 1e-9) >= 0.95, steps
    assert np.max(steps) <= 5 * delta + 1e-9
    # It moves towards the policy's action, without overshooting it.
    last = commands[-1]
    assert np.all(np.abs(last - want) <= np.abs(want) + 1e-9)
    assert np.linalg.norm(last - want) < np.linalg.norm(want)


def test_observation_trigger_publishes_one_command_per_input(make_controller, policy_path,
                                                            reference):
    """trigger=observation: each input message gives one command computed from it, at once;
    while the input is fresh the timer publishes nothing; when it goes stale the timer (the
    watchdog) publishes the safe action."""
    timeout_s = 0.6
    node, probe = active(make_controller, policy_path, trigger='observation',
                         safe_action='default', default_action=DEFAULT_ACTION,
                         state_timeout_s=timeout_s)
    # No input yet: the watchdog publishes the safe action at the control rate.
    assert probe.spin_until(lambda: len(probe.commands) >= 3)
    assert all(np.array_equal(c, DEFAULT_ACTION) for _, c in probe.commands)
    assert node.safety.state is Safety.WAITING
    for values in (obs_a(), obs_b(), obs_a()):
        want = expected_action(reference, values)
        count = len(probe.commands)
        probe.publish_obs(values)()
        # The command for this observation arrives (a watchdog tick may come first while the
        # message is in flight)...
        assert probe.spin_until(lambda c=count, w=want: any(
            np.allclose(command, w, atol=1e-6) for _, command in probe.commands[c:]))
        # ... and, the input being fresh, nothing more until the next message.
        count = len(probe.commands)
        probe.spin(0.2)
        assert len(probe.commands) == count, probe.commands[count:]
        assert np.allclose(probe.commands[-1][1], want, atol=1e-6)
        # The watchdog does not even wake up meanwhile: its next tick is state_timeout_s after
        # the message (about 0.4 s from here), not one control period (8 ms) away.
        assert node._control_timer.time_until_next_call() > 0.2e9
    assert node.safety.state is Safety.OK
    # Stale: the watchdog publishes the safe action again, diagnostics ERROR.
    assert probe.spin_until(lambda: node.safety.state is Safety.STALE, 5.0)
    t_stale = time.monotonic()
    assert probe.spin_until(lambda: len(probe.commands_since(t_stale)) >= 3)
    assert all(np.array_equal(c, DEFAULT_ACTION) for c in probe.commands_since(t_stale))
    assert probe.spin_until(lambda: any(level == 2 and values['safety_state'] == 'stale'
                                        and values['trigger'] == 'observation'
                                        for level, _, values in probe.diagnostics), 5.0)
    # A malformed message is answered at once with the safe action, and recovery as well.
    feed = probe.publish_obs(obs_b())
    assert probe.spin_until(lambda: np.allclose(probe.commands[-1][1],
                                                expected_action(reference, obs_b()),
                                                atol=1e-6), feed=feed)
    probe.publish_obs(np.zeros(7, np.float32), segments=None)()
    assert probe.spin_until(lambda: node.safety.state is Safety.MALFORMED
                            and np.array_equal(probe.commands[-1][1], DEFAULT_ACTION))
    count = len(probe.commands)
    probe.spin(0.2)  # a fresh (if malformed) message: the watchdog stays quiet
    assert len(probe.commands) == count
    assert all(np.isfinite(c).all() for _, c in probe.commands)


def test_trigger_parameter_is_checked(make_controller, policy_path):
    assert "'trigger' is 'sometimes'" in check_parameter('trigger', 'sometimes')
    with pytest.raises(ControllerParameterError, match="expected one of: timer, observation"):
        make_controller(policy=policy_path, trigger='sometimes')
    node, _ = configured(make_controller, policy_path, trigger='observation')
    result = node.set_parameters([Parameter('trigger', value='timer')])[0]
    assert not result.successful and 'only change while the node is unconfigured' in result.reason


# --- the console script -------------------------------------------------------------------------

def test_main_autostarts_and_stops_with_the_safe_action(policy_path, reference, ros_context,
                                                        ros_executor):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    bad = subprocess.run(
        [sys.executable, '-m', 'fpmd_ros.controller_node', '--ros-args', '-p',
         'safe_action:=brake'], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'safe_action' is 'brake'" in bad.stderr

    node = rclpy.create_node('main_probe', context=ros_context)
    ros_executor.add_node(node)
    commands = []
    node.create_subscription(Float64MultiArray, 'commands',
                             lambda m: commands.append(np.array(m.data)), reliable_qos(100))
    obs_pub = node.create_publisher(Float32MultiArray, 'observation', reliable_qos(10))
    msg = messages.to_float32_multiarray(obs_a())
    want = expected_action(reference, obs_a())
    proc = subprocess.Popen(
        [sys.executable, '-m', 'fpmd_ros.controller_node', '--ros-args', '-p',
         f'policy:={policy_path}', '-p', 'autostart:=true', '-p', 'safe_action:=default',
         '-p', f'default_action:={DEFAULT_ACTION}'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert spin_until(ros_executor, lambda: len(commands) >= 3, 30.0), 'no commands'
        assert np.array_equal(commands[0], DEFAULT_ACTION)  # no input yet

        def fed_and_following():
            obs_pub.publish(msg)
            return np.allclose(commands[-1], want, atol=1e-6)

        assert spin_until(ros_executor, fed_and_following, 10.0)
        proc.send_signal(signal.SIGINT)
        assert spin_until(ros_executor, lambda: proc.poll() is not None, 20.0)
        spin_until(ros_executor, lambda: False, 0.3)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, out
    assert 'active: controlling at 125 Hz' in out
    assert np.array_equal(commands[-1], DEFAULT_ACTION), out  # the robot is left safe


# --- against the realtime mujoco_sim ------------------------------------------------------------

@pytest.mark.parametrize('mode', ['observation', 'joint_states'])
def test_drives_the_realtime_sim(mode, policy_path, reference, ros_context, ros_executor):
    """The controller in a namespace with a realtime Hopper sim (its own participant): QoS and
    layouts match, the sim applies the controller's commands, and the joint_states mapping
    (positions without rootx, then velocities) reproduces the sim's observation."""
    from sim_helpers import RunningSim

    namespace = f'deploy_{mode}_p{os.getpid()}'
    sim = RunningSim(namespace, task=TASK, mode='realtime')
    try:
        extra = {'exclude_joint_positions': ['rootx']} if mode == 'joint_states' else {}
        node = PolicyController(context=ros_context, namespace=namespace, parameter_overrides=[
            Parameter(k, value=v) for k, v in dict(policy=policy_path, observation_mode=mode,
                                                   **extra).items()])
        ros_executor.add_node(node)
        probe = rclpy.create_node('sim_probe', namespace=namespace, context=ros_context)
        ros_executor.add_node(probe)
        observations, joint_states = [], []
        probe.create_subscription(Float32MultiArray, 'observation',
                                  lambda m: observations.append(np.array(m.data)),
                                  reliable_qos(100))
        probe.create_subscription(JointState, 'joint_states', joint_states.append,
                                  reliable_qos(100))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.failure_reason
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert spin_until(ros_executor, lambda: node.safety.state is Safety.OK
                          and node.inferences > 20, 10.0), node.safety.reason
        assert node.safety.trouble_episodes == 0
        # The sim applies what the controller publishes. Compared with the recent commands,
        # not only the newest one: both run their own timers, so the newest may be in flight.
        commands = []
        probe.create_subscription(Float64MultiArray, 'commands',
                                  lambda m: commands.append(np.array(m.data)), reliable_qos(100))
        assert spin_until(ros_executor, lambda: any(
            np.array_equal(sim.node.applied_action, c) for c in commands[-50:]), 5.0)
        assert np.any(sim.node.applied_action != 0.0)
        assert sim.node.rejected_commands == 0
        if mode == 'joint_states':  # each step's joint_states maps to that step's observation
            assert len(joint_states) > 10 and len(observations) > 10
            recent = np.array(observations[-30:])
            for msg in joint_states[-10:-5]:
                mapped = messages.joint_state_observation(msg, HOPPER_JOINTS, HOPPER_JOINTS[1:])
                assert np.min(np.max(np.abs(recent - mapped), axis=1)) < 1e-6
    finally:
        sim.stop()
