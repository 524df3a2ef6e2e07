"""``trainer``: the fpmd_core trainer over lockstep ``mujoco_sim`` nodes (docs/ros_interface.md).

The sims are reached through their topics by :class:`fpmd_ros.ros_env.RosVectorEnv`; the
trainer itself (collection, updates, in-process evaluation, checkpoints, ONNX export with
metadata, TensorBoard, CSV, learning-curve PNG, progress bar) is fpmd_core's, unchanged.

Parameters (declared with descriptors, read-only; set at start with ``-p name:=value``)
    ``config`` (str)              the training config file, used as it is (no overrides here):
        the train_sim graph (launch file, runner) resolves the run once and passes its
        ``<output_dir>/config.yaml``; empty: the package's train_sim.yaml.
    ``env_namespaces`` (string[]) the sims' namespaces, as many as the config's task.num_envs;
        unset/empty: env_0 ... env_{N-1}.
    ``step_timeout_s`` (double)   wall-clock limit for one step/reset of all sims.
    ``connect_timeout_s`` (double) wall-clock limit for finding the sims (start, reconnect).
    ``max_recoveries`` (int >= 0) reconnect-and-reset attempts after a sim failure.
    ``resume`` (str)              checkpoint to continue from; empty: start fresh.

Topics
    pub ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), about 1 Hz in every phase
        (connecting, training, evaluating, recovering, finished/failed): env steps, updates,
        env steps/s, the last evaluation's returns, the sims, recoveries, the output folder.
    The sims' topics and services belong to this node too (``ros2 node info /trainer``): pub
    ``<ns>/commands``, sub ``<ns>/transition`` (and ``<ns>/camera/image_raw`` for pixel tasks),
    clients of ``<ns>/mujoco_sim/reset``, ``get_parameters`` and ``set_parameters``, created by
    RosVectorEnv on it. The node is spun on a background thread. After a sim failure the node
    is replaced by a new one (same name and parameters) on a fresh DDS participant, which
    knows only the sims alive then.

Failures
    A sim that stops answering raises SimTimeoutError (a misbehaving one SimError): the trainer
    logs the error, which names the sim, writes ``<output_dir>/checkpoints/interrupted.pt``,
    then reconnects to the sims (local ones are respawned by the launch/runner), resets them
    and continues, at most ``max_recoveries`` times; after that it exits with code 3. Every
    wait is bounded by ``step_timeout_s`` / ``connect_timeout_s``: it never hangs.
    SIGINT/SIGTERM: a stop on request, not a failure: stop at the next vector step, write
    interrupted.pt, log (INFO) what was written and how to resume, exit 0; a second signal
    stops at once (still writing the checkpoint). A stop asked for before training began
    (while the sims are awaited) exits 0 too, with nothing to save. Signals are handled by
    fpmd_ros.node_main.run_node, like the other nodes'.

Exit codes: 0 trained, or stopped on request with its checkpoint written; 1 unexpected error;
2 invalid parameters or config; 3 sims failed; 4 training diverged (NaN/Inf loss); 130 stopped
by a signal but the checkpoint could not be written.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from fpmd_core.config import ConfigError, make_config
from fpmd_ros import messages, params
from fpmd_ros.graph import SEED_STRIDE, default_config_path
from fpmd_ros.interface import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_PARAMETERS,
    EXIT_OK,
    SIM_NODE_NAME,
    TRAINER_NODE_NAME,
)
from fpmd_ros.node_main import InvalidParameterError, StopFlag, run_node
from fpmd_ros.qos import DIAGNOSTICS_QOS

NODE_NAME = TRAINER_NODE_NAME
EXIT_SIMS = 3
DIAGNOSTICS_PERIOD_S = 1.0
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
INTERRUPTED_CHECKPOINT = Path('checkpoints') / 'interrupted.pt'


class TrainerParameterError(InvalidParameterError):
    """A trainer parameter (or the config it selects) is invalid; the message names it. Exit
    code 2 (run_node)."""


class StopRequested(Exception):
    """SIGINT/SIGTERM asked the trainer to stop at the next vector step."""


def _descriptor(description: str, type_: int, **ranges) -> ParameterDescriptor:
    """Every trainer parameter is read-only: it is read once, before training starts."""
    return params.descriptor(description, type_, read_only=True, **ranges)


_STR, _INT, _DOUBLE = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
                       ParameterType.PARAMETER_DOUBLE)
# name -> (default, descriptor); env_namespaces is declared typed (string[]) without a default.
PARAMETERS = {
    'config': ('', _descriptor(
        'Training config file (YAML), used as it is; the train_sim graph passes the run\'s '
        'resolved <output_dir>/config.yaml; empty: the package\'s config/train_sim.yaml.', _STR)),
    'env_namespaces': (Parameter.Type.STRING_ARRAY, _descriptor(
        'Namespaces of the lockstep mujoco_sim nodes (any host in the ROS domain), as many as '
        'the config\'s task.num_envs; unset or empty: env_0 ... env_{num_envs-1}.',
        ParameterType.PARAMETER_STRING_ARRAY)),
    'step_timeout_s': (10.0, _descriptor(
        'Seconds to wait for all sims to answer one step or reset.', _DOUBLE,
        float_range=(0.001, 86400.0))),
    'connect_timeout_s': (60.0, _descriptor(
        'Seconds to wait for all sims to appear (at start and when reconnecting).', _DOUBLE,
        float_range=(0.001, 86400.0))),
    'max_recoveries': (3, _descriptor(
        'Reconnect-and-reset attempts after a sim stopped answering; 0: exit at once.', _INT,
        int_range=(0, 1_000_000))),
    'resume': ('', _descriptor(
        'Checkpoint to continue from; empty: start fresh.', _STR)),
}


# What a new incarnation of the node (one per connection to the sims) takes over from the last.
_CARRIED_OVER = ('cfg', 'namespaces', 'step_timeout_s', 'connect_timeout_s', 'max_recoveries',
                 'resume', 'env_steps_per_s', 'trainer', 'state', 'level', 'message',
                 'recoveries', '_last_rate')


class TrainerNode(Node):
    """Parameters, the resolved training config and the /diagnostics publisher; the sims'
    topics and services are added to it by RosVectorEnv while connected.

    ``previous``: the node of the last connection, whose run and state this one continues (its
    parameters come from the same --ros-args)."""

    def __init__(self, node_name: str = NODE_NAME, *, previous: TrainerNode | None = None,
                 **kwargs):
        self._destroyed = False
        super().__init__(node_name, **kwargs)
        try:
            self._setup(previous)
        except BaseException:
            self.destroy_node()
            raise

    def _setup(self, previous: TrainerNode | None) -> None:
        self.values = values = params.declare_all(
            self, PARAMETERS, TrainerParameterError, TRAINER_NODE_NAME,
            unknown_hint="the run's settings come from the config file (config:=...)")
        self._lock = threading.Lock()
        self._hostname = socket.gethostname()
        self._last_publish = 0.0
        if previous is not None:
            for name in _CARRIED_OVER:
                setattr(self, name, getattr(previous, name))
        else:
            self.cfg, self.namespaces = resolve_config(values)
            self.step_timeout_s = float(values['step_timeout_s'])
            self.connect_timeout_s = float(values['connect_timeout_s'])
            self.max_recoveries = int(values['max_recoveries'])
            self.resume = values['resume'] or None
            if self.resume is not None and not Path(self.resume).is_file():
                raise TrainerParameterError(f"parameter 'resume': file not found: "
                                            f'{self.resume}')
            self._last_rate = (time.monotonic(), 0)
            self.env_steps_per_s = 0.0
            self.trainer = None
            self.state, self.level, self.message = 'starting', OK, 'starting'
            self.recoveries = 0
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                  DIAGNOSTICS_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S / 2, self._on_timer)

    def destroy_node(self) -> None:
        # Twice for main's node: the session destroys it when a reconnect replaces it (or when
        # it closes), and run_node destroys the node it made on its way out.
        if not self._destroyed:
            self._destroyed = True
            super().destroy_node()

    # --- /diagnostics --------------------------------------------------------------------------

    def set_state(self, state: str, message: str, level: int = OK) -> None:
        self.state, self.message, self.level = state, message, level
        self.publish_diagnostics()

    def maybe_publish(self) -> None:
        """At most one message per DIAGNOSTICS_PERIOD_S (called after every vector step)."""
        if time.monotonic() - self._last_publish >= DIAGNOSTICS_PERIOD_S:
            self.publish_diagnostics()

    def _on_timer(self) -> None:
        # Covers the phases without vector steps (connecting, evaluating, waiting on a sim).
        self.maybe_publish()

    def publish_diagnostics(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._last_publish = now
            trainer = self.trainer
            env_steps = int(trainer.env_steps) if trainer is not None else 0
            then, steps_then = self._last_rate
            if now - then >= DIAGNOSTICS_PERIOD_S:
                self.env_steps_per_s = max(0, env_steps - steps_then) / (now - then)
                self._last_rate = (now, env_steps)
            cfg = self.cfg
            values = {
                'state': self.state,
                'task': cfg.task.id,
                'algo': cfg.agent.algo,
                'env_steps': env_steps,
                'total_steps': cfg.trainer.total_steps,
                'updates': int(trainer.agent.gradient_steps) if trainer is not None else 0,
                'env_steps_per_s': f'{self.env_steps_per_s:.1f}',
                'sims': ','.join(self.namespaces),
                'recoveries': f'{self.recoveries}/{self.max_recoveries}',
                'output_dir': str(Path(cfg.trainer.output_dir).resolve()),
            }
            last_eval = dict(trainer.last_eval) if trainer is not None else {}
            if last_eval:
                values['last_eval_env_steps'] = last_eval.get('env_steps')
                values['last_eval_return_deploy'] = last_eval.get('return_deploy')
                values['last_eval_return_best_of_n'] = last_eval.get('return_best_of_n')
                if last_eval.get('final_goal_distance_deploy') is not None:
                    values['last_eval_final_goal_distance_deploy_m'] = last_eval[
                        'final_goal_distance_deploy']
            status = messages.diagnostic_status(
                f'{self.get_name()}: training', self.level, self.message, self._hostname,
                {k: _format(v) for k, v in values.items()})
            self._diagnostics.publish(messages.diagnostic_array(
                self.get_clock().now().nanoseconds, [status]))


def _format(value) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def resolve_config(values: dict):
    """The fpmd_core config (the ``config`` file as it is) and the sims' namespaces."""
    config = values['config'] or default_config_path()
    if not Path(config).is_file():
        raise TrainerParameterError(f"parameter 'config': file not found: {config}; expected a "
                                    'training config (YAML), e.g. a run\'s config.yaml')
    try:
        cfg = make_config(file=config)
    except ConfigError as error:
        raise TrainerParameterError(f"parameter 'config': {config}: {error}") from None
    namespaces = [str(ns).strip('/') for ns in (values['env_namespaces'] or []) if str(ns)]
    if len(set(namespaces)) != len(namespaces):
        raise TrainerParameterError(f"parameter 'env_namespaces' lists a namespace twice: "
                                    f"{namespaces}")
    if namespaces and len(namespaces) != cfg.task.num_envs:
        raise TrainerParameterError(
            f"parameter 'env_namespaces' lists {len(namespaces)} sims ({', '.join(namespaces)}) "
            f'but the config {config} has task.num_envs {cfg.task.num_envs}; expected equal '
            'counts (the train_sim graph writes both: ros2 launch fpmd_ros train_sim.launch.py '
            'num_envs:=0 remote_envs:=<namespaces>)')
    if not namespaces:
        namespaces = [f'env_{i}' for i in range(cfg.task.num_envs)]
    return cfg, namespaces


class _Spinner:
    """Spins one node on a background thread: its parameter services, /diagnostics timer and,
    while connected, the sims' topics and service replies (RosVectorEnv waits for them)."""

    def __init__(self, node: Node):
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=_spin, args=(self.executor,),
                                       name='trainer executor', daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)


class TrainingSession:
    """Connect, train, recover from sim failures, report. ``run()`` returns the exit code.

    The sims' topics and services belong to the ``trainer`` node itself (``ros2 node info
    /trainer`` lists them). A reconnect replaces the node by a new one of the same name and
    parameters on a fresh context: a fresh DDS participant knows only the sims alive now, where
    the old one could still match a dead sim's endpoints and send it the first requests."""

    def __init__(self, node: TrainerNode, stop: StopFlag, ros_args: list[str] | None = None):
        self.node = node
        self.stop = stop  # set by the first SIGINT/SIGTERM: stop at the next vector step
        self.log = node.get_logger()
        self.trainer = None
        self.interrupted_checkpoint: Path | None = None
        self._ros_args = ros_args
        self._own_context = None  # the context of a replacement node (the first is main's)
        self._spinner: _Spinner | None = None
        self._connections = 0

    def start(self) -> None:
        self._spinner = _Spinner(self.node)

    def close(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
        if self._own_context is not None:
            rclpy.try_shutdown(context=self._own_context)
            self._own_context = None

    def _replace_node(self) -> None:
        from rclpy.context import Context

        previous = self.node
        self.close()  # first: two /trainer nodes must never coexist
        context = Context()
        rclpy.init(args=self._ros_args, context=context,
                   signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = TrainerNode(context=context, previous=previous)
        except BaseException:
            rclpy.try_shutdown(context=context)
            raise
        self._own_context = context
        self.start()

    def _connect(self):
        """A RosVectorEnv on the trainer node (a new one on every reconnect)."""
        from fpmd_core.tasks import pixel_options
        from fpmd_ros.ros_env import RosVectorEnv

        if self._connections:
            self._replace_node()
        self._connections += 1
        node, cfg = self.node, self.node.cfg
        if not node.recoveries:  # while recovering, the state stays 'recovering' (WARN)
            node.set_state('connecting', f'waiting for sims {", ".join(node.namespaces)}')
        return RosVectorEnv(cfg.task.id, namespaces=node.namespaces,
                            sim_node_name=SIM_NODE_NAME,
                            max_episode_steps=cfg.task.max_episode_steps,
                            action_repeat=cfg.task.action_repeat,
                            pixels=pixel_options(cfg.task),
                            step_timeout_s=node.step_timeout_s,
                            connect_timeout_s=node.connect_timeout_s,
                            seed_stride=SEED_STRIDE, node=node)

    def _on_progress(self, trainer) -> None:
        self.node.maybe_publish()
        if self.stop.is_set():
            raise StopRequested

    def _save_interrupted(self, log=None) -> bool:
        """Writes interrupted.pt if anything was trained since the last save; False if that
        failed."""
        trainer = self.trainer
        if trainer is None or trainer.obs is None:
            return True  # nothing new since the last save (or nothing trained yet)
        path = Path(trainer.output_dir) / INTERRUPTED_CHECKPOINT
        try:
            self.interrupted_checkpoint = trainer.save(path)
        except Exception as error:  # never let a failed save hide the original error
            self.log.error(f'could not write {path}: {error!r}')
            return False
        (log or self.log.warning)(f'checkpoint written at env step {trainer.env_steps}: {path} '
                                  f'(continue from it with resume:={path})')
        return True

    def _close(self, envs) -> None:
        try:
            envs.close()
        except Exception as error:  # pragma: no cover - best effort
            self.log.warning(f'closing the ROS vector env: {error!r}')

    def _close_envs(self) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.envs is not None:
            self._close(trainer.envs)
            trainer.envs = None

    def _stopped(self) -> int:
        """A stop on request: exit 0 once the checkpoint is written (nothing failed)."""
        if not self._save_interrupted(log=self.log.info):
            message = 'stopped by a signal; the checkpoint could not be written (see above)'
            self.node.set_state('stopped', message, ERROR)
            self.log.error(message)
            return EXIT_INTERRUPTED
        trainer = self.trainer
        checkpoint = self.interrupted_checkpoint or (
            trainer.last_checkpoint if trainer is not None else None) or self.node.resume
        if checkpoint:
            message = (f'stopped on request at env step {trainer.env_steps if trainer else 0} '
                       f'of {self.node.cfg.trainer.total_steps}; checkpoint: {checkpoint}. '
                       f'Continue with the same arguments and resume:={checkpoint} (ros2 launch '
                       'fpmd_ros train_sim.launch.py ... or ./fpmd train ...)')
        else:
            message = 'stopped on request before training began; nothing to save'
        self.node.set_state('stopped', message)
        self.log.info(message)
        return EXIT_OK

    def run(self) -> int:
        from fpmd_core.trainer import Trainer
        from fpmd_ros.ros_env import SimError

        cfg = self.node.cfg
        self.log.info(
            f'training {cfg.agent.algo} on {cfg.task.id} for {cfg.trainer.total_steps} env steps '
            f'over {len(self.node.namespaces)} sims ({", ".join(self.node.namespaces)}); output: '
            f'{Path(cfg.trainer.output_dir).resolve()}')
        try:
            if self.stop.is_set():  # a signal while the node was being built: nothing to save
                return self._stopped()
            try:
                envs = self._connect()
            except SimError as error:
                if self.stop.is_set():  # asked to stop while waiting for the sims
                    return self._stopped()
                self.node.set_state('failed', str(error), ERROR)
                self.log.fatal(f'{error}')
                return EXIT_SIMS
            try:
                self.trainer = Trainer(cfg, envs=envs, resume=self.node.resume,
                                       on_progress=self._on_progress)
            except Exception as error:  # CheckpointError, ValueError: the run is misconfigured
                self._close(envs)
                self.node.set_state('failed', str(error), ERROR)
                self.log.fatal(f'cannot start training: {error}')
                return EXIT_INVALID_PARAMETERS
            self.node.trainer = self.trainer
            return self._train(SimError)
        except (StopRequested, KeyboardInterrupt):
            return self._stopped()
        finally:
            self._close_envs()

    def _train(self, SimError) -> int:  # noqa: N803 - an exception class
        from fpmd_core.trainer import EXIT_DIVERGED, TrainingDiverged

        trainer = self.trainer
        while True:
            try:
                if trainer.envs is None:
                    trainer.envs = self._connect()
                self.node.set_state('training', 'training')
                result = trainer.run()
                break
            except SimError as error:
                self.log.error(f'training interrupted: {error}')
                self._save_interrupted()
                self._close_envs()
                # New episodes start everywhere: drop the partial returns of the aborted ones.
                trainer.obs = None
                trainer.episode_returns[:] = 0.0
                if self.stop.is_set():
                    return self._stopped()
                if self.node.recoveries >= self.node.max_recoveries:
                    kept = self.interrupted_checkpoint or trainer.last_checkpoint or 'none'
                    message = (f'{error}; gave up after {self.node.recoveries} recoveries '
                               f'(max_recoveries {self.node.max_recoveries}); checkpoint: {kept}')
                    self.node.set_state('failed', message, ERROR)
                    self.log.fatal(message)
                    return EXIT_SIMS
                self.node.recoveries += 1
                message = (f'recovery {self.node.recoveries}/{self.node.max_recoveries}: '
                           'reconnecting to the sims and resetting them (failed: '
                           f'{error.namespace})')
                self.node.set_state('recovering', message, WARN)
                self.log.warning(message)
            except TrainingDiverged as error:
                self.node.set_state('failed', str(error), ERROR)
                self.log.fatal(f'{error}')
                return EXIT_DIVERGED

        lines = [
            f'training finished: {result.env_steps} env steps, {result.updates} updates, '
            f'deploy-mode return (NFE = 1) {_format(result.final_return_deploy)}, best-of-N '
            f'{_format(result.final_return_best_of_n)}'
            + ('' if result.final_goal_distance_deploy is None else
               f', final goal distance {100 * result.final_goal_distance_deploy:.2f} cm (deploy, '
               'mean over the evaluation episodes)'),
            f'policy: {result.policy}',
            f'checkpoint: {result.checkpoint}',
            f'learning curve: {result.curve}',
            f'outputs (TensorBoard, CSV): {result.output_dir}',
        ]
        for line in lines:  # logged only: under ros2 launch a print would show it twice
            self.log.info(line)
        self.node.set_state('finished', lines[0])
        return EXIT_OK


def main(args=None) -> int:
    """Run the trainer (fpmd_ros.node_main.run_node: its SIGINT/SIGTERM handling keeps the
    contexts up under the trainer, which still has a checkpoint to write after the first
    signal; a second signal interrupts, exit 130 if the checkpoint could not be written)."""
    # A reconnect's new trainer node is given the same --ros-args (name, parameters).
    ros_args = sys.argv if args is None else list(args)

    def body(node: TrainerNode, stop: StopFlag) -> int:
        session = TrainingSession(node, stop, ros_args)
        try:
            session.start()
            return session.run()
        except Exception:
            session.log.fatal('unexpected error')
            import traceback

            traceback.print_exc()
            if session.node is not None:
                session.node.set_state('failed', 'unexpected error (see the log)', ERROR)
            return EXIT_ERROR
        finally:
            session.close()

    def on_first_signal(signum: int) -> None:
        rclpy.logging.get_logger(NODE_NAME).info(
            f'{signal.Signals(signum).name}: stopping at the next step (writes '
            f'{INTERRUPTED_CHECKPOINT}); send it again to stop at once')

    return run_node(NODE_NAME, TrainerNode, args, body=body, second_signal_interrupts=True,
                    interrupted_exit=EXIT_INTERRUPTED, on_first_signal=on_first_signal)


def _spin(executor) -> None:
    try:
        executor.spin()
    except (ExternalShutdownException, KeyboardInterrupt):
        pass


if __name__ == '__main__':
    sys.exit(main())
