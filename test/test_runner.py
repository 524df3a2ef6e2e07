"""The runner drives the deploy graph: policy_controller (lifecycle: configured, then activated
through its change_state service; parameters from the arguments and a params_file) and a
realtime mujoco_sim wired to it; Ctrl-C stops both; a controller that dies stops the sim and
fails the graph; a refused configure stops the graph with exit code 1. Real processes, real
DDS."""

from __future__ import annotations

import os
import re
import signal

from runner_helpers import POLICY_TASK, Listener, RunnerProcess, export_untrained_policy
from std_msgs.msg import Float64MultiArray

from fpmd_ros.qos import REALTIME_COMMAND_QOS

START_TIMEOUT_S = 180.0  # process start-up, imports and policy loading on a loaded host


def parameter_values(listener: Listener, node_name: str, names: list[str]) -> list:
    """The values of `names` on a running node, through its get_parameters service."""
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters

    client = listener.node.create_client(GetParameters, f'{node_name}/get_parameters')
    assert listener.spin_until(client.service_is_ready, 30.0), f'{node_name}/get_parameters'
    future = client.call_async(GetParameters.Request(names=names))
    assert listener.spin_until(future.done, 30.0), f'{node_name}/get_parameters not answered'
    return [value.double_value if value.type == ParameterType.PARAMETER_DOUBLE
            else value.string_value for value in future.result().values]


def test_deploy_with_sim_runs_the_controller_until_ctrl_c(tmp_path):
    policy = export_untrained_policy(tmp_path / 'policy.onnx')
    namespace = f'deploy_p{os.getpid()}'
    params = tmp_path / 'controller.yaml'
    params.write_text(f'/{namespace}/policy_controller:\n  ros__parameters:\n'
                      '    max_action_delta: 0.0125\n    safe_action: hold\n')
    listener = Listener()
    commands = listener.subscribe(Float64MultiArray, f'/{namespace}/robot_commands',
                                  REALTIME_COMMAND_QOS)
    run = RunnerProcess('deploy', f'policy:={policy}', 'sim:=true', f'namespace:={namespace}',
                        'command_topic:=robot_commands', f'params_file:={params}')
    try:
        controller = f'/{namespace}/policy_controller'
        assert run.wait_for_line(f'{controller}: activate done', START_TIMEOUT_S), \
            run.output[-5000:]
        assert f'{controller}: configure done' in run.output
        assert f'started /{namespace}/mujoco_sim' in run.output
        assert f"task:='{POLICY_TASK}'" in run.output and "mode:='realtime'" in run.output
        # Active: commands flow on the remapped topic, to the sim (same topic, same namespace).
        assert listener.spin_until(lambda: len(commands) >= 5, 60.0), run.output[-5000:]
        assert len(commands[-1].data) == 3  # Hopper: 3 actuators
        # The params_file reached the controller beside the arguments.
        assert parameter_values(listener, controller, ['max_action_delta', 'safe_action',
                                                       'trigger']) == [0.0125, 'hold',
                                                                       'observation']
        run.proc.send_signal(signal.SIGINT)
        code = run.wait(timeout_s=90)
    finally:
        run.stop()
        listener.close()
    assert code == 0, run.output[-5000:]
    # Stopped in order: the controller first (it publishes its safe action), then the sim.
    stopped_controller = run.output.index(f'{controller} stopped (exit code 0)')
    assert stopped_controller < run.output.index(f'/{namespace}/mujoco_sim stopped (exit code 0)')


def test_a_controller_that_dies_stops_the_sim_and_fails_the_graph(tmp_path):
    """A sim left running alone would hold the controller's last command."""
    policy = export_untrained_policy(tmp_path / 'policy.onnx')
    namespace = f'deploy_dies_p{os.getpid()}'
    run = RunnerProcess('deploy', f'policy:={policy}', 'sim:=true', f'namespace:={namespace}')
    controller = f'/{namespace}/policy_controller'
    try:
        assert run.wait_for_line(f'{controller}: activate done', START_TIMEOUT_S), \
            run.output[-5000:]
        pid = int(re.search(rf'started {controller} \(pid (\d+)\)', run.output).group(1))
        os.kill(pid, signal.SIGKILL)
        code = run.wait(timeout_s=90)
    finally:
        run.stop()
    assert code == 128 + signal.SIGKILL, run.output[-5000:]
    assert f'{controller} failed (exit code -9)' in run.output
    assert f'/{namespace}/mujoco_sim stopped' in run.output


def test_refused_configure_stops_the_graph(tmp_path):
    policy = export_untrained_policy(tmp_path / 'policy.onnx', 'cartpole-swingup', pixels=True)
    namespace = f'deploy_bad_p{os.getpid()}'
    # A pixel policy on joint_states passes the graph (no sim to configure) but not the
    # controller's configure, which says why.
    run = RunnerProcess('deploy', f'policy:={policy}', 'observation_mode:=joint_states',
                        f'namespace:={namespace}')
    try:
        code = run.wait(timeout_s=START_TIMEOUT_S)
    finally:
        run.stop()
    assert code == 1, run.output[-5000:]
    assert f'configure refused by /{namespace}/policy_controller' in run.output
    assert "takes camera frames" in run.output
