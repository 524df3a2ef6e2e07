"""``mujoco_sim``: one fpmd_core task behind ROS 2 topics (docs/ros_interface.md).

A thin adapter: the task, its physics, rewards, terminations and time limits all come from
:func:`fpmd_core.tasks.make_env` (with ``normalized_actions=False``: commands carry env units);
this node only moves numbers between that env and messages (:mod:`fpmd_ros.messages`).

Parameters (declared with descriptors; bad values are refused with the reason)
    ``task`` (str, read-only)            Gymnasium MuJoCo id, dm_control ``domain-task`` or robot
                                         task file (``sim/<name>.yaml``, fpmd_core.robots).
    ``mode`` (str, read-only)            ``lockstep`` | ``realtime``.
    ``seed`` (int >= 0)                  seed of the episodes (rule below).
    ``realtime_factor`` (0.01..100)      realtime: sim seconds per wall second.
    ``command_timeout_s`` (0.001..3600)  realtime: older commands zero the controls.
    ``publish_clock`` (bool, read-only)  realtime: publish ``/clock`` (refused in lockstep).
    ``max_episode_steps`` (int >= 0, read-only)  0 keeps the task's own limit; counted in
                                         control steps, before ``action_repeat`` (as make_env).
    ``action_repeat`` (int >= 1, read-only)  control steps per env step: one command holds its
                                         action for this many control steps and is one env step
                                         (the paper's pixel tasks use 2). The control period
                                         (``task_spec(...).control_dt``) includes it.
    ``camera_enabled`` (bool, read-only)  publish camera images (``camera/*`` below). The
                                         offscreen OpenGL context is made at start; a machine
                                         without one refuses to start, naming MUJOCO_GL and the
                                         packages to install.
    ``image_width``, ``image_height`` (int 16..1024, read-only)  image size, default 84 x 84.
    ``camera`` (str, read-only)          MuJoCo camera name or id; ``-1`` is the free camera;
                                         empty: the task's default (fpmd_core default_camera).
                                         Unknown cameras are refused with the model's list.

Topics and services (relative names, so the node lives in a namespace such as ``env_0``)
    pub ``joint_states`` (sensor_msgs/JointState): the task's joints (a task file's actuated
        joints in action order, else every hinge/slide joint), position = qpos,
        velocity = qvel, effort = ``data.qfrc_actuator`` (the generalised force the actuators
        applied during the step, so a zeroed command is visible from outside), stamped as the
        Clock section says. Sim time keeps increasing across episodes (``/clock`` must never go
        backwards):
        the node's first state is at sim time 0, every env step advances it by one control
        period (``action_repeat`` physics control steps), and so does every later reset
        (``~/reset``, automatic, or after a failed step): a reset takes one control period.
        So sim time = (env steps + resets after the first) x control period, every state the
        node reaches has a stamp of its own, and a terminal state and the next episode's
        initial state (published in the same callback) are one period apart. In realtime mode
        the tick that ends an episode therefore moves sim time by two periods.
        ``joint_states``, ``observation`` and ``/clock`` describe the current state once per
        control step; after an automatic reset that is the new episode's initial state (the
        terminal observation is in the ``transition``). A ``~/reset`` also publishes them.
    pub ``observation`` (std_msgs/Float32MultiArray): the task observation; layout segments
        labelled by the task's observation terms.
    pub ``imu`` (sensor_msgs/Imu; robot task files with a floating base): the base's IMU
        reading of the state: orientation = the base body's quaternion in the world frame
        (MuJoCo's w, x, y, z as the message's x, y, z, w), angular_velocity = the base angular
        velocity in the base frame (rad/s, the ``base_ang_vel`` term), linear_acceleration =
        the model's first ``accelerometer`` sensor (m/s^2, in its site's frame; a model without
        one: zeros and ``linear_acceleration_covariance[0] = -1``, ROS's "not provided"). The
        other covariances are 0 (unknown). ``header.frame_id`` is the base body's name.
    pub ``~/goal`` (geometry_msgs/PointStamped; ``goal_position`` tasks): the goal in force
        (m, ``frame_id`` ``world``).
    pub ``~/cmd_vel`` (geometry_msgs/Twist; ``velocity`` tasks): the command in force:
        linear.x = vx, linear.y = vy (m/s), angular.z = yaw rate (rad/s), the rest 0.
        ``~/goal`` or ``~/cmd_vel``, then ``imu``, then ``joint_states``: in this order, with
        the same stamp and QoS, for every state joint_states describes (each reset and each
        step, both modes), so a controller that acts on joint_states already has the others.
        The command in force is the one the next step's rewards use and the state's
        ``command`` observation shows (after an in-episode redraw: the new command).
    pub ``transition`` (std_msgs/Float64MultiArray, lockstep only): see fpmd_ros.messages.
        Its ``stamp`` is the sim time of its observation (the stamp of that state).
    pub ``camera/image_raw`` (sensor_msgs/Image, rgb8; with ``camera_enabled``): one frame of
        every state the node reaches in lockstep mode (each reset and each step, the terminal
        state of an episode included); in realtime mode one frame per control step, like
        ``observation`` (after an autoreset, the new episode's). Stamped with the state's stamp
        (Clock below), so in lockstep its ``header.stamp`` equals the ``stamp`` of the
        transition of the same state; frame_id is
        the camera's name (``camera`` for an unnamed or the free camera). In lockstep mode a
        state's frame is published before its transition. Rendered only while someone
        subscribes (fpmd_core.rendering.Camera, fast visuals: the same pixels as the in-process
        pixel env). QoS: lockstep RELIABLE KEEP_LAST 64 (as ``transition``: no frame may be
        lost); realtime RELIABLE KEEP_LAST 2 (best-effort readers match too).
    pub ``camera/camera_info`` (sensor_msgs/CameraInfo; with ``camera_enabled``): ideal pinhole
        intrinsics from the camera's vertical field of view (``model.vis.global_.fovy`` for the
        free camera), same stamp, frame_id and QoS as the frames, published at the same
        moments while someone subscribes to it.
    pub ``episode`` (std_msgs/Float64MultiArray, both modes, RELIABLE, KEEP_LAST 100): one
        summary per finished episode (terminated or truncated), published before the automatic
        reset: labelled segments ``episode`` (k), ``seed`` (its reset seed), ``return`` (sum of
        its rewards), ``length`` (env steps), ``terminated`` (1: terminated, 0: time limit); see
        fpmd_ros.messages. An episode cut short by ``~/reset`` or by a failed step has no
        summary. This is what a deployment rehearsal scores (python -m fpmd_ros.rehearsal).
    pub ``episode_start`` (std_msgs/Header, both modes, RELIABLE, KEEP_LAST 10): one message per
        reset (the first, ``~/reset``, automatic, after a failed step), published before any
        message of the new episode's initial state; ``header.stamp`` is that state's stamp (the
        ``header.stamp`` of its joint_states and camera frame), ``frame_id`` is empty. A
        pixel policy_controller restarts its frame stack at the frame with that stamp, as the
        training env does at a reset.
    pub ``~/applied_command`` (std_msgs/Float64MultiArray, realtime only, RELIABLE, KEEP_LAST
        1000): one message per control step, published before the step and only while someone
        subscribes: the episode and step index of the state the action is applied in, the
        action the physics gets, ``held`` (how many earlier steps applied the same command: 1
        or more means no newer command arrived before this step) and ``timed_out`` (no command
        within ``command_timeout_s``: zero controls); see fpmd_ros.messages. The deploy
        rehearsal replays them to name the step where a closed loop departed from in-process.
    pub ``/clock`` (rosgraph_msgs/Clock, realtime with ``publish_clock``).
    sub ``commands`` (std_msgs/Float64MultiArray): the action in env units, actuator order.
        Values outside the actuator ranges are clamped by MuJoCo, exactly as in-process.
    sub ``goal`` (geometry_msgs/PointStamped; ``goal_position`` tasks) and ``cmd_vel``
        (geometry_msgs/Twist, vx, vy, yaw rate as above; ``velocity`` tasks), RELIABLE
        KEEP_LAST 10 (what teleop tools and ``ros2 topic pub`` offer): each valid message
        overrides the command in force until the episode ends (fpmd_core
        ``RobotEnv.set_command``): the next step's rewards and observation use it, the
        in-episode redraws (``resample_seconds``) leave it in force, and the next episode
        (any reset) draws its own command as always. No range check: a goal or velocity
        outside the task file's ranges is taken as given. Valid: finite values; a goal in
        frame ``world`` or '' (the sim has no tf); a Twist's linear.z, angular.x and angular.y
        are ignored. An invalid message is dropped with a throttled warning naming the field,
        and nothing else changes. A task without that kind of command has no such
        subscription.
    srv ``~/reset`` (std_srvs/Trigger): starts the next episode; the response message reads
        ``episode <k> seed <s>``.
    srv ``~/set_pause`` (std_srvs/SetBool): realtime only; pauses/resumes the physics timer.
    ``joint_states``, ``observation``, ``imu``, ``~/goal``, ``~/cmd_vel`` and the camera topics
    are only built when someone subscribes.

Episodes and seeds
    Episodes are numbered k = 0, 1, ... over the node's life; episode k is reset with seed
    ``seed + k``, so a node is deterministic and comparable with an in-process env reset the
    same way. Setting ``seed`` at runtime restarts the sequence: the next episode uses the new
    ``seed + 0``, the one after ``seed + 1``, ... (the episode index keeps counting).
    The node resets once on start. Every episode end (terminated or truncated) is followed at
    once by an automatic reset, in both modes.

Lockstep (training)
    Physics advances only when a command arrives: one valid command -> one ``env.step`` ->
    exactly one ``transition``. Resets (on start, ``~/reset``, and automatic) publish a
    transition with ``step`` 0, reward 0, terminated 0, truncated 0 and the initial
    observation. A step that ends an episode publishes its terminal transition and then the next
    episode's step-0 transition: Gymnasium's SAME_STEP autoreset, with no service call per
    episode. With ``camera_enabled`` each transition is preceded by the frame of its state. A
    malformed command (wrong length, NaN, Inf, inconsistent layout) is rejected with a throttled
    warning and publishes nothing.

Clock (one per configuration)
    Lockstep: every stamp (joint_states, camera frames and camera_info, transitions) is the sim
    time above; no /clock: the sim's steps are the only time a lockstep run has, and a trainer
    pairs frames with transitions by it. Realtime with ``publish_clock``: every stamp is the sim
    time, which is also what ``/clock`` says (run the other nodes with ``use_sim_time``).
    Realtime without ``publish_clock``: every stamp is the node clock (ROS time: the wall clock,
    or an external ``/clock`` with ``use_sim_time``) when the state is reached, made strictly
    increasing, so the sim's stamps compare with the controller's and with ``/diagnostics``.

Realtime (deploy rehearsal)
    A steady-clock timer steps the physics every ``control_dt / realtime_factor`` wall seconds,
    holding the last valid command (zero-order hold). Without a command newer than
    ``command_timeout_s`` (steady clock, from its arrival) the controls are zero. Malformed
    commands are rejected (throttled warning) and the last valid one is kept. ``~/set_pause``
    stops and resumes stepping.

Modules
    ``episodes`` the episode logic without ROS (:class:`~fpmd_ros.sim.episodes.Episodes`);
    ``node`` the node, which wires it to topics, services, parameters and the camera. Run it with
    the ``mujoco_sim`` console script (``ros2 run fpmd_ros mujoco_sim``) or ``python -m
    fpmd_ros.sim_node`` (its entry module, kept light so a Ctrl-C during the start exits 0).
"""
