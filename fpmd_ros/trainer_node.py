"""``trainer``: the fpmd_core trainer over lockstep ``mujoco_sim`` nodes (see ROS_INTERFACE.md).

The sims are reached through their topics by :class:`fpmd_ros.ros_env.RosVectorEnv`; the
trainer itself (collection, updates, in-process evaluation, checkpoints, ONNX export with
metadata, TensorBoard, CSV, learning-curve PNG, progress bar) is fpmd_core's, unchanged.

Parameters (declared with descriptors, read-only; set at start with ``-p name:=value``)
    ``config`` (str)              training config file; empty: the package's train_sim.yaml.
    ``task``, ``algo`` (str)      override the config's task.id / agent.algo; empty: keep.
    ``num_envs`` (int >= 0)       number of sims; 0: len(env_namespaces), else the config's.
    ``env_namespaces`` (string[]) the sims' namespaces; unset/empty: env_0 ... env_{N-1}.
    ``total_steps`` (int >= 0), ``seed`` (int >= -1), ``checkpoint_interval``,
    ``eval_interval`` (int >= -1), ``output_dir`` (str): override the config's trainer.* field;
        0 (total_steps), -1 (the others) or empty (output_dir) keep the config's value.
    ``step_timeout_s`` (double)   wall-clock limit for one step/reset of all sims.
    ``connect_timeout_s`` (double) wall-clock limit for finding the sims (start, reconnect).
    ``max_recoveries`` (int >= 0) reconnect-and-reset attempts after a sim failure.
    ``resume`` (str)              checkpoint to continue from; empty: start fresh.

Topics
    pub ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), about 1 Hz in every phase
        (connecting, training, evaluating, recovering, finished/failed): env steps, updates,
        env steps/s, the last evaluation's returns, the sims, recoveries, the output folder.
    The sims' topics are used by RosVectorEnv on its own rclpy context; this node's context
    only carries /diagnostics and the parameter services, spun on a background thread.

Failures
    A sim that stops answering raises SimTimeoutError (a misbehaving one SimError): the trainer
    logs the error, which names the sim, writes ``<output_dir>/checkpoints/interrupted.pt``,
    then reconnects to the sims (local ones are respawned by the launch/runner), resets them
    and continues, at most ``max_recoveries`` times; after that it exits with code 3. Every
    wait is bounded by ``step_timeout_s`` / ``connect_timeout_s``: it never hangs.
    SIGINT/SIGTERM: stop at the next vector step, write interrupted.pt, exit 130; a second
    signal stops at once.

Exit codes: 0 trained; 1 unexpected error; 2 invalid parameters or config; 3 sims failed;
4 training diverged (NaN/Inf loss); 130 stopped by a signal.
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
from fpmd_ros.graph import SEED_STRIDE, SIM_NODE_NAME, default_config_path
from fpmd_ros.qos import DIAGNOSTICS_QOS

NODE_NAME = 'trainer'
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_SIMS, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DIAGNOSTICS_PERIOD_S = 1.0
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
INTERRUPTED_CHECKPOINT = Path('checkpoints') / 'interrupted.pt'


class TrainerParameterError(ValueError):
    """A trainer parameter (or the config it selects) is invalid; the message names it."""


class StopRequested(Exception):
    """SIGINT/SIGTERM asked the trainer to stop at the next vector step."""


def _descriptor(description: str, type_: int, **ranges) -> ParameterDescriptor:
    """Every trainer parameter is read-only: it is read once, before training starts."""
    return params.descriptor(description, type_, read_only=True, **ranges)


_STR, _INT, _DOUBLE = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
                       ParameterType.PARAMETER_DOUBLE)
_BIG = 2**62
# name -> (default, descriptor); env_namespaces is declared typed (string[]) without a default.
PARAMETERS = {
    'config': ('', _descriptor(
        'Training config file (YAML); empty: the package\'s config/train_sim.yaml.', _STR)),
    'algo': ('', _descriptor(
        'fpmd_r | fpmd_m | dpmd | sac; empty: the config file\'s agent.algo.', _STR)),
    'task': ('', _descriptor(
        'Task id the sims run; empty: the config file\'s task.id.', _STR)),
    'num_envs': (0, _descriptor(
        'Number of sims; 0: the length of env_namespaces, else the config\'s task.num_envs.',
        _INT, int_range=(0, 100_000))),
    'env_namespaces': (Parameter.Type.STRING_ARRAY, _descriptor(
        'Namespaces of the lockstep mujoco_sim nodes (any host in the ROS domain); '
        'unset or empty: env_0 ... env_{num_envs-1}.', ParameterType.PARAMETER_STRING_ARRAY)),
    'total_steps': (0, _descriptor(
        'Environment steps to train for; 0: the config\'s trainer.total_steps.', _INT,
        int_range=(0, _BIG))),
    'seed': (-1, _descriptor(
        'Training seed (sim i is reset with seed + i * 1000000); -1: the config\'s '
        'trainer.seed.', _INT, int_range=(-1, 2**31 - 1))),
    'output_dir': ('', _descriptor(
        'Folder for checkpoints, policy.onnx, logs and the curve; empty: the config\'s '
        'trainer.output_dir.', _STR)),
    'checkpoint_interval': (-1, _descriptor(
        'Env steps between checkpoints (0: only at the end); -1: the config\'s value.', _INT,
        int_range=(-1, _BIG))),
    'eval_interval': (-1, _descriptor(
        'Env steps between evaluations (0: only at the end); -1: the config\'s value.', _INT,
        int_range=(-1, _BIG))),
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


class TrainerNode(Node):
    """Parameters, the resolved training config and the /diagnostics publisher."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            self._setup()
        except BaseException:
            self.destroy_node()
            raise

    def _setup(self) -> None:
        self.values = values = params.declare_all(self, PARAMETERS, TrainerParameterError)
        self.cfg, self.namespaces = resolve_config(values)
        self.step_timeout_s = float(values['step_timeout_s'])
        self.connect_timeout_s = float(values['connect_timeout_s'])
        self.max_recoveries = int(values['max_recoveries'])
        self.resume = values['resume'] or None
        if self.resume is not None and not Path(self.resume).is_file():
            raise TrainerParameterError(f"parameter 'resume': file not found: {self.resume}")

        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                  DIAGNOSTICS_QOS)
        self._lock = threading.Lock()
        self._hostname = socket.gethostname()
        self._last_publish = 0.0
        self._last_rate = (time.monotonic(), 0)
        self.env_steps_per_s = 0.0
        self.trainer = None
        self.state, self.level, self.message = 'starting', OK, 'starting'
        self.recoveries = 0
        self.create_timer(DIAGNOSTICS_PERIOD_S / 2, self._on_timer)

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
    """The fpmd_core config (file + parameter overrides) and the sims' namespaces."""
    config = values['config'] or default_config_path()
    overrides = {}
    for name, field, unset in [('task', 'task.id', ''), ('algo', 'agent.algo', ''),
                               ('total_steps', 'trainer.total_steps', 0),
                               ('seed', 'trainer.seed', -1),
                               ('output_dir', 'trainer.output_dir', ''),
                               ('checkpoint_interval', 'trainer.checkpoint_interval', -1),
                               ('eval_interval', 'trainer.eval_interval', -1)]:
        if values[name] != unset:
            overrides[field] = values[name]
    namespaces = [str(ns).strip('/') for ns in (values['env_namespaces'] or []) if str(ns)]
    num_envs = int(values['num_envs'])
    if namespaces and num_envs and num_envs != len(namespaces):
        raise TrainerParameterError(
            f"parameter 'num_envs' is {num_envs} but env_namespaces lists {len(namespaces)} "
            f"sims ({', '.join(namespaces)}); expected equal counts (or num_envs 0)")
    if len(set(namespaces)) != len(namespaces):
        raise TrainerParameterError(f"parameter 'env_namespaces' lists a namespace twice: "
                                    f"{namespaces}")
    if namespaces or num_envs:
        overrides['task.num_envs'] = len(namespaces) or num_envs
    try:
        cfg = make_config(file=config, overrides=overrides)
    except ConfigError as error:
        raise TrainerParameterError(f'config {config}: {error}') from None
    if not namespaces:
        namespaces = [f'env_{i}' for i in range(cfg.task.num_envs)]
    return cfg, namespaces


class _Signals:
    """SIGINT/SIGTERM: the first asks for a stop at the next vector step, the second stops now."""

    def __init__(self, log):
        self.requested = False
        self._log = log

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._log.warning(f'{signal.Signals(signum).name}: stopping at the next step (writes '
                          f'{INTERRUPTED_CHECKPOINT}); send it again to stop at once')


class TrainingSession:
    """Connect, train, recover from sim failures, report. ``run()`` returns the exit code."""

    def __init__(self, node: TrainerNode, signals: _Signals):
        self.node = node
        self.signals = signals
        self.log = node.get_logger()
        self.trainer = None
        self.interrupted_checkpoint: Path | None = None
        self._env_contexts: dict = {}

    def _connect(self):
        """A RosVectorEnv on a fresh context (a fresh DDS participant on every reconnect).

        The context is initialised with ``args=[]``: this process's ``--ros-args`` (``__node``
        remap, ``-p`` overrides) are the trainer node's, and must not rename the env's node.
        """
        from rclpy.context import Context

        from fpmd_core.tasks import pixel_options
        from fpmd_ros.ros_env import RosVectorEnv

        node, cfg = self.node, self.node.cfg
        if not node.recoveries:  # while recovering, the state stays 'recovering' (WARN)
            node.set_state('connecting', f'waiting for sims {", ".join(node.namespaces)}')
        context = Context()
        rclpy.init(args=[], context=context)
        try:
            envs = RosVectorEnv(cfg.task.id, namespaces=node.namespaces,
                                sim_node_name=SIM_NODE_NAME,
                                max_episode_steps=cfg.task.max_episode_steps,
                                action_repeat=cfg.task.action_repeat,
                                pixels=pixel_options(cfg.task),
                                step_timeout_s=node.step_timeout_s,
                                connect_timeout_s=node.connect_timeout_s,
                                seed_stride=SEED_STRIDE, context=context,
                                node_name=f'{node.get_name()}_envs')
        except BaseException:
            rclpy.try_shutdown(context=context)
            raise
        self._env_contexts[id(envs)] = context
        return envs

    def _on_progress(self, trainer) -> None:
        self.node.maybe_publish()
        if self.signals.requested:
            raise StopRequested

    def _save_interrupted(self) -> None:
        trainer = self.trainer
        if trainer is None or trainer.obs is None:
            return  # nothing new since the last save (or nothing trained yet)
        path = Path(trainer.output_dir) / INTERRUPTED_CHECKPOINT
        try:
            self.interrupted_checkpoint = trainer.save(path)
        except Exception as error:  # never let a failed save hide the original error
            self.log.error(f'could not write {path}: {error!r}')
            return
        self.log.warning(f'checkpoint written at env step {trainer.env_steps}: {path} '
                         f'(continue from it with resume:={path})')

    def _close(self, envs) -> None:
        try:
            envs.close()
        except Exception as error:  # pragma: no cover - best effort
            self.log.warning(f'closing the ROS vector env: {error!r}')
        context = self._env_contexts.pop(id(envs), None)
        if context is not None:
            rclpy.try_shutdown(context=context)

    def _close_envs(self) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.envs is not None:
            self._close(trainer.envs)
            trainer.envs = None

    def _stopped(self) -> int:
        self._save_interrupted()
        self.node.set_state('stopped', 'stopped by a signal', WARN)
        self.log.warning('training stopped by a signal')
        return EXIT_INTERRUPTED

    def run(self) -> int:
        from fpmd_core.trainer import Trainer, TrainingDiverged
        from fpmd_ros.ros_env import SimError

        node, cfg = self.node, self.node.cfg
        self.log.info(
            f'training {cfg.agent.algo} on {cfg.task.id} for {cfg.trainer.total_steps} env steps '
            f'over {len(node.namespaces)} sims ({", ".join(node.namespaces)}); output: '
            f'{Path(cfg.trainer.output_dir).resolve()}')
        try:
            try:
                envs = self._connect()
            except SimError as error:
                node.set_state('failed', str(error), ERROR)
                self.log.fatal(f'{error}')
                return EXIT_SIMS
            try:
                self.trainer = Trainer(cfg, envs=envs, resume=node.resume,
                                       on_progress=self._on_progress)
            except Exception as error:  # CheckpointError, ValueError: the run is misconfigured
                self._close(envs)
                node.set_state('failed', str(error), ERROR)
                self.log.fatal(f'cannot start training: {error}')
                return EXIT_CONFIG
            node.trainer = self.trainer
            return self._train(SimError, TrainingDiverged)
        except (StopRequested, KeyboardInterrupt):
            return self._stopped()
        finally:
            self._close_envs()

    def _train(self, SimError, TrainingDiverged) -> int:  # noqa: N803 - exception classes
        node, trainer = self.node, self.trainer
        while True:
            try:
                if trainer.envs is None:
                    trainer.envs = self._connect()
                node.set_state('training', 'training')
                result = trainer.run()
                break
            except SimError as error:
                self.log.error(f'training interrupted: {error}')
                self._save_interrupted()
                self._close_envs()
                # New episodes start everywhere: drop the partial returns of the aborted ones.
                trainer.obs = None
                trainer.episode_returns[:] = 0.0
                if self.signals.requested:
                    return self._stopped()
                if node.recoveries >= node.max_recoveries:
                    kept = self.interrupted_checkpoint or trainer.last_checkpoint or 'none'
                    message = (f'{error}; gave up after {node.recoveries} recoveries '
                               f'(max_recoveries {node.max_recoveries}); checkpoint: {kept}')
                    node.set_state('failed', message, ERROR)
                    self.log.fatal(message)
                    return EXIT_SIMS
                node.recoveries += 1
                message = (f'recovery {node.recoveries}/{node.max_recoveries}: reconnecting '
                           f'to the sims and resetting them (failed: {error.namespace})')
                node.set_state('recovering', message, WARN)
                self.log.warning(message)
            except TrainingDiverged as error:
                node.set_state('failed', str(error), ERROR)
                self.log.fatal(f'{error}')
                return EXIT_DIVERGED

        lines = [
            f'training finished: {result.env_steps} env steps, {result.updates} updates, '
            f'deploy-mode return (NFE = 1) {_format(result.final_return_deploy)}, best-of-N '
            f'{_format(result.final_return_best_of_n)}',
            f'policy: {result.policy}',
            f'checkpoint: {result.checkpoint}',
            f'learning curve: {result.curve}',
            f'outputs (TensorBoard, CSV): {result.output_dir}',
        ]
        for line in lines:
            self.log.info(line)
        print('\n'.join(lines), flush=True)
        node.set_state('finished', lines[0])
        return EXIT_OK


def main(args=None) -> int:
    # Our own SIGINT/SIGTERM handling (_Signals): the first signal must not shut the contexts
    # down under the trainer, which still has a checkpoint to write.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    logger = rclpy.logging.get_logger(NODE_NAME)
    signals = _Signals(logger)
    signals.install()
    node = executor = thread = None
    try:
        try:
            node = TrainerNode()
        except TrainerParameterError as error:
            logger.fatal(str(error))
            return EXIT_CONFIG
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread = threading.Thread(target=_spin, args=(executor,), name='trainer diagnostics',
                                  daemon=True)
        thread.start()
        return TrainingSession(node, signals).run()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        logger.fatal('unexpected error')
        import traceback

        traceback.print_exc()
        if node is not None:
            node.set_state('failed', 'unexpected error (see the log)', ERROR)
        return EXIT_ERROR
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if thread is not None:
            thread.join(timeout=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def _spin(executor) -> None:
    try:
        executor.spin()
    except (ExternalShutdownException, KeyboardInterrupt):
        pass


if __name__ == '__main__':
    sys.exit(main())
