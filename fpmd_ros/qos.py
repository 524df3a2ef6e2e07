"""The QoS profiles of the package's topics, one definition each, chosen per stream.

Shared by mujoco_sim, policy_controller, the trainer's diagnostics and the tools that listen to
them (ros_env, the rehearsal, tests), so a publisher and its readers can never drift apart.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def _profile(depth: int, reliability: ReliabilityPolicy) -> QoSProfile:
    # VOLATILE everywhere: a late joiner must never replay history (an old command, a stale
    # state). KEEP_LAST everywhere: unlike KEEP_ALL it can never block a publisher on a stalled
    # reader (the physics loop, the control loop).
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


_RELIABLE, _BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT

# --- mujoco_sim -----------------------------------------------------------------------------------
# Lockstep commands and transitions: every message is one env step, so none may be lost.
# RELIABLE + depth 64: a trainer has at most one command and two transitions (terminal + next step
# 0) in flight per sim, so 64 never overflows. Lockstep camera frames use it too: a pixel trainer
# needs the frame of every transition (64 frames of 84x84 are 1.4 MB).
LOCKSTEP_QOS = _profile(64, _RELIABLE)
# Realtime commands: only the newest matters (zero-order hold). A BEST_EFFORT reader with depth 1
# matches both reliable publishers (the policy_controller's) and best-effort ones.
REALTIME_COMMAND_QOS = _profile(1, _BEST_EFFORT)
# Episode summaries: rare and each one counts (a rehearsal scores them): reliable, and deep
# enough that a slow reader misses none.
EPISODE_QOS = _profile(100, _RELIABLE)
# Episode starts: one per reset, each one counts (a pixel controller restarts its frame stack at
# the stamp it names): reliable, a few deep.
EPISODE_START_QOS = _profile(10, _RELIABLE)
# Realtime applied commands (one per control step, for a rehearsal that replays every step): each
# one counts, so reliable, and 1000 deep: 8 s of the fastest task (125 Hz) at real time, 2 s at
# realtime_factor 4, far longer than a reader polling every 50 ms ever lags. KEEP_LAST still
# never blocks the physics timer on a stalled reader.
APPLIED_COMMAND_QOS = _profile(1000, _RELIABLE)
# joint_states / observation / clock are sensor streams. They are *offered* RELIABLE on purpose: a
# reliable writer matches reliable and best-effort readers alike (a best-effort writer would
# silently never match a reliable reader such as robot_state_publisher's), and a reader that
# wants sensor-data behaviour (no retransmission, lowest latency) simply subscribes BEST_EFFORT,
# which is what the link then does.
STATE_QOS = _profile(10, _RELIABLE)
CLOCK_QOS = _profile(1, _RELIABLE)
# Realtime camera: a sensor stream like joint_states, offered RELIABLE for the same reason, but
# only 2 deep: a controller wants the newest frame, and a deep reliable history of images would
# only queue stale frames behind a slow reader.
CAMERA_REALTIME_QOS = _profile(2, _RELIABLE)
# Goal / cmd_vel (mujoco_sim's overrides, the policy_controller's robot commands) from people and
# their tools: RELIABLE KEEP_LAST 10 is what
# teleop_twist_keyboard, rviz's tools and `ros2 topic pub` offer (the system default), so they
# match; a one-off goal must not be lost, and 10 deep never blocks the sender. A best-effort
# writer (some joystick teleops) does not match a reliable reader: publish reliable.
ROBOT_COMMAND_QOS = _profile(10, _RELIABLE)

# --- policy_controller ----------------------------------------------------------------------------
# Sensor input: only the newest message matters. BEST_EFFORT matches reliable and best-effort
# writers alike (mujoco_sim offers RELIABLE) and never waits for retransmissions; depth 1.
INPUT_QOS = _profile(1, _BEST_EFFORT)
# Commands: the forward_command_controller contract. RELIABLE so a reliable reader (ros2_control
# subscribes with system-default QoS) matches; depth 1 so a slow reader never blocks the loop and
# never receives an outdated command after a newer one.
COMMAND_QOS = _profile(1, _RELIABLE)
# ~/action and ~/observation are for recording (rosbag): reliable with a little buffer.
ACTION_QOS = _profile(10, _RELIABLE)

# --- every node -----------------------------------------------------------------------------------
# /diagnostics (controller, trainer): ~1 Hz, reliable with a little buffer for slow aggregators.
DIAGNOSTICS_QOS = _profile(10, _RELIABLE)
