"""fpmd_ros.messages for robot tasks: the IMU, goal and velocity-command messages round-trip,
and the decoders refuse non-finite values and wrong frames, naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fpmd_ros import messages

QUAT = np.array([0.9, 0.1, -0.3, 0.3])
QUAT = QUAT / np.linalg.norm(QUAT)
RATE = np.array([0.25, -1.5, 3.0])


def test_imu_round_trip_reorders_the_quaternion_and_marks_a_missing_accelerometer():
    msg = messages.imu_message(3_000_000_007, 'torso', QUAT, RATE, [0.1, 0.2, 9.8])
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 7)
    assert msg.header.frame_id == 'torso'
    w, x, y, z = QUAT
    assert (msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w) == (
        x, y, z, w)
    assert (msg.linear_acceleration.x, msg.linear_acceleration.y,
            msg.linear_acceleration.z) == (0.1, 0.2, 9.8)
    assert list(msg.orientation_covariance) == [0.0] * 9  # unknown
    assert list(msg.linear_acceleration_covariance) == [0.0] * 9
    quaternion, rate = messages.decode_imu(msg, frame_id='torso')
    np.testing.assert_array_equal(quaternion, QUAT)
    np.testing.assert_array_equal(rate, RATE)
    without = messages.imu_message(0, 'torso', QUAT, RATE)
    assert without.linear_acceleration_covariance[0] == -1.0  # "not provided"
    assert (without.linear_acceleration.x, without.linear_acceleration.y,
            without.linear_acceleration.z) == (0.0, 0.0, 0.0)


def _imu(**fields):
    msg = messages.imu_message(0, 'torso', QUAT, RATE)
    for path, value in fields.items():
        part, name = path.split('__')
        setattr(getattr(msg, part), name, value)
    return msg


@pytest.mark.parametrize('msg, problem', [
    (_imu(orientation__w=math.nan), r"imu field 'orientation.w' is nan, expected a finite"),
    (_imu(orientation__y=math.inf), r"imu field 'orientation.y' is inf"),
    (_imu(angular_velocity__z=-math.inf), r"imu field 'angular_velocity.z' is -inf"),
    (_imu(orientation__w=0.0), r"imu field 'orientation' has norm .*, expected a unit "),
    (messages.imu_message(0, 'torso', [0, 0, 0, 0], RATE), r"'orientation' has norm 0,"),
])
def test_decode_imu_names_the_bad_field(msg, problem):
    with pytest.raises(ValueError, match=problem):
        messages.decode_imu(msg)


def test_decode_imu_refuses_another_frame_and_a_missing_orientation():
    with pytest.raises(ValueError, match=r"imu field header.frame_id is 'imu_link', expected "
                                         r"'torso'"):
        messages.decode_imu(messages.imu_message(0, 'imu_link', QUAT, RATE), frame_id='torso')
    msg = messages.imu_message(0, 'torso', QUAT, RATE)
    msg.orientation_covariance[0] = -1.0
    with pytest.raises(ValueError, match=r"imu field 'orientation' is not provided"):
        messages.decode_imu(msg)


def test_goal_round_trip_in_the_world_frame():
    msg = messages.point_stamped(12, [0.3, -0.2, 0.15])
    assert msg.header.frame_id == 'world' and msg.header.stamp.nanosec == 12
    np.testing.assert_array_equal(messages.decode_goal(msg), [0.3, -0.2, 0.15])
    msg.header.frame_id = ''  # what a bare `ros2 topic pub` sends: read as the world
    assert messages.decode_goal(msg).dtype == np.float64


@pytest.mark.parametrize('frame, value, problem', [
    ('map', 0.1, r"goal field header.frame_id is 'map', expected 'world' or '' \(no tf here"),
    ('world', math.nan, r"goal field 'point.y' is nan, expected a finite number"),
    ('', -math.inf, r"goal field 'point.y' is -inf"),
])
def test_decode_goal_names_the_bad_field(frame, value, problem):
    msg = messages.point_stamped(0, [0.3, value, 0.15], frame_id=frame)
    with pytest.raises(ValueError, match=problem):
        messages.decode_goal(msg)


def test_twist_round_trip_and_the_ignored_axes():
    msg = messages.twist([0.5, -0.25, 1.0])
    assert (msg.linear.x, msg.linear.y, msg.linear.z) == (0.5, -0.25, 0.0)
    assert (msg.angular.x, msg.angular.y, msg.angular.z) == (0.0, 0.0, 1.0)
    np.testing.assert_array_equal(messages.decode_twist(msg), [0.5, -0.25, 1.0])
    msg.linear.z, msg.angular.x, msg.angular.y = math.nan, 2.0, -2.0  # no such axes: ignored
    np.testing.assert_array_equal(messages.decode_twist(msg), [0.5, -0.25, 1.0])


@pytest.mark.parametrize('field', ['linear.x', 'linear.y', 'angular.z'])
def test_decode_twist_names_the_non_finite_field(field):
    msg = messages.twist([0.5, -0.25, 1.0])
    part, name = field.split('.')
    setattr(getattr(msg, part), name, math.nan)
    with pytest.raises(ValueError, match=rf"cmd_vel field '{field}' is nan"):
        messages.decode_twist(msg)
