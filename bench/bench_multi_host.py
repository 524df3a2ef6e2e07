"""Issue 13 check: a sim on "another host" joins a training run over DDS, is lost and recovered.

    python -m bench.bench_multi_host [--total-steps 3000] [--out bench/results/multi_host.json]

Needs root and ``ip`` (iproute2): the other host is a network namespace this script makes, joined
to the root namespace by a veth pair with two addresses of a private /30 that no route or address
of this machine uses (picked at start). Nothing else is touched: the DDS traffic runs over that
veth pair and loopback only, discovery as the README's "More than one machine" describes for hosts
that multicast cannot join: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (no multicast on the
machine's own network) and ``ROS_STATIC_PEERS`` naming the other side's address, on both sides,
with one ``ROS_DOMAIN_ID`` private to this run.

0. Control (``--no-control`` skips it): the same sim and trainer without ``ROS_STATIC_PEERS``
   must not find each other (the trainer exits 3 naming env_3 after ``connect_timeout_s``), so
   the namespace really separates them and the static peers are what joins them below.
1. In the namespace, a lockstep sim is started as the README starts a remote one
   (``python -m fpmd_ros.sim_node --ros-args -r __ns:=/env_3 -p task:=... -p mode:=lockstep``).
2. In the root namespace, the project runner trains on it alone
   (``python -m fpmd_ros.runner train_sim num_envs:=0 remote_envs:=env_3 config:=...``): the
   package's train_sim.yaml with a short budget (``--total-steps``, ``--warmup-steps``).
3. Once updates have begun (env steps >= ``--kill-at``), the sim is killed (SIGKILL). Checked: the
   trainer's log names env_3 and /diagnostics (read here) goes to ``recovering`` naming env_3.
4. The sim is started again in the namespace. Checked: the trainer reconnects (/diagnostics back
   to ``training``, recoveries 1, env steps beyond those at the kill) and finishes (exit 0).
Also recorded: the bytes the veth pair carried (so the traffic did cross it), the namespace each
process ran in, and the times from start to training, from the kill to the log line and to the
diagnostics, and from the restart to training again.

Every wait is bounded (``--timeout`` for the whole check); the namespace, the veth pair and every
process started here are removed on exit, also on SIGINT/SIGTERM. Namespaces left by an earlier
run killed with SIGKILL (named ``fpmd_bench_<pid>``, that pid gone) are removed at start.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import random
import re
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

from bench.common import REPO, RESULTS, child_env

NAMESPACE_PREFIX = 'fpmd_bench_'
REMOTE_ENV = 'env_3'
TASK = 'InvertedPendulum-v5'
POLL_S = 0.2
STOP_TIMEOUT_S = 20.0
# Private /30s are drawn from here; one that overlaps an address or route of this machine is
# skipped, so the check cannot capture traffic meant for a real network.
POOL = ipaddress.ip_network('10.0.0.0/8')
CHECKS = ('no_static_peers_no_connection', 'updates_before_the_kill', 'log_names_the_lost_sim',
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
        match = re.fullmatch(re.escape(NAMESPACE_PREFIX) + r'(\d+)', name)
        if match and not Path(f'/proc/{match.group(1)}').exists():
            ip('netns', 'del', name, check=False)
            removed.append(name)
    return removed


@dataclass
class Link:
    """A network namespace joined to the root namespace by a veth pair over a private /30."""

    namespace: str
    host_if: str
    far_if: str
    subnet: ipaddress.IPv4Network
    created: bool = False

    @property
    def host_address(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def far_address(self) -> str:
        return str(self.subnet.network_address + 2)

    def create(self) -> None:
        prefix = f'/{self.subnet.prefixlen}'
        ip('netns', 'add', self.namespace)
        self.created = True
        ip('link', 'add', self.host_if, 'type', 'veth', 'peer', 'name', self.far_if,
           'netns', self.namespace)
        ip('addr', 'add', self.host_address + prefix, 'dev', self.host_if)
        ip('link', 'set', self.host_if, 'up')
        for args in (('addr', 'add', self.far_address + prefix, 'dev', self.far_if),
                     ('link', 'set', self.far_if, 'up'), ('link', 'set', 'lo', 'up')):
            ip('-n', self.namespace, *args)

    def host_bytes(self) -> dict[str, int]:
        stats = Path('/sys/class/net') / self.host_if / 'statistics'
        return {name: int((stats / name).read_text()) for name in ('rx_bytes', 'tx_bytes')}

    def remove(self) -> None:
        if not self.created:
            return
        ip('netns', 'del', self.namespace, check=False)  # takes the veth pair with it
        ip('link', 'del', self.host_if, check=False)  # if the namespace was already gone
        self.created = False


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


class DiagnosticsListener:
    """Every trainer status on /diagnostics, as Samples (seconds since `t0`)."""

    def __init__(self, t0: float):
        from diagnostic_msgs.msg import DiagnosticArray

        from fpmd_ros.participant import PrivateParticipant

        self.t0 = t0
        self.samples: list[Sample] = []
        self._participant = PrivateParticipant(f'bench_multi_host_{os.getpid()}')
        self._participant.node.create_subscription(DiagnosticArray, '/diagnostics',
                                                   self._on_message, 50)
        self._running = True
        self._thread = threading.Thread(target=self._spin, name='diagnostics', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self._participant.executor.spin_once(timeout_sec=0.1)

    def _on_message(self, msg) -> None:
        for status in msg.status:
            if not status.name.endswith(': training'):
                continue
            values = {kv.key: kv.value for kv in status.values}
            self.samples.append(Sample(time.monotonic() - self.t0, values.get('state', ''),
                                       status.level[0], status.message, values))

    def first(self, predicate, after: float = 0.0) -> Sample | None:
        return next((s for s in list(self.samples) if s.t >= after and predicate(s)), None)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5.0)
        self._participant.close()


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


def run_check(args, link: Link, work: Path, processes: list[Process], t0: float,
              result: dict) -> None:
    domain = str(201 + os.getpid() % 30)  # tests use 1..100, the other benchmarks 77, 101..200
    common = {'ROS_DOMAIN_ID': domain, 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    host_env = child_env(**common, ROS_STATIC_PEERS=link.far_address, PYTHONUNBUFFERED='1')
    far_env = child_env(**common, ROS_STATIC_PEERS=link.host_address, PYTHONUNBUFFERED='1')
    os.environ.update(common, ROS_STATIC_PEERS=link.far_address)  # this process's listener
    result['dds'] = {'ROS_DOMAIN_ID': domain, 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                     'ROS_STATIC_PEERS (root namespace)': link.far_address,
                     'ROS_STATIC_PEERS (sim namespace)': link.host_address}

    sim_command = ['ip', 'netns', 'exec', link.namespace, sys.executable, '-m',
                   'fpmd_ros.sim_node', '--ros-args', '-r', f'__ns:=/{REMOTE_ENV}',
                   '-p', f'task:={TASK}', '-p', 'mode:=lockstep']
    config = training_config(args, work / 'train_sim_short.yaml')
    trainer_command = [sys.executable, '-m', 'fpmd_ros.runner', 'train_sim', 'num_envs:=0',
                       f'remote_envs:={REMOTE_ENV}', f'config:={config}',
                       f'output_dir:={work / "run"}', f'step_timeout_s:={args.step_timeout_s}',
                       'connect_timeout_s:=60.0', f'max_recoveries:={args.max_recoveries}']
    result['commands'] = {'sim (in the namespace)': ' '.join(sim_command),
                          'trainer (root namespace)': ' '.join(trainer_command),
                          'config': yaml.safe_load(config.read_text())}
    deadline = t0 + args.timeout
    logs = work / 'logs'
    logs.mkdir()
    if args.control:
        run_control(args, sim_command, trainer_command, (far_env, host_env), logs, t0, result)
    bytes_before = link.host_bytes()

    listener = DiagnosticsListener(t0)
    t_start = time.monotonic() - t0
    try:
        sim = Process('sim', sim_command, far_env, t0, logs / 'sim.log')
        processes.append(sim)
        trainer = Process('trainer', trainer_command, host_env, t0, logs / 'trainer.log')
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
        steps_at_kill = env_steps(listener.samples[-1])
        result['env_steps_at_kill'] = steps_at_kill
        result['updates_at_kill'] = int(listener.samples[-1].values.get('updates') or 0)
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

        restarted = Process('sim (restarted)', sim_command, far_env, t0, logs / 'sim.log')
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
        last = listener.first(lambda s: s.state == 'finished')
        if last:
            result['diagnostics_final'] = {k: last.values.get(k) for k in
                                           ('env_steps', 'updates', 'recoveries', 'sims')}
    finally:
        listener.close()
        after = link.host_bytes() if link.created else bytes_before
        result['veth_bytes'] = {k: after[k] - bytes_before[k] for k in after}


def run_control(args, sim_command: list[str], trainer_command: list[str], envs: tuple,
                logs: Path, t0: float, result: dict) -> None:
    """The same sim and trainer without ROS_STATIC_PEERS on either side: the namespace must keep
    them apart (the trainer exits 3 naming env_3, after connect_timeout_s), else the main check
    would not show that the static peers are what joins the hosts."""
    from fpmd_ros.trainer_node import EXIT_SIMS

    far_env, host_env = ({k: v for k, v in env.items() if k != 'ROS_STATIC_PEERS'}
                         for env in envs)
    command = [arg.replace('connect_timeout_s:=60.0',
                           f'connect_timeout_s:={args.control_connect_timeout_s}')
               for arg in trainer_command] + ['max_recoveries:=0']
    sim = Process('control sim', sim_command, far_env, t0, logs / 'control_sim.log')
    trainer = Process('control trainer', command, host_env, t0, logs / 'control_trainer.log')
    try:
        started = time.monotonic()
        trainer.popen.wait(timeout=args.control_connect_timeout_s + 120.0)
        line = trainer.first_line(rf'not found after .*missing sims: {REMOTE_ENV}\b')
        result['control_without_static_peers'] = {
            'trainer_exit_code': trainer.popen.returncode,
            'seconds': round(time.monotonic() - started, 2),
            'log_line': line[1] if line else None}
        result['checks']['no_static_peers_no_connection'] = (
            trainer.popen.returncode == EXIT_SIMS and line is not None)
    except subprocess.TimeoutExpired:
        result['checks']['no_static_peers_no_connection'] = False
    finally:
        trainer.stop()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--total-steps', type=int, default=3000)
    parser.add_argument('--warmup-steps', type=int, default=1000)
    parser.add_argument('--kill-at', type=int, default=1500,
                        help='env steps at which the remote sim is killed (after the warm-up)')
    parser.add_argument('--step-timeout-s', type=float, default=5.0)
    parser.add_argument('--max-recoveries', type=int, default=2)
    parser.add_argument('--timeout', type=float, default=900.0,
                        help='seconds for the whole check')
    parser.add_argument('--control', action=argparse.BooleanOptionalAction, default=True,
                        help='first run the control without ROS_STATIC_PEERS')
    parser.add_argument('--control-connect-timeout-s', type=float, default=10.0)
    parser.add_argument('--seed', type=int, default=None, help='picks the /30 (default: random)')
    parser.add_argument('--keep-logs', type=Path, default=None,
                        help='copy the sim and trainer logs to this folder')
    parser.add_argument('--out', type=Path, default=RESULTS / 'multi_host.json')
    args = parser.parse_args()
    if not args.warmup_steps < args.kill_at < args.total_steps:
        parser.error('expected --warmup-steps < --kill-at < --total-steps')
    if os.geteuid() != 0:
        parser.error('needs root (it makes a network namespace and a veth pair)')
    if shutil.which('ip') is None:
        parser.error("needs 'ip' (apt-get install iproute2)")

    t0 = time.monotonic()
    pid = os.getpid()
    stale = remove_stale_namespaces()
    link = Link(f'{NAMESPACE_PREFIX}{pid}', f'fbh{pid}'[:15], f'fbs{pid}'[:15],
                pick_subnet(networks_in_use(), random.Random(args.seed)))
    processes: list[Process] = []
    result: dict = {'pass': False, 'checks': {}, 'seconds': {}, 'task': TASK,
                    'total_steps': args.total_steps, 'warmup_steps': args.warmup_steps,
                    'kill_at': args.kill_at, 'remote_env': REMOTE_ENV,
                    'command': 'python -m bench.bench_multi_host ' + ' '.join(sys.argv[1:]),
                    'stale_namespaces_removed': stale}

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix='fpmd_multi_host_'))
    try:
        link.create()
        result['link'] = {'namespace': link.namespace, 'subnet': str(link.subnet),
                          'root side': f'{link.host_if} {link.host_address}',
                          'namespace side': f'{link.far_if} {link.far_address}'}
        run_check(args, link, work, processes, t0, result)
        expected = set(CHECKS) - (set() if args.control else {'no_static_peers_no_connection'})
        result['pass'] = (set(result['checks']) == expected
                          and all(result['checks'].values()))
    except (CheckFailed, KeyboardInterrupt) as error:
        result['error'] = f'{type(error).__name__}: {error}'
    finally:
        for process in reversed(processes):
            process.stop()
        link.remove()
        result['cleaned_up'] = {
            'namespace_gone': link.namespace not in ip('netns', 'list', check=False).stdout,
            'veth_gone': not (Path('/sys/class/net') / link.host_if).exists(),
            'processes_gone': all(p.popen.poll() is not None for p in processes)}
        if args.keep_logs and (work / 'logs').is_dir():
            shutil.copytree(work / 'logs', args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    result['machine'] = {'cores': os.cpu_count(), 'python': platform.python_version(),
                         'load_avg': os.getloadavg(), 'kernel': platform.release()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(json.dumps(result, indent=2))
    print(f"{'PASS' if result['pass'] else 'FAIL'}; written: {args.out}")
    return 0 if result['pass'] else 1


if __name__ == '__main__':
    sys.exit(main())
