"""sensor_msgs/JointState through Fast DDS: in one process and across two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import rclpy
from ros_helpers import make_joint_state, reliable_qos, spin_until, wait_for_subscribers
from sensor_msgs.msg import JointState

TOPIC = 'fpmd_test/joint_states'
NAMES = ['hip', 'knee', 'ankle']
POSITIONS = [0.125, -1.5, 3.0e-3]
VELOCITIES = [1.0, 2.0, -0.25]
EFFORTS = [-7.5, 0.0, 42.0]


def _assert_content(msg: JointState, sec: int, nanosec: int, seq: int) -> None:
    assert msg.header.stamp.sec == sec
    assert msg.header.stamp.nanosec == nanosec
    assert msg.header.frame_id == f'seq{seq}'
    assert list(msg.name) == NAMES
    # float64 on the wire: values arrive bit-exact.
    assert list(msg.position) == [p + seq for p in POSITIONS]
    assert list(msg.velocity) == VELOCITIES
    assert list(msg.effort) == EFFORTS


def test_joint_state_roundtrip_in_process(ros_context, ros_executor):
    pub_node = rclpy.create_node('fpmd_test_pub', context=ros_context)
    sub_node = rclpy.create_node('fpmd_test_sub', context=ros_context)
    ros_executor.add_node(pub_node)
    ros_executor.add_node(sub_node)

    received: list[JointState] = []
    sub_node.create_subscription(JointState, TOPIC, received.append, reliable_qos())
    pub = pub_node.create_publisher(JointState, TOPIC, reliable_qos())
    assert wait_for_subscribers(ros_executor, pub, timeout_s=10.0), 'subscriber never matched'

    count = 5
    for seq in range(count):
        pub.publish(make_joint_state(1700000000 + seq, 123456789, NAMES,
                                     [p + seq for p in POSITIONS], VELOCITIES, EFFORTS,
                                     frame_id=f'seq{seq}'))
    assert spin_until(ros_executor, lambda: len(received) >= count, timeout_s=10.0), (
        f'received {len(received)} of {count} messages')

    assert len(received) == count
    for seq, msg in enumerate(received):  # RELIABLE + one publisher: in order, none lost
        _assert_content(msg, 1700000000 + seq, 123456789, seq)


PUBLISHER_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, DurabilityPolicy
    from sensor_msgs.msg import JointState

    names, positions, velocities, efforts = json.loads(sys.argv[1])
    topic = sys.argv[2]
    rclpy.init()
    node = rclpy.create_node('fpmd_test_remote_pub')
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    pub = node.create_publisher(JointState, topic, qos)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            print('no subscriber matched', file=sys.stderr)
            sys.exit(3)
        rclpy.spin_once(node, timeout_sec=0.05)
    msg = JointState()
    msg.header.stamp.sec = 42
    msg.header.stamp.nanosec = 7
    msg.header.frame_id = 'seq0'
    msg.name = names
    msg.position = positions
    msg.velocity = velocities
    msg.effort = efforts
    pub.publish(msg)
    # Keep the writer alive until the reader acknowledges (RELIABLE), bounded in time.
    if not pub.wait_for_all_acked(Duration(seconds=10.0)):
        print('publication not acknowledged', file=sys.stderr)
        sys.exit(4)
    node.destroy_node()
    rclpy.shutdown()
''')


def test_joint_state_roundtrip_across_processes(ros_context, ros_executor):
    sub_node = rclpy.create_node('fpmd_test_local_sub', context=ros_context)
    ros_executor.add_node(sub_node)
    received: list[JointState] = []
    sub_node.create_subscription(JointState, TOPIC, received.append, reliable_qos())

    env = dict(os.environ)  # same ROS_DOMAIN_ID and discovery range as this process
    payload = json.dumps([NAMES, POSITIONS, VELOCITIES, EFFORTS])
    proc = subprocess.Popen([sys.executable, '-c', PUBLISHER_SCRIPT, payload, TOPIC], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = spin_until(ros_executor, lambda: len(received) >= 1 or proc.poll() is not None,
                         timeout_s=30.0)
        got = got and spin_until(ros_executor, lambda: len(received) >= 1, timeout_s=5.0)
        out, err = proc.communicate(timeout=20.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert got, f'nothing received from the publisher process (rc={proc.returncode}):\n{err}'
    assert proc.returncode == 0, f'publisher process failed (rc={proc.returncode}):\n{out}\n{err}'
    assert len(received) == 1
    _assert_content(received[0], 42, 7, 0)
