"""The ``policy_controller`` lifecycle node: wires a :class:`ControlLoop` to topics, timers,
parameters and the lifecycle (behaviour: the fpmd_ros.controller package docstring)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray, Header

from fpmd_ros import messages
from fpmd_ros.controller.inputs import JointStateInput, make_input
from fpmd_ros.controller.loop import ControlLoop
from fpmd_ros.controller.parameters import (
    CONFIGURE_PARAMETERS,
    PARAMETERS,
    ControllerParameterError,
)
from fpmd_ros.controller.policy import load_checked_policy, warm_up
from fpmd_ros.controller.rules import (
    ConfigureError,
    check_default_action,
    check_parameter,
    resolve_rate,
)
from fpmd_ros.controller.safety import OK, SafetyMonitor
from fpmd_ros.interface import CONTROLLER_NODE_NAME, model_rate_hz
from fpmd_ros.params import declare_all
from fpmd_ros.qos import (
    ACTION_QOS,
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    EPISODE_START_QOS,
    INPUT_QOS,
    ROBOT_COMMAND_QOS,
)

DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 1.0
_RUNTIME_PARAMETERS = ('state_timeout_s', 'safe_action', 'default_action', 'max_action_delta')


def _steady_ns() -> int:
    return time.monotonic_ns()


class PolicyController(LifecycleNode):
    """The ``policy_controller`` lifecycle node; raises :class:`ControllerParameterError` for
    parameter overrides that are invalid on their own."""

    def __init__(self, node_name: str = CONTROLLER_NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.failure_reason = ''  # why the last configure failed ('' after a success)
        self._release()
        try:
            self._declare()
        except BaseException:
            self.destroy_node()
            raise

    def _declare(self) -> None:
        values = declare_all(self, PARAMETERS, ControllerParameterError, CONTROLLER_NODE_NAME)
        for name, value in values.items():
            reason = check_parameter(name, value)
            if reason:
                raise ControllerParameterError(reason)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    def _param(self, name: str):
        """A parameter's value (lists as lists; None for an unset array parameter)."""
        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return None
        if isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
            value = list(value)
        return value

    # --- state -----------------------------------------------------------------------------

    def _release(self) -> None:
        """Forget everything configure made (entities must already be destroyed)."""
        self.loop: ControlLoop | None = None
        self._subscription = None
        self._episode_start_subscription = None
        self._auxiliary_subscriptions = []
        self._command_pub = None
        self._action_pub = None
        self._observation_pub = None
        self._diagnostics_pub = None
        self._control_timer = None
        self._timer_period_ns = 0
        self._diagnostics_timer = None
        self.trigger = 'timer'
        self._idle_safety = SafetyMonitor()  # reported while nothing is configured

    # What tests and tools read: the loop's state, or the unconfigured defaults.
    @property
    def policy(self):
        return self.loop.policy if self.loop is not None else None

    @property
    def meta(self) -> dict:
        return self.loop.meta if self.loop is not None else {}

    @property
    def safety(self) -> SafetyMonitor:
        return self.loop.safety if self.loop is not None else self._idle_safety

    @property
    def rate_hz(self) -> float:
        return self.loop.rate_hz if self.loop is not None else 0.0

    @property
    def default_action(self) -> np.ndarray | None:
        return self.loop.default_action if self.loop is not None else None

    @property
    def last_command(self) -> np.ndarray | None:
        return self.loop.last_command if self.loop is not None else None

    @property
    def inferences(self) -> int:
        return self.loop.inferences if self.loop is not None else 0

    @property
    def commands_published(self) -> int:
        return self.loop.commands if self.loop is not None else 0

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured' | 'inactive' | 'active' | 'finalized' | a transition state."""
        return self._state_machine.current_state[1]

    def _destroy_entities(self) -> None:
        for timer in (self._control_timer, self._diagnostics_timer):
            if timer is not None:
                self.destroy_timer(timer)
        for subscription in (self._subscription, self._episode_start_subscription,
                             *self._auxiliary_subscriptions):
            if subscription is not None:
                self.destroy_subscription(subscription)
        for pub in (self._command_pub, self._action_pub, self._observation_pub,
                    self._diagnostics_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._release()

    # --- parameters at runtime -----------------------------------------------------------------

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        proposed = {name: self._param(name) for name in ('control_rate_hz', 'safe_action',
                                                         'default_action')}
        for parameter in parameters:
            value = parameter.value
            if isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
                value = list(value)
            if parameter.name in CONFIGURE_PARAMETERS and self.lifecycle_state != 'unconfigured':
                return SetParametersResult(successful=False, reason=(
                    f'parameter {parameter.name!r} can only change while the node is '
                    f'unconfigured (it is {self.lifecycle_state}); deactivate and clean up '
                    'first, then configure again'))
            reason = check_parameter(parameter.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if parameter.name in proposed:
                proposed[parameter.name] = value
        if self.loop is not None:  # configured: check against the model too
            try:
                resolve_rate(proposed['control_rate_hz'], self.meta)
                default = proposed['default_action']
                if proposed['safe_action'] == 'default' or default:
                    check_default_action(default, self.meta)
            except ConfigureError as error:
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters) -> None:
        if self.loop is None:
            return
        names = {parameter.name for parameter in parameters}
        if 'control_rate_hz' in names:
            self.loop.rate_hz = resolve_rate(self._param('control_rate_hz'), self.meta)
            if self._control_timer is not None:
                self._set_timer_period(self._control_period_ns())
            self.get_logger().info(f'control rate {self.rate_hz:g} Hz')
        if names & set(_RUNTIME_PARAMETERS):
            self._apply_runtime_parameters(self.loop)

    def _apply_runtime_parameters(self, loop: ControlLoop) -> None:
        loop.set_safety(self._param('state_timeout_s'), self._param('safe_action'),
                        self._param('default_action'), self._param('max_action_delta'))

    # --- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as error:
            reason = (str(error) if isinstance(error, ConfigureError)
                      else f'unexpected {type(error).__name__}: {error}')
            self.failure_reason = reason
            self.get_logger().error(f'configure failed: {reason}')
            self._destroy_entities()
            return TransitionCallbackReturn.FAILURE
        self.failure_reason = ''
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        path = str(self._param('policy'))
        policy = load_checked_policy(path, str(self._param('expected_task')),
                                     int(self._param('inference_threads')))
        meta = policy.metadata
        rate_hz = resolve_rate(self._param('control_rate_hz'), meta)
        source = make_input(self._param('observation_mode'), meta, self._param('joint_names'),
                            self._param('exclude_joint_positions'), str(self._param('task_file')),
                            float(self._param('command_timeout_s')))
        if isinstance(source, JointStateInput):
            notes = source.mapping.differences(meta['joint_names'])
            if notes:
                self.get_logger().warning(
                    "parameter 'joint_names' differs from the model's joint_names: using "
                    + ', '.join(notes))
        loop = ControlLoop(policy, meta, source, rate_hz)
        self._apply_runtime_parameters(loop)
        warm_up(policy, meta)
        self.loop = loop
        self.trigger = self._param('trigger')
        self.actuator_names = [str(n) for n in meta['actuator_names']]

        self._command_pub = self.create_publisher(Float64MultiArray, 'commands', COMMAND_QOS)
        self._action_pub = self.create_publisher(JointState, '~/action', ACTION_QOS)
        if self._param('observation_mode') != 'image':  # vector observations
            self._observation_pub = self.create_publisher(Float32MultiArray, '~/observation',
                                                          ACTION_QOS)
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        if source.episode_starts:
            # Made before the input's subscription: when an announcement and its frame are
            # both waiting, the executor takes the announcement first.
            self._episode_start_subscription = self.create_subscription(
                Header, 'episode_start', self._on_episode_start, EPISODE_START_QOS)
        # The input's other topics before the input itself, for the same reason: an IMU
        # message or a goal waiting with a joint_states message is taken first.
        for topic, msg_type, qos, handler in source.auxiliary_inputs():
            self._auxiliary_subscriptions.append(self.create_subscription(
                msg_type, topic, self._auxiliary_callback(handler),
                ROBOT_COMMAND_QOS if qos == 'command' else INPUT_QOS))
        self._subscription = self.create_subscription(
            source.msg_type, source.topic, self._on_input, INPUT_QOS)
        loop.start_window(_steady_ns())
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))
        model_rate = model_rate_hz(meta)
        self.get_logger().info(
            f"{meta['algorithm']} policy for {meta['task']} ({Path(path).name}, sha256 "
            f"{policy.model_hash[:12]}): {source.describe()} from "
            f"{self._subscription.topic_name}, "
            f"actions {meta['act_dim']} ({', '.join(self.actuator_names)}); "
            f'{rate_hz:g} Hz' + ('' if abs(rate_hz - model_rate) < 1e-6 * model_rate
                                 else f" (model: {model_rate:g} Hz)")
            + f', trigger {self.trigger}, safe action {loop.safe_kind}, state timeout '
            f'{loop.state_timeout_ns / 1e9:g} s')

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.loop.activate(_steady_ns())  # image mode: the first frame refills the stack
        self._control_timer = self.create_timer(1.0 / self.rate_hz, self._on_tick,
                                                clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._timer_period_ns = self._control_period_ns()
        self.get_logger().info(
            f'active: controlling at {self.rate_hz:g} Hz' if self.trigger == 'timer' else
            f'active: controlling on each {self._subscription.topic_name} message (safe action '
            f'at {self.rate_hz:g} Hz while there is none for state_timeout_s)')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control('deactivated')
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self, why: str) -> None:
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
            action = self.loop.deactivate(_steady_ns())
            self._publish(action)
            self.get_logger().info(f'{why}: published the safe action ({self.loop.safe_kind}) '
                                   f'{np.array2string(action, precision=4)} and stopped')

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._command_pub is not None:
            self._stop_control('shutting down')
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'error during a transition from {state.label}; releasing the '
                                'policy and topics (back to unconfigured)')
        try:
            if self._command_pub is not None:
                self._stop_control('error')
        finally:
            self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    # --- control loop wiring -------------------------------------------------------------------

    def _on_input(self, msg) -> None:
        now = _steady_ns()
        self.loop.receive(msg, now)
        if self.trigger == 'observation' and self._control_timer is not None:
            self._control_step(now)
            # Push the watchdog's next tick to state_timeout_s from now: while input flows it
            # never wakes the executor (at 1 kHz that was 1000 idle ticks per second).
            self._set_timer_period(self.loop.state_timeout_ns)
            self._control_timer.reset()

    def _auxiliary_callback(self, handler):
        def on_message(msg) -> None:
            handler(msg, _steady_ns())
            self._log_notes()
        return on_message

    def _log_notes(self) -> None:
        notes = self.loop.source.notes
        while notes:
            self.get_logger().warning(notes.pop(0), throttle_duration_sec=LOG_THROTTLE_S)

    def _on_episode_start(self, msg: Header) -> None:
        changed = self.loop.episode_start(messages.stamp_to_ns(msg.stamp))
        if changed and self.trigger == 'observation' and self._control_timer is not None:
            self._control_step(_steady_ns())  # the corrected command for the newest frame

    def _control_period_ns(self) -> int:
        return int(round(1e9 / self.rate_hz))

    def _set_timer_period(self, period_ns: int) -> None:
        if period_ns != self._timer_period_ns:
            self._control_timer.timer_period_ns = period_ns
            self._timer_period_ns = period_ns
            # A new period only applies from the next call on: restart the count from now.
            self._control_timer.reset()

    def input_age_s(self, now_ns: int | None = None) -> float | None:
        if self.loop is None:
            return None
        return self.loop.input_age_s(_steady_ns() if now_ns is None else now_ns)

    def _on_tick(self) -> None:
        now = _steady_ns()
        if self.trigger == 'observation':
            self._set_timer_period(self._control_period_ns())  # until the next message
            if self.loop.fresh(now):
                return  # fresh input: its arrival ran the control step; the watchdog stays quiet
        self._control_step(now)

    def _control_step(self, now: int) -> None:
        step = self.loop.step(now)
        if step.log is not None:
            # One call site per level: rclpy's throttling refuses a severity change per site.
            level, text = step.log
            if level == 'error':
                self.get_logger().error(text, throttle_duration_sec=LOG_THROTTLE_S)
            elif level == 'warn':
                self.get_logger().warning(text, throttle_duration_sec=LOG_THROTTLE_S)
            else:
                self.get_logger().info(text, throttle_duration_sec=LOG_THROTTLE_S)
        self._publish(step.command)
        if step.observation is not None and self._observation_pub is not None \
                and self._observation_pub.get_subscription_count():
            self._observation_pub.publish(messages.to_float32_multiarray(
                step.observation, self.loop.observation_layout))

    def _publish(self, command: np.ndarray) -> None:
        self._command_pub.publish(messages.encode_command(command))
        if self._action_pub.get_subscription_count():  # for recording: built only when wanted
            self._action_pub.publish(messages.joint_state(
                self._stamp_ns(), self.actuator_names, position=command))

    def _stamp_ns(self) -> int:
        """Stamps come from the node clock: ROS time, i.e. /clock with use_sim_time."""
        return max(self.get_clock().now().nanoseconds, 0)

    # --- diagnostics ---------------------------------------------------------------------------

    def _on_diagnostics(self) -> None:
        try:
            self._diagnostics_pub.publish(self.diagnostics())
        except Exception as error:  # diagnostics must never take the node down
            self.get_logger().error(f'diagnostics failed: {error!r}',
                                    throttle_duration_sec=10.0)

    def diagnostics(self):
        """The current DiagnosticArray (and start a new measurement window)."""
        lifecycle = self.lifecycle_state
        if self.loop is not None:
            level, message, values = self.loop.status(_steady_ns())
        else:
            level, message, values = OK, 'not controlling', {}
        if self._control_timer is None:
            level, message = OK, f'{lifecycle}: not controlling'
        meta = self.meta
        values = {
            'lifecycle_state': lifecycle,
            **values,
            'model_hash': self.policy.model_hash if self.policy is not None else '',
            'policy': str(self._param('policy')),
            'algorithm': meta.get('algorithm', ''),
            'task': meta.get('task', ''),
            'observation_mode': str(self._param('observation_mode')),
            'input_topic': self._subscription.topic_name if self._subscription else '',
            'trigger': self.trigger,
        }
        status = messages.diagnostic_status(
            f'{self.get_fully_qualified_name()}: control loop', level, message,
            hardware_id=meta.get('task', ''), values=values)
        return messages.diagnostic_array(self._stamp_ns(), [status])

    def destroy_node(self) -> None:
        if self._control_timer is not None:  # still active: the robot gets the safe action last
            try:
                self._stop_control('stopping')
            except Exception:  # the context may already be shut down
                pass
        self.loop = None
        super().destroy_node()


def autostart(node: PolicyController) -> int | None:
    """``autostart``: configure and activate at once; exit code 1 if configure fails."""
    if not node.get_parameter('autostart').value:
        return None
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().fatal(f'autostart: configure failed: {node.failure_reason}')
        return 1
    node.trigger_activate()
    return None


__all__ = ['PolicyController', 'ControllerParameterError', 'autostart']
