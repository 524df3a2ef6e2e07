"""Run a node graph of :mod:`fpmd_ros.graph` without the ROS 2 CLI.

    python -m fpmd_ros.runner train_sim [name:=value ...]   # what ./fpmd train runs
    python -m fpmd_ros.runner deploy policy:=runs/fpmd/policy.onnx sim:=true
    python -m fpmd_ros.runner train_sim --show-args         # the arguments, their defaults

The arguments are the launch files' (``ros2 launch fpmd_ros train_sim.launch.py`` takes the same
``name:=value`` pairs) and the nodes are the same :class:`~fpmd_ros.graph.NodeSpec` list, so the
two ways of starting a graph cannot drift apart. Each node runs as its own process::

    python -m fpmd_ros.<module> --ros-args -r __node:=<name> -r __ns:=/<namespace>
        -p <parameter>:=<value> ... -r <from>:=<to> ...

with every parameter value written in its ROS type (doubles always with a decimal point,
strings quoted, string arrays as ``['a','b']``).

* Lifecycle nodes are taken through ``configure`` then ``activate`` with their
  ``/<namespace>/<name>/change_state`` service once, at start-up (later transitions, e.g.
  ``ros2 lifecycle set``, are the user's); a refused transition stops the graph (exit code 1),
  as ``deploy.launch.py`` does. A transition left unanswered for ``REPLY_GRACE_S`` is checked
  with the node's ``get_state``, again every ``REPLY_GRACE_S`` until the deadline (a lost
  request is sent once more, a lost reply of a done transition counts as done).
* When a node marked ``ends_launch`` (the trainer, the policy_controller) exits, everything
  stops and the runner exits with that node's exit code (0 also after Ctrl-C once the trainer
  wrote its checkpoint). Ctrl-C / SIGTERM stop everything too.
* Stopping: SIGINT first to the nodes that consume the others (``ends_launch`` and lifecycle
  nodes: the trainer writes its checkpoint while the sims still answer), then to the rest;
  SIGTERM after ``stop_timeout_s``, SIGKILL after ``kill_timeout_s`` more. A second Ctrl-C
  skips the waiting.
* Nodes with ``respawn`` (the training sims) are restarted after ``respawn_delay_s`` when they
  die, so the trainer can recover; not after exit code 2 (invalid parameters), at most
  ``MAX_RESPAWNS`` times.
* Children run in their own sessions (the terminal's Ctrl-C reaches only the runner, which stops
  them in order) and receive SIGTERM if the runner dies.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from fpmd_ros.graph import (
    CONTROLLER_EXECUTABLE,
    GRAPHS,
    SIM_EXECUTABLE,
    TRAINER_EXECUTABLE,
    GraphArgumentError,
    GraphError,
    LaunchArgument,
    NodeSpec,
    ending_node_exited,
)
from fpmd_ros.interface import EXIT_ERROR, EXIT_INVALID_PARAMETERS, EXIT_OK
from fpmd_ros.participant import PrivateParticipant

# Console script (NodeSpec.executable) -> module run with `python -m` (setup.py CONSOLE_SCRIPTS).
MODULES = {
    SIM_EXECUTABLE: 'fpmd_ros.sim_node',
    TRAINER_EXECUTABLE: 'fpmd_ros.trainer_node',
    CONTROLLER_EXECUTABLE: 'fpmd_ros.controller_node',
}
STOP_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 5.0
LIFECYCLE_TIMEOUT_S = 60.0
# How long a transition may stay unanswered before the runner asks the node for its state.
REPLY_GRACE_S = 5.0
# The (start, goal) lifecycle_msgs/State ids of the transitions the runner makes.
TRANSITION_STATES = {1: (1, 2),  # configure: unconfigured -> inactive
                     3: (2, 3)}  # activate: inactive -> active
MAX_RESPAWNS = 10
POLL_S = 0.1

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _resolve_prctl():
    if not sys.platform.startswith('linux'):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
        return None


_PRCTL = _resolve_prctl()
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """Runs in the child before exec: SIGTERM when the runner dies, even by SIGKILL."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


# --- command lines -------------------------------------------------------------------------------

def format_parameter(value) -> str:
    """A parameter value as ``-p name:=<this>`` must spell it to keep its ROS type."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return '.nan'
        if math.isinf(value):
            return '.inf' if value > 0 else '-.inf'
        text = repr(value)
        mantissa, _, exponent = text.partition('e')
        if '.' not in mantissa:
            mantissa += '.0'
        return f'{mantissa}e{exponent}' if exponent else mantissa
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError('an empty array has no type on the command line')
        kinds = {bool if isinstance(v, bool) else type(v) for v in value}
        if kinds == {int, float}:
            value = [float(v) for v in value]
        elif len(kinds) != 1 or not kinds <= {bool, int, float, str}:
            raise TypeError(f'array parameter {value!r}: expected one scalar type')
        return '[' + ','.join(format_parameter(v) for v in value) + ']'
    raise TypeError(f'unsupported parameter value {value!r} ({type(value).__name__})')


def node_command(spec: NodeSpec, python: str = sys.executable) -> list[str]:
    """The command line that runs ``spec`` as a process."""
    try:
        module = MODULES[spec.executable]
    except KeyError:
        raise ValueError(f'no module known for executable {spec.executable!r}; expected one '
                         f'of: {", ".join(MODULES)}') from None
    command = [python, '-m', module, '--ros-args', '-r', f'__node:={spec.name}']
    namespace = spec.namespace.strip('/')
    if namespace:
        command += ['-r', f'__ns:=/{namespace}']
    for path in spec.parameter_files:
        command += ['--params-file', path]
    for name, value in spec.parameters.items():
        if isinstance(value, (list, tuple)) and not value:
            continue  # an empty array cannot be typed on the command line: the node's default
        command += ['-p', f'{name}:={format_parameter(value)}']
    for source, target in spec.remappings:
        command += ['-r', f'{source}:={target}']
    return command


def child_environment(base: dict | None = None) -> dict:
    """The runner's environment, with this fpmd_ros importable and unbuffered output."""
    env = dict(os.environ if base is None else base)
    paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    if _PACKAGE_ROOT not in paths:
        paths.insert(0, _PACKAGE_ROOT)
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env['PYTHONUNBUFFERED'] = '1'
    return env


# --- lifecycle -----------------------------------------------------------------------------------

class _LifecycleDriver(PrivateParticipant):
    """Calls ``change_state`` services from a private rclpy context (created on first use).

    A node answers a transition within a second or so. Silence for ``reply_grace_s`` means a
    lost message (Fast DDS can match a service's request side before its reply side), so the
    driver asks the node's ``get_state``: in the transition's goal state it has done it; back in
    its start state it never got the request, or refused it unheard, so the request goes once
    more; in between it is still at work, and with no answer to ``get_state`` either nothing is
    known. In those two cases the driver waits another ``reply_grace_s`` and asks again, so that
    a lost reply costs one grace more, not the whole deadline."""

    def __init__(self, reply_grace_s: float = REPLY_GRACE_S, log=None):
        super().__init__(f'fpmd_runner_{os.getpid()}')
        self.reply_grace_s = reply_grace_s
        self.log = log or (lambda message: None)
        self._clients = {}

    def _client(self, service_type, service: str):
        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = self.node.create_client(service_type, service)
        return client

    def _call(self, client, request):
        return client.call_async(request)

    def _spin_until_done(self, future, until: float, keep_going) -> str | None:
        """Spins until `future` is done or `until` passes; a reason only if told to stop."""
        while not future.done() and time.monotonic() < until:
            reason = keep_going()
            if reason:
                return reason
            self.executor.spin_once(timeout_sec=POLL_S)
        return None

    def _state_id(self, node_name: str, deadline: float, keep_going) -> int | None:
        """The node's lifecycle state id from its ``get_state``, None if it does not answer."""
        from lifecycle_msgs.srv import GetState

        client = self._client(GetState, f'{node_name}/get_state')
        if not client.service_is_ready():
            return None
        future = self._call(client, GetState.Request())
        self._spin_until_done(future, min(deadline, time.monotonic() + self.reply_grace_s),
                              keep_going)
        if not future.done():
            future.cancel()
            return None
        return future.result().current_state.id if future.exception() is None else None

    def change_state(self, node_name: str, transition_id: int, label: str, deadline: float,
                     keep_going) -> str | None:
        """None on success, else why the transition did not happen."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        service = f'{node_name}/change_state'
        client = self._client(ChangeState, service)
        # made now, so that it is discovered by the time it may be needed
        self._client(GetState, f'{node_name}/get_state')
        while not client.service_is_ready():
            reason = keep_going()
            if reason:
                return reason
            if time.monotonic() > deadline:
                return f'service {service} did not appear in time'
            self.executor.spin_once(timeout_sec=POLL_S)
        request = ChangeState.Request(transition=Transition(id=transition_id))
        start, goal = TRANSITION_STATES[transition_id]
        future = self._call(client, request)
        asked_again = False
        while True:
            reason = self._spin_until_done(
                future, min(deadline, time.monotonic() + self.reply_grace_s), keep_going)
            if future.done() or reason or time.monotonic() >= deadline:
                break
            state = self._state_id(node_name, deadline, keep_going)
            if state == goal:
                future.cancel()
                self.log(f'{service} ({label}): no reply, but {node_name} is in the state it '
                         'leads to')
                return None
            if state == start and not asked_again:
                future.cancel()
                self.log(f'{service} ({label}): no reply, {node_name} still in the state it '
                         'starts from; asking once more')
                future = self._call(client, request)
                asked_again = True
        if not future.done():
            future.cancel()
            return reason or f'{service} ({label}) not answered in time'
        if future.exception() is not None:
            return f'{service} ({label}) failed: {future.exception()!r}'
        if not future.result().success:
            return f'{label} refused by {node_name} (see its log)'
        return None


# --- the runner ----------------------------------------------------------------------------------

@dataclass
class _Process:
    spec: NodeSpec
    command: list[str]
    popen: subprocess.Popen | None = None
    returncode: int | None = None
    respawns: int = 0
    respawn_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Runner:
    """Starts the specs in order, supervises them, stops them; ``run()`` is the exit code."""

    def __init__(self, specs: list[NodeSpec], *, python: str = sys.executable,
                 stop_timeout_s: float = STOP_TIMEOUT_S, kill_timeout_s: float = KILL_TIMEOUT_S,
                 lifecycle_timeout_s: float = LIFECYCLE_TIMEOUT_S, env: dict | None = None):
        self.processes = [_Process(spec, node_command(spec, python)) for spec in specs]
        self.stop_timeout_s = stop_timeout_s
        self.kill_timeout_s = kill_timeout_s
        self.lifecycle_timeout_s = lifecycle_timeout_s
        self.env = child_environment(env)
        self._stop_requested = False
        self._hurry = False
        self._lifecycle: _LifecycleDriver | None = None

    @staticmethod
    def log(message: str) -> None:
        print(f'fpmd runner: {message}', file=sys.stderr, flush=True)

    # signals ------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._stop_requested:
            self._hurry = True
            self.log(f'{signal.Signals(signum).name} again: stopping everything now')
        else:
            self._stop_requested = True
            self.log(f'{signal.Signals(signum).name}: stopping (again to hurry)')

    def request_stop(self) -> None:
        self._stop_requested = True

    # processes ----------------------------------------------------------------------------------
    def _start(self, process: _Process) -> None:
        process.popen = subprocess.Popen(
            process.command, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_child_setup if _PRCTL is not None else None)
        process.returncode = None
        process.respawn_at = None
        self.log(f'started {process.spec.fully_qualified_name} (pid {process.popen.pid}): '
                 f'{" ".join(process.command[1:])}')

    def _configure_and_activate(self, process: _Process) -> str | None:
        from lifecycle_msgs.msg import Transition

        if self._lifecycle is None:
            self._lifecycle = _LifecycleDriver(log=self.log)
        name = process.spec.fully_qualified_name

        def keep_going() -> str | None:
            if self._stop_requested:
                return 'stop requested'
            if not process.alive:
                return f'{name} exited with code {process.popen.poll()} before it was active'
            return None

        deadline = time.monotonic() + self.lifecycle_timeout_s
        for transition, label in ((Transition.TRANSITION_CONFIGURE, 'configure'),
                                  (Transition.TRANSITION_ACTIVATE, 'activate')):
            reason = self._lifecycle.change_state(name, transition, label, deadline, keep_going)
            if reason:
                return reason
            self.log(f'{name}: {label} done')
        return None

    def _signal(self, processes, sig) -> None:
        for process in processes:
            if process.alive:
                try:
                    process.popen.send_signal(sig)
                except ProcessLookupError:  # pragma: no cover - exited meanwhile
                    pass

    def _wait(self, processes, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while any(p.alive for p in processes):
            if self._hurry or time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _stop(self, processes) -> None:
        processes = [p for p in processes if p.alive]
        if not processes:
            return
        self._signal(processes, signal.SIGINT)
        if not self._wait(processes, self.stop_timeout_s):
            late = [p for p in processes if p.alive]
            if late and not self._hurry:
                self.log('still running after SIGINT, sending SIGTERM: ' + ', '.join(
                    p.spec.fully_qualified_name for p in late))
            self._signal(late, signal.SIGTERM)
            if not self._wait(late, self.kill_timeout_s):
                for process in late:
                    if process.alive:
                        self.log(f'killing {process.spec.fully_qualified_name}')
                        process.popen.kill()
        for process in processes:
            process.popen.wait()
            process.returncode = process.popen.returncode
            self.log(f'{process.spec.fully_qualified_name} stopped (exit code '
                     f'{process.returncode})')

    def stop_all(self) -> None:
        first = [p for p in self.processes if p.spec.ends_launch or p.spec.lifecycle]
        self._stop(first)
        self._stop([p for p in self.processes if p not in first])

    def _check_exits(self) -> int | None:
        """Handles exits and respawns; an exit code once the graph is over, else None."""
        now = time.monotonic()
        for process in self.processes:
            if process.popen is None or process.respawn_at is not None:
                if process.respawn_at is not None and now >= process.respawn_at:
                    process.respawns += 1
                    self._start(process)
                continue
            if process.returncode is not None or process.alive:
                continue
            process.returncode = process.popen.returncode
            spec = process.spec
            self.log(f'{spec.fully_qualified_name} exited with code {process.returncode}')
            if spec.ends_launch:
                try:  # the launch file's rule: only exit code 0 ends the graph cleanly
                    ending_node_exited(spec, process.returncode)
                except GraphError as failure:
                    self.log(str(failure))
                return _exit_code(process.returncode)
            if (spec.respawn and process.returncode != EXIT_INVALID_PARAMETERS
                    and process.respawns < MAX_RESPAWNS):
                self.log(f'respawning {spec.fully_qualified_name} in {spec.respawn_delay_s:g} s '
                         f'({process.respawns + 1}/{MAX_RESPAWNS})')
                process.respawn_at = now + spec.respawn_delay_s
        if all(p.returncode is not None and p.respawn_at is None for p in self.processes):
            codes = [_exit_code(p.returncode) for p in self.processes]
            return next((c for c in codes if c), EXIT_OK)
        return None

    def run(self) -> int:
        handlers = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: the caller stops us with request_stop()
            handlers = {}
        code: int | None = None
        try:
            for process in self.processes:
                if self._stop_requested:
                    break
                self._start(process)
            for process in self.processes:
                if process.spec.lifecycle and process.popen is not None:
                    reason = self._configure_and_activate(process)
                    if reason and not self._stop_requested:
                        self.log(f'{process.spec.fully_qualified_name}: {reason}; stopping')
                        code = EXIT_ERROR
                        break
            while code is None and not self._stop_requested:
                code = self._check_exits()
                if code is None:
                    time.sleep(POLL_S)
        finally:
            self.stop_all()
            if self._lifecycle is not None:
                self._lifecycle.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if code is None:  # stopped by a signal: the code of the node that ends the graph, if any
            enders = [p for p in self.processes if p.spec.ends_launch and p.popen is not None]
            code = _exit_code(enders[0].popen.wait()) if enders else EXIT_OK
        return code


# --- command line --------------------------------------------------------------------------------

def _describe(name: str, table: tuple[LaunchArgument, ...]) -> str:
    lines = [f'arguments of {name} (name:=value):']
    for row in table:
        lines.append(f"  {row.name} (default: '{row.default}')\n      {row.description}")
    return '\n'.join(lines)


def usage() -> str:
    return ('usage: python -m fpmd_ros.runner {' + '|'.join(GRAPHS) + '} [name:=value ...]\n'
            '       python -m fpmd_ros.runner {' + '|'.join(GRAPHS) + '} --show-args')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(usage(), file=sys.stderr if not argv else sys.stdout)
        return EXIT_OK if argv else EXIT_INVALID_PARAMETERS
    graph = argv[0]
    if graph not in GRAPHS:
        print(f'{usage()}\nfpmd runner: unknown graph {graph!r}; expected one of: '
              f'{", ".join(GRAPHS)}', file=sys.stderr)
        return EXIT_INVALID_PARAMETERS
    table, build = GRAPHS[graph]
    if any(a in ('-h', '--help', '--show-args', '-s') for a in argv[1:]):
        print(_describe(graph, table))
        return EXIT_OK
    args = {}
    for item in argv[1:]:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            print(f'fpmd runner: {item!r}: expected name:=value ({graph} --show-args lists the '
                  'arguments)', file=sys.stderr)
            return EXIT_INVALID_PARAMETERS
        args[name] = value
    try:
        specs = build(args)
    except GraphArgumentError as error:
        print(f'fpmd runner: {graph}: {error}', file=sys.stderr)
        return EXIT_INVALID_PARAMETERS
    return Runner(specs).run()


if __name__ == '__main__':
    sys.exit(main())
