"""Issue 13 check: sims on "another host" join a training run over DDS, are lost and recovered.

    python -m bench.bench_multi_host [--discovery static|subnet] [--total-steps 3000] [--out FILE]

Needs root and ``ip`` (iproute2). The other host is a network namespace this script makes, joined
by a veth pair with the two addresses of a private /30 that no route or address of this machine
uses (picked at start). The two discovery setups of docs/training.md, "Sims on more than one
machine":

- ``--discovery static`` (default; ``bench/results/multi_host.json``): for hosts that multicast
  cannot join. The trainer runs in the root namespace, the sim in the namespace;
  ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (nothing is multicast on this machine's own
  network) and ``ROS_STATIC_PEERS`` naming the other side's address, on both sides.
- ``--discovery subnet`` (``bench/results/multi_host_subnet.json``): one LAN. The trainer runs in
  a second namespace, so that the multicast stays on the veth pair; ``SUBNET``, no static peers.

Either way one ``ROS_DOMAIN_ID`` is private to the run and nothing but the veth pair and the
loopback interfaces carries its traffic.

0. Control (``--no-control`` skips it): the same sim and trainer with
   ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and no static peers must not find each other (the
   trainer exits 3 naming env_3 after ``connect_timeout_s``): the namespaces really separate them.
1. In the sims' namespace, a lockstep sim is started as docs/training.md starts a remote one
   (``python -m fpmd_ros.sim_node --ros-args -r __ns:=/env_3 -p task:=... -p mode:=lockstep``).
2. On the trainer's side, the project runner trains on it alone
   (``python -m fpmd_ros.runner train_sim num_envs:=0 remote_envs:=env_3 config:=...``): the
   package's train_sim.yaml with a short budget (``--total-steps``, ``--warmup-steps``).
   A listener next to it records the trainer's /diagnostics.
3. Once updates have begun (env steps >= ``--kill-at``), the sim is killed (SIGKILL). Checked: the
   trainer's log names env_3 and /diagnostics goes to ``recovering`` naming env_3.
4. The sim is started again in its namespace. Checked: the trainer reconnects (/diagnostics back
   to ``training``, recoveries 1, env steps beyond those at the kill) and finishes (exit 0).
Also recorded: the bytes the veth pair carried (the traffic did cross it), the namespace each
process ran in, and the times from start to training, from the kill to the log line and to the
diagnostics, and from the restart to training again.

Every wait is bounded (``--timeout`` for the whole check); the namespaces, the veth pair and every
process started here are removed on exit, also on SIGINT/SIGTERM. Namespaces left by an earlier
run killed with SIGKILL (named ``fpmd_bench_<pid>_...``, that pid gone) are removed at start.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.common import REPO, RESULTS, child_env, command_line

NAMESPACE_PREFIX = 'fpmd_bench_'
REMOTE_ENV = 'env_3'
TASK = 'InvertedPendulum-v5'
POLL_S = 0.2
STOP_TIMEOUT_S = 20.0
# Private /30s are drawn from here; one that overlaps an address or route of this machine is
# skipped, so the check cannot capture traffic meant for a real network.
POOL = ipaddress.ip_network('10.0.0.0/8')
CHECKS = ('no_discovery_no_connection', 'updates_before_the_kill', 'log_names_the_lost_sim',
          'diagnostics_name_the_lost_sim', 'recovered_after_restart', 'trained_to_the_end')


# --- the network namespace -----------------------------------------------------------------------

def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(['ip', *args], capture_output=True, text=True, check=check)


def networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to (all routing tables)."""
    used = []
    for line in ip('-4', '-o', 'addr', 'show').stdout.splitlines():
        match = re.search(r'inet (\S+)', line)
        if match:
            used.append(ipaddress.ip_interface(match.group(1)).network)
    for line in ip('-4', 'route', 'show', 'table', 'all').stdout.splitlines():
        destination = line.split()[0] if line.split() else ''
        if destination in ('default', 'broadcast', 'local', 'unreachable', 'blackhole'):
            destination = line.split()[1] if len(line.split()) > 1 else ''
        try:
            network = ipaddress.ip_network(destination, strict=False)
        except ValueError:
            continue
        if network.prefixlen > 0:  # a default route overlaps everything and routes elsewhere
            used.append(network)
    return used


def pick_subnet(used: list[ipaddress.IPv4Network], rng: random.Random,
                tries: int = 1000) -> ipaddress.IPv4Network:
    """A /30 of POOL that overlaps none of `used`."""
    for _ in range(tries):
        offset = rng.randrange(POOL.num_addresses // 4) * 4
        candidate = ipaddress.ip_network(f'{POOL.network_address + offset}/30')
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RuntimeError(f'no free /30 found in {POOL} (in use: {used})')


def remove_stale_namespaces() -> list[str]:
    """Namespaces of earlier runs of this script whose process is gone (killed with SIGKILL)."""
    removed = []
    for line in ip('netns', 'list', check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ''
        match = re.fullmatch(re.escape(NAMESPACE_PREFIX) + r'(\d+)_\w+', name)
        if match and not Path(f'/proc/{match.group(1)}').exists():
            ip('netns', 'del', name, check=False)
            removed.append(name)
    return removed


@dataclass
class Link:
    """Two sides joined by a veth pair over a private /30: the trainer's (the root namespace
    when `trainer_namespace` is None) and the sims' (a namespace made here)."""

    trainer_namespace: str | None
    sims_namespace: str
    trainer_if: str
    sims_if: str
    subnet: ipaddress.IPv4Network
    made: list[str] = field(default_factory=list)

    @property
    def trainer_address(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def sims_address(self) -> str:
        return str(self.subnet.network_address + 2)

    def _ip(self, namespace: str | None, *args: str) -> subprocess.CompletedProcess:
        return ip(*(('-n', namespace) if namespace else ()), *args)

    def create(self) -> None:
        prefix = f'/{self.subnet.prefixlen}'
        for namespace in (self.trainer_namespace, self.sims_namespace):
            if namespace:
                ip('netns', 'add', namespace)
                self.made.append(namespace)
                self._ip(namespace, 'link', 'set', 'lo', 'up')
        self._ip(self.trainer_namespace, 'link', 'add', self.trainer_if, 'type', 'veth', 'peer',
                 'name', self.sims_if, 'netns', self.sims_namespace)
        for namespace, name, address in ((self.trainer_namespace, self.trainer_if,
                                          self.trainer_address),
                                         (self.sims_namespace, self.sims_if, self.sims_address)):
            self._ip(namespace, 'addr', 'add', address + prefix, 'dev', name)
            self._ip(namespace, 'link', 'set', name, 'up')

    def exec_prefix(self, namespace: str | None) -> list[str]:
        """What runs a command in `namespace` (nothing for the root namespace)."""
        return ['ip', 'netns', 'exec', namespace] if namespace else []

    def trainer_side_bytes(self) -> dict[str, int]:
        """Bytes received and sent so far by the trainer's end of the veth pair."""
        stats = json.loads(self._ip(self.trainer_namespace, '-s', '-j', 'link', 'show', 'dev',
                                    self.trainer_if).stdout)[0]['stats64']
        return {'rx_bytes': stats['rx']['bytes'], 'tx_bytes': stats['tx']['bytes']}

    def remove(self) -> None:
        for namespace in reversed(self.made):
            ip('netns', 'del', namespace, check=False)  # takes its end of the veth pair along
        if not self.trainer_namespace:  # the root end, if the namespace was already gone
            ip('link', 'del', self.trainer_if, check=False)
        self.made.clear()

    def gone(self) -> bool:
        names = ip('netns', 'list', check=False).stdout.split()
        root_end = Path('/sys/class/net') / self.trainer_if
        return (not any(n in names for n in (self.trainer_namespace, self.sims_namespace) if n)
                and not root_end.exists())


def namespace_of(pid: int) -> str:
    """The named network namespace `pid` runs in ('' for the root namespace)."""
    return ip('netns', 'identify', str(pid), check=False).stdout.strip()


# --- processes -----------------------------------------------------------------------------------

class Process:
    """A child in a session of its own; its output is kept as (seconds since start, line)."""

    def __init__(self, name: str, command: list[str], env: dict, t0: float, log: Path):
        self.name, self.command, self.t0 = name, command, t0
        self.lines: list[tuple[float, str]] = []
        self._log = log.open('a')
        self.popen = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f'{name} output', daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append((time.monotonic() - self.t0, line.rstrip()))
            self._log.write(line)
            self._log.flush()

    def first_line(self, pattern: str, after: float = 0.0) -> tuple[float, str] | None:
        regex = re.compile(pattern)
        return next(((t, line) for t, line in list(self.lines)
                     if t >= after and regex.search(line)), None)

    def kill(self) -> None:
        """SIGKILL to its whole session: the process dies without a word, as a lost host."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        """SIGINT to its session, then SIGKILL after STOP_TIMEOUT_S."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGINT)
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
            except ProcessLookupError:
                pass
        self._reader.join(timeout=5.0)
        self._log.close()


# --- /diagnostics --------------------------------------------------------------------------------

@dataclass
class Sample:
    t: float
    state: str
    level: int
    message: str
    values: dict = field(default_factory=dict)


def listen_diagnostics() -> int:
    """``--listen-diagnostics``: print every trainer status on /diagnostics as a JSON line until
    SIGINT/SIGTERM (run next to the trainer, in its namespace)."""
    from diagnostic_msgs.msg import DiagnosticArray

    from fpmd_ros.participant import PrivateParticipant

    def on_message(msg) -> None:
        for status in msg.status:
            if status.name.endswith(': training'):
                print(json.dumps({'level': status.level[0], 'message': status.message,
                                  'values': {kv.key: kv.value for kv in status.values}}),
                      flush=True)

    participant = PrivateParticipant(f'bench_multi_host_{os.getpid()}')
    participant.node.create_subscription(DiagnosticArray, '/diagnostics', on_message, 50)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after rclpy.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.is_set():
            participant.executor.spin_once(timeout_sec=0.1)
    finally:
        participant.close()
    return 0


class DiagnosticsListener(Process):
    """The listener process; its lines as Samples (seconds since `t0`, at receipt)."""

    def samples(self) -> list[Sample]:
        found = []
        for t, line in list(self.lines):
            if line.startswith('{'):
                data = json.loads(line)
                found.append(Sample(t, data['values'].get('state', ''), data['level'],
                                    data['message'], data['values']))
        return found

    def first(self, predicate, after: float = 0.0) -> Sample | None:
        return next((s for s in self.samples() if s.t >= after and predicate(s)), None)


def env_steps(sample: Sample) -> int:
    return int(sample.values.get('env_steps') or 0)


# --- the check -----------------------------------------------------------------------------------

class CheckFailed(RuntimeError):
    pass


def wait_for(what: str, find, deadline: float, alive=None):
    """Poll `find()` until it returns something; CheckFailed naming `what` at the deadline or
    when `alive()` names a reason to stop."""
    while True:
        found = find()
        if found:
            return found
        reason = alive() if alive else None
        if reason:
            raise CheckFailed(f'{what}: {reason}')
        if time.monotonic() > deadline:
            raise CheckFailed(f'{what}: not seen within the time limit')
        time.sleep(POLL_S)


def training_config(args, path: Path) -> Path:
    """The package's train_sim.yaml with this check's short budget."""
    data = yaml.safe_load((REPO / 'config' / 'train_sim.yaml').read_text())
    data['task'] |= {'id': TASK, 'num_envs': 1}
    data['trainer'] |= {'total_steps': args.total_steps, 'warmup_steps': args.warmup_steps,
                        'eval_interval': args.total_steps, 'eval_episodes': 2,
                        'checkpoint_interval': args.total_steps, 'progress': False}
    path.write_text(yaml.safe_dump(data))
    return path


def readable(command: list[str]) -> str:
    """A command as recorded: `python` for this interpreter's path."""
    return shlex.join(['python' if arg == sys.executable else arg for arg in command])


def dds_environments(args, link: Link, domain: str) -> tuple[dict, dict]:
    """The DDS settings of the trainer's side and of the sims' side, as docs/training.md gives
    them."""
    if args.discovery == 'subnet':
        both = {'ROS_DOMAIN_ID': domain, 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'}
        return dict(both), dict(both)
    both = {'ROS_DOMAIN_ID': domain, 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    return ({**both, 'ROS_STATIC_PEERS': link.sims_address},
            {**both, 'ROS_STATIC_PEERS': link.trainer_address})


def run_check(args, link: Link, work: Path, processes: list[Process], t0: float,
              result: dict) -> None:
    domain = str(201 + os.getpid() % 30)  # tests use 1..100, the other benchmarks 77, 101..200
    trainer_dds, sims_dds = dds_environments(args, link, domain)
    result['dds'] = {'trainer side': trainer_dds, 'sims side': sims_dds}
    trainer_env = child_env(**trainer_dds, PYTHONUNBUFFERED='1')
    sims_env = child_env(**sims_dds, PYTHONUNBUFFERED='1')

    on_trainer_side = link.exec_prefix(link.trainer_namespace)
    sim_command = link.exec_prefix(link.sims_namespace) + [
        sys.executable, '-m', 'fpmd_ros.sim_node', '--ros-args', '-r', f'__ns:=/{REMOTE_ENV}',
        '-p', f'task:={TASK}', '-p', 'mode:=lockstep']
    config = training_config(args, work / 'train_sim_short.yaml')
    trainer_command = on_trainer_side + [
        sys.executable, '-m', 'fpmd_ros.runner', 'train_sim', 'num_envs:=0',
        f'remote_envs:={REMOTE_ENV}', f'config:={config}', f'output_dir:={work / "run"}',
        f'step_timeout_s:={args.step_timeout_s}', 'connect_timeout_s:=60.0',
        f'max_recoveries:={args.max_recoveries}']
    listener_command = on_trainer_side + [sys.executable, '-m', 'bench.bench_multi_host',
                                          '--listen-diagnostics']
    result['commands'] = {'sim': readable(sim_command), 'trainer': readable(trainer_command),
                          'config': yaml.safe_load(config.read_text())}
    deadline = t0 + args.timeout
    logs = work / 'logs'
    logs.mkdir()
    if args.control:
        run_control(args, sim_command, trainer_command, (sims_env, trainer_env), logs, t0,
                    result)
    bytes_before = link.trainer_side_bytes()

    listener = DiagnosticsListener('listener', listener_command, trainer_env, t0,
                                   logs / 'diagnostics.log')
    processes.append(listener)
    t_start = time.monotonic() - t0
    try:
        sim = Process('sim', sim_command, sims_env, t0, logs / 'sim.log')
        processes.append(sim)
        trainer = Process('trainer', trainer_command, trainer_env, t0, logs / 'trainer.log')
        processes.append(trainer)

        def trainer_alive() -> str | None:
            code = trainer.popen.poll()
            return None if code is None else f'the trainer exited with code {code}'

        checks, times = result['checks'], result['seconds']
        training = wait_for('the trainer training on the remote sim', lambda: listener.first(
            lambda s: s.state == 'training'), deadline, trainer_alive)
        times['start_to_training'] = round(training.t - t_start, 2)
        result['processes'] = {'sim namespace': namespace_of(sim.popen.pid) or '(root)',
                               'trainer namespace': namespace_of(trainer.popen.pid) or '(root)'}

        before = wait_for(f'env steps >= {args.kill_at}', lambda: listener.first(
            lambda s: s.state == 'training' and env_steps(s) >= args.kill_at),
            deadline, trainer_alive)
        sim.kill()
        t_kill = time.monotonic() - t0
        last = listener.samples()[-1]
        steps_at_kill = env_steps(last)
        result['env_steps_at_kill'] = steps_at_kill
        result['updates_at_kill'] = int(last.values.get('updates') or 0)
        checks['updates_before_the_kill'] = int(before.values.get('updates') or 0) > 0

        logged = wait_for(f'the trainer log naming {REMOTE_ENV}', lambda: trainer.first_line(
            rf'training interrupted: .*\b{REMOTE_ENV}\b', after=t_kill), deadline, trainer_alive)
        times['kill_to_log'] = round(logged[0] - t_kill, 2)
        result['log_line'] = logged[1]
        checks['log_names_the_lost_sim'] = True
        diagnosed = wait_for(f'/diagnostics naming {REMOTE_ENV}', lambda: listener.first(
            lambda s: s.state == 'recovering' and REMOTE_ENV in s.message, after=t_kill),
            deadline, trainer_alive)
        times['kill_to_diagnostics'] = round(diagnosed.t - t_kill, 2)
        result['diagnostics_message'] = {'level': diagnosed.level, 'message': diagnosed.message}
        checks['diagnostics_name_the_lost_sim'] = True

        restarted = Process('sim (restarted)', sim_command, sims_env, t0, logs / 'sim.log')
        processes.append(restarted)
        t_restart = time.monotonic() - t0
        again = wait_for('training again after the restart', lambda: listener.first(
            lambda s: (s.state == 'training' and s.values.get('recoveries', '').startswith('1/')
                       and env_steps(s) > steps_at_kill), after=t_restart),
            deadline, trainer_alive)
        times['restart_to_training'] = round(again.t - t_restart, 2)
        checks['recovered_after_restart'] = True

        wait_for('the trainer to finish', lambda: trainer.popen.poll() is not None, deadline)
        code = trainer.popen.returncode
        finished = trainer.first_line(r'training finished: ')
        result['trainer_exit_code'] = code
        result['final_line'] = finished[1] if finished else None
        checks['trained_to_the_end'] = code == 0 and finished is not None
        times['total'] = round(time.monotonic() - t0, 2)
        final = wait_for('the final /diagnostics', lambda: listener.first(
            lambda s: s.state == 'finished'), time.monotonic() + 5.0)
        result['diagnostics_final'] = {k: final.values.get(k) for k in
                                       ('env_steps', 'updates', 'recoveries', 'sims')}
    finally:
        after = link.trainer_side_bytes() if link.made else bytes_before
        result['veth_bytes_trainer_side'] = {k: after[k] - bytes_before[k] for k in after}


def run_control(args, sim_command: list[str], trainer_command: list[str], envs: tuple,
                logs: Path, t0: float, result: dict) -> None:
    """The same sim and trainer with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and no static
    peers: the namespaces must keep them apart (the trainer exits 3 naming env_3, after
    connect_timeout_s), else the main check would not show that the setup is what joins them."""
    from fpmd_ros.trainer_node import EXIT_SIMS

    sims_env, trainer_env = ({**{k: v for k, v in env.items() if k != 'ROS_STATIC_PEERS'},
                              'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'} for env in envs)
    command = [arg.replace('connect_timeout_s:=60.0',
                           f'connect_timeout_s:={args.control_connect_timeout_s}')
               for arg in trainer_command] + ['max_recoveries:=0']
    sim = Process('control sim', sim_command, sims_env, t0, logs / 'control_sim.log')
    trainer = Process('control trainer', command, trainer_env, t0, logs / 'control_trainer.log')
    try:
        started = time.monotonic()
        trainer.popen.wait(timeout=args.control_connect_timeout_s + 120.0)
        line = trainer.first_line(rf'not found after .*missing sims: {REMOTE_ENV}\b')
        result['control_without_discovery'] = {
            'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'ROS_STATIC_PEERS': None,
            'trainer_exit_code': trainer.popen.returncode,
            'seconds': round(time.monotonic() - started, 2),
            'log_line': line[1] if line else None}
        result['checks']['no_discovery_no_connection'] = (
            trainer.popen.returncode == EXIT_SIMS and line is not None)
    except subprocess.TimeoutExpired:
        result['checks']['no_discovery_no_connection'] = False
    finally:
        trainer.stop()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--discovery', choices=('static', 'subnet'), default='static',
                        help='static: ROS_STATIC_PEERS, trainer in the root namespace; subnet: '
                             'ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, trainer in a namespace too')
    parser.add_argument('--total-steps', type=int, default=3000)
    parser.add_argument('--warmup-steps', type=int, default=1000)
    parser.add_argument('--kill-at', type=int, default=1500,
                        help='env steps at which the remote sim is killed (after the warm-up)')
    parser.add_argument('--step-timeout-s', type=float, default=5.0)
    parser.add_argument('--max-recoveries', type=int, default=2)
    parser.add_argument('--timeout', type=float, default=900.0,
                        help='seconds for the whole check')
    parser.add_argument('--control', action=argparse.BooleanOptionalAction, default=True,
                        help='first run the control without discovery')
    parser.add_argument('--control-connect-timeout-s', type=float, default=10.0)
    parser.add_argument('--seed', type=int, default=None, help='picks the /30 (default: random)')
    parser.add_argument('--keep-logs', type=Path, default=None,
                        help='copy the logs of the processes to this folder')
    parser.add_argument('--out', type=Path, default=None,
                        help='default: bench/results/multi_host.json (static), '
                             'multi_host_subnet.json (subnet)')
    parser.add_argument('--listen-diagnostics', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen_diagnostics:
        return listen_diagnostics()
    if not args.warmup_steps < args.kill_at < args.total_steps:
        parser.error('expected --warmup-steps < --kill-at < --total-steps')
    if os.geteuid() != 0:
        parser.error('needs root (it makes network namespaces and a veth pair)')
    if shutil.which('ip') is None:
        parser.error("needs 'ip' (apt-get install iproute2)")
    out = args.out or RESULTS / ('multi_host.json' if args.discovery == 'static'
                                 else 'multi_host_subnet.json')

    t0 = time.monotonic()
    pid = os.getpid()
    stale = remove_stale_namespaces()
    link = Link(f'{NAMESPACE_PREFIX}{pid}_trainer' if args.discovery == 'subnet' else None,
                f'{NAMESPACE_PREFIX}{pid}_sims', f'fbt{pid}'[:15], f'fbs{pid}'[:15],
                pick_subnet(networks_in_use(), random.Random(args.seed)))
    processes: list[Process] = []
    result: dict = {'pass': False, 'checks': {}, 'seconds': {}, 'discovery': args.discovery,
                    'task': TASK, 'total_steps': args.total_steps,
                    'warmup_steps': args.warmup_steps, 'kill_at': args.kill_at,
                    'remote_env': REMOTE_ENV, 'command': command_line(),
                    'stale_namespaces_removed': stale}

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix='fpmd_multi_host_'))
    try:
        link.create()
        result['link'] = {
            'subnet': str(link.subnet),
            'trainer side': f'{link.trainer_namespace or "root namespace"}: '
                            f'{link.trainer_if} {link.trainer_address}',
            'sims side': f'{link.sims_namespace}: {link.sims_if} {link.sims_address}'}
        run_check(args, link, work, processes, t0, result)
        expected = set(CHECKS) - (set() if args.control else {'no_discovery_no_connection'})
        result['pass'] = (set(result['checks']) == expected
                          and all(result['checks'].values()))
    except (CheckFailed, KeyboardInterrupt) as error:
        result['error'] = f'{type(error).__name__}: {error}'
    finally:
        for process in reversed(processes):
            process.stop()
        link.remove()
        result['cleaned_up'] = {'namespaces_and_veth_gone': link.gone(),
                                'processes_gone': all(p.popen.poll() is not None
                                                      for p in processes)}
        if args.keep_logs and (work / 'logs').is_dir():
            shutil.copytree(work / 'logs', args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    result['machine'] = {'cores': os.cpu_count(), 'python': platform.python_version(),
                         'load_avg': os.getloadavg(), 'kernel': platform.release()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    print(json.dumps(result, indent=2))
    print(f"{'PASS' if result['pass'] else 'FAIL'}; written: {out}")
    return 0 if result['pass'] else 1


if __name__ == '__main__':
    sys.exit(main())
