"""fpmd_ros.node_main: a node process stops with exit 0 on SIGINT/SIGTERM at any moment of its
life (while its modules are imported and it is built, unconfigured, active), and exits 2 on an
invalid parameter. Real processes, real signals, real rclpy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import rclpy
from ros_helpers import spin_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))

# A node whose construction takes a while (like importing torch and MuJoCo) and says when it
# has begun, so the test can signal it mid-construction.
SLOW_START = """
import sys, time
from fpmd_ros.node_main import InvalidParameterError, run_node

def make_node():
    print('building', flush=True)
    time.sleep(1.0)
    if sys.argv[1] == 'invalid':
        raise InvalidParameterError("parameter 'x' is 3; expected 1")
    import rclpy
    return rclpy.create_node('slow_start')

sys.exit(run_node('slow_start', make_node, args=[]))
"""


def _wait_for_line(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f'{text!r} never printed')


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_node_is_built_exits_0(signum):
    proc = subprocess.Popen([sys.executable, '-c', SLOW_START, 'ok'], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_line(proc, 'building')
        proc.send_signal(signum)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert 'Traceback' not in out


def test_an_invalid_parameter_exits_2_with_its_reason():
    done = subprocess.run([sys.executable, '-c', SLOW_START, 'invalid'], env=ENV, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    assert "parameter 'x' is 3; expected 1" in done.stderr


# After a stop on a signal, later signals must be ignored while the process winds down: a
# terminal Ctrl-C under `ros2 launch` reaches a node twice (the terminal's SIGINT, then launch's).
# Python's finalization resets a Python-level handler to SIG_DFL but keeps SIG_IGN, so with the
# handler restored a second SIGINT during the C-level teardown (DDS, torch) killed nodes with -2,
# seen under the real launch system. The teardown's timing is not reproducible here; the handler
# left in place is.
STOPPED_HANDLER = """
import signal, sys
from fpmd_ros.node_main import run_node

def make_node():
    import rclpy
    node = rclpy.create_node('stopped_handler')
    print('running', flush=True)
    return node

rc = run_node('stopped_handler', make_node, args=[])
print('handler', 'ignore' if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else 'other',
      flush=True)
sys.exit(rc)
"""


def test_after_a_stop_further_signals_are_ignored_while_the_process_winds_down():
    proc = subprocess.Popen([sys.executable, '-c', STOPPED_HANDLER], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_line(proc, 'running')
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert 'handler ignore' in out, out


@pytest.mark.parametrize('module, node_name', [('fpmd_ros.controller_node', 'policy_controller'),
                                               ('fpmd_ros.sim_node', 'mujoco_sim')])
def test_a_running_node_stops_with_exit_0(module, node_name, ros_context, ros_executor):
    """An unconfigured policy_controller, a lockstep mujoco_sim: SIGINT -> exit 0."""
    probe = rclpy.create_node('node_main_probe', context=ros_context)
    ros_executor.add_node(probe)
    # A name of its own: nodes of earlier tests may linger in the graph for a moment.
    name = f'{node_name}_stop_{os.getpid()}'
    proc = subprocess.Popen([sys.executable, '-m', module, '--ros-args', '-r', f'__node:={name}'],
                            env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Up and spinning once it is in the graph.
        assert spin_until(ros_executor, lambda: name in probe.get_node_names(), 60.0)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert 'Traceback' not in out


# A node with work of its own in the main thread (like the trainer): the first signal asks it to
# finish (and is announced at once by on_first_signal), the second interrupts it.
BODY = """
import sys, time
from fpmd_ros.node_main import run_node

def make_node():
    import rclpy
    return rclpy.create_node('with_body')

def body(node, stop):
    print('working', flush=True)
    while not stop.is_set():
        time.sleep(0.01)
    print('finishing', flush=True)
    if sys.argv[1] == 'finish':
        return 7
    time.sleep(60)  # e.g. a long checkpoint write: only a second signal cuts it short
    return 8

def announce(signum):
    print(f'first signal {signum}', flush=True)

sys.exit(run_node('with_body', make_node, args=[], body=body, second_signal_interrupts=True,
                  interrupted_exit=130, on_first_signal=announce))
"""


@pytest.mark.parametrize('how, signals, code', [('finish', 1, 7), ('interrupt', 2, 130)])
def test_a_body_finishes_on_the_first_signal_and_is_interrupted_by_the_second(how, signals,
                                                                               code):
    proc = subprocess.Popen([sys.executable, '-c', BODY, how], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_line(proc, 'working')
        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc, f'first signal {int(signal.SIGINT)}')
        _wait_for_line(proc, 'finishing')
        if signals == 2:
            proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, out
    assert 'Traceback' not in out
    assert 'first signal' not in out  # only the first signal is announced


PARAMS_FILE = """
/**:
  ros__parameters:
    use_sim_time: false
/mujoco_sim:
  ros__parameters:
    seed: 3
    sead: 4
"""


@pytest.mark.parametrize('module, args, expected', [
    ('fpmd_ros.sim_node', ['--params-file', '{params_file}'],
     "[mujoco_sim]: parameter 'sead' is not a mujoco_sim parameter (did you mean 'seed'?)"),
    # joint_names:=[] (typed NOT_SET by rcl) is a valid override and must not get in the way.
    ('fpmd_ros.controller_node', ['-p', 'joint_names:=[]', '-p', 'safe_actions:=hold'],
     "[policy_controller]: parameter 'safe_actions' is not a policy_controller parameter (did "
     "you mean 'safe_action'?)"),
])
def test_an_unknown_parameter_stops_the_node_with_exit_2(module, args, expected, tmp_path):
    """rclpy ignores overrides of undeclared parameters; the nodes refuse them, from the
    command line and from a params file alike (rclpy's own use_sim_time is fine)."""
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(PARAMS_FILE)
    args = [arg.format(params_file=params_file) for arg in args]
    done = subprocess.run([sys.executable, '-m', module, '--ros-args', *args], env=ENV,
                          text=True, capture_output=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(expected) == 1, done.stderr
    assert 'Traceback' not in done.stderr
