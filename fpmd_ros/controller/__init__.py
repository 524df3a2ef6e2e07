"""``policy_controller``: an exported policy driving a robot through ROS 2 topics (lifecycle node).

A thin adapter (docs/ros_interface.md, section policy_controller): everything about the
policy (observation normalisation, the one-step flow sampler, scaling to the action bounds) is
inside the model run by :func:`fpmd_core.runtime.load_policy`; this node only checks the model
against its parameters, moves numbers between messages and the model (:mod:`fpmd_ros.messages`)
and keeps the robot safe when its input is stale or wrong.

Lifecycle
    unconfigured --configure--> inactive: load the policy (``.onnx`` with onnxruntime, or a
        ``.pt`` training checkpoint with torch), check its metadata against the parameters
        (observation size or image shape and observation mode, action bounds and actuators,
        joint names, control rate, task), warm it up, create the topics. Any problem ->
        FAILURE with one logged line naming the parameter or file and what was expected (also
        kept in :attr:`PolicyController.failure_reason`).
    inactive --activate--> active: start the control timer (steady clock) at ``control_rate_hz``
        (with ``trigger`` = ``observation``: the staleness watchdog, see below).
    active --deactivate--> inactive: publish the safe action once, stop the timer.
    cleanup / shutdown / error: release the policy, timers and topics (a shutdown from active
        publishes the safe action first).

Parameters (those marked [unconfigured] may only change while the node is unconfigured: they
are read by configure; a change at any other time is refused with that reason)
    ``policy`` (str) [unconfigured]            path of the .onnx policy or .pt checkpoint.
    ``observation_mode`` (str) [unconfigured]  ``observation`` | ``joint_states`` | ``image``.
        ``image`` needs a pixel policy (metadata ``obs_shape`` [H, W, 3k]) and a pixel policy
        needs ``image``: configure fails otherwise, naming the parameter and the expected value.
    ``control_rate_hz`` (0 or 1..2000)          0 = the model's rate (1 / control_period_s). A rate
        below the model's is refused (each action would be held longer than in training); a
        faster one is allowed (fresher state; the plant still holds each command).
    ``state_timeout_s`` (0.001..60, 0.2)       input older than this (steady clock, from its
        arrival) is stale. 0.2 s leaves room for scheduling jitter on a busy host at the 20-125
        Hz rates of the MuJoCo tasks; lower it for fast real robots.
    ``safe_action`` (str, ``zero``)            ``zero`` | ``hold`` | ``default``. ``zero`` by
        default: the tasks' actuators are motors (torques), where holding a command keeps
        pushing, and mujoco_sim zeroes the controls on its own command timeout too.
    ``default_action`` (double[], env units)   the ``default`` safe action, one value per
        actuator, inside the action bounds. Unset by default. Checked against the model whenever
        it is set (and at configure), whatever ``safe_action`` is.
    ``max_action_delta`` (0..1e6, env units)   largest change of any action component per tick;
        0 = no rate limit. It applies to policy actions, never to the safe action.
    ``joint_names`` (str[]) [unconfigured]     joint_states mode: the joints whose positions and
        velocities form the observation (mapping below). Unset: the model's ``joint_names``.
    ``exclude_joint_positions`` (str[]) [unconfigured]  joint_states mode: joints (from
        ``joint_names``) whose position is left out, e.g. ``[rootx]`` for Gymnasium's
        HalfCheetah/Hopper/Walker2d, whose observation omits the x position. Unset: none.
    ``task_file`` (str) [unconfigured]         robot policies with site terms (goal_offset): the
        task file for forward kinematics; empty: the metadata's path. sha256-checked.
    ``command_timeout_s`` (0.001..60, 0.5) [unconfigured]  robot policies with a velocity
        command: an older ``cmd_vel`` gives a zero velocity command.
    ``expected_task`` (str) [unconfigured]     if set, the model's task must equal it.
    ``inference_threads`` (int 1..64) [unconfigured]  onnxruntime / torch intra-op threads.
    ``trigger`` (str, ``timer``) [unconfigured]  when a control step runs (see below):
        ``timer`` (each tick of the control timer) or ``observation`` (on each input message).
    ``autostart`` (bool, read-only, false)     ``main()`` configures and activates the node at
        once (for runs without a lifecycle manager or launch file).
    Defaults not given above: ``policy`` '', ``observation_mode`` observation,
    ``control_rate_hz`` 0, ``max_action_delta`` 0, ``expected_task`` '', ``inference_threads`` 1,
    ``trigger`` timer.
    Unset array parameters are left out (an empty list would be typed as a byte array by rclpy).

Observation from ``joint_states`` (sensor_msgs/JointState), mapped by name
    observation = [position of each joint in ``joint_names`` minus ``exclude_joint_positions``,
    in that order] + [velocity of each joint in ``joint_names``, in that order]. The message's
    own order does not matter and extra joints are ignored; a missing joint, a short array or a
    NaN/Inf in a used value makes the message malformed. Configure checks that the resulting size
    equals the model's ``obs_dim``; joint names that differ from the model's are allowed (a real
    robot may name its joints differently) and are logged as a warning with the correspondence.
    This matches tasks whose observation is joint positions then velocities (Gymnasium
    InvertedPendulum; HalfCheetah, Hopper, Walker2d with ``exclude_joint_positions: [rootx]``;
    not Ant/Humanoid, nor dm_control tasks with sin/cos or body terms); for those use
    ``observation`` mode.

Observation of a robot policy (metadata ``robot``, trained on a ``sim/<name>.yaml`` task file)
    In ``joint_states`` mode the observation is built as the metadata describes it by
    :class:`fpmd_ros.controller.robot_input.RobotInput` (its docstring has the command rules):
    ``joint_states`` by name, ``imu`` (sensor_msgs/Imu) when the observation has base terms,
    ``goal`` (geometry_msgs/PointStamped) or ``cmd_vel`` (geometry_msgs/Twist) for the command,
    and the last published command (zeros after activation and at an ``episode_start``), through
    the training env's own term functions (fpmd_core.robots.observer).

Observation from ``image_raw`` (sensor_msgs/Image), pixel policies
    Each frame must be ``rgb8`` with the model's H x W (metadata ``obs_shape``), ``step`` >= 3 W
    (padded rows are cropped) and ``step`` x H bytes of data; anything else (another encoding
    such as ``bgr8``, another size, a short step, empty or short data) makes it malformed. The
    observation is the last k = ``frame_stack`` good frames stacked on the channel axis, oldest
    first, by :class:`fpmd_core.frames.FrameStack`, the training env's own frame stack. Every
    new message that a control step sees is decoded and pushed once: with ``trigger`` =
    ``observation`` that is every image (run the camera at the model's rate, which includes its
    ``action_repeat``: consecutive training frames are one control period apart); with the
    timer, the newest image at each tick (a tick without a new image reuses the last result and
    pushes nothing). A malformed frame never enters the stack. The stack restarts (all k slots
    filled with one frame, as the training env does at a reset) at: the first frame after
    activation; the first frame after a gap longer than ``state_timeout_s`` since the previous
    good one (stale input, a long run of malformed frames); and the first frame of an episode,
    announced on ``episode_start`` (below): the frame whose ``header.stamp`` equals the
    announced stamp, or the first one stamped after it if that frame was lost; a zero stamp
    means the next frame. mujoco_sim announces every reset there, so across its episodes the
    controller stacks exactly what the in-process env observes. An announcement that arrives
    after its frame restarts the stack only if that frame is still the newest; the controller
    then recomputes and publishes the command for it at once. The policy gets the raw uint8
    stack: the scaling (/255 - 0.5) and the convolutional encoder are inside the ONNX graph.

Topics (relative names, so the node can live in a namespace; remap ``commands`` to a
ros2_control ``forward_command_controller``'s ``~/commands``)
    sub ``observation`` (std_msgs/Float32MultiArray), ``joint_states`` (sensor_msgs/JointState) or
        ``image_raw`` (sensor_msgs/Image; remap it to the camera's topic, e.g.
        ``image_raw:=camera/image_raw`` for mujoco_sim) by mode: sensor-data QoS (BEST_EFFORT,
        KEEP_LAST 1; matches reliable and best-effort publishers). The callback only caches the
        newest message and its steady-clock arrival time; every check happens in the control tick.
        An ``observation`` message may carry a labelled layout, which must then equal the model's
        ``obs_terms`` (no layout or unlabelled segments: only the size is checked).
    sub ``episode_start`` (std_msgs/Header, image mode only, RELIABLE, KEEP_LAST 10): episode
        starts, ``header.stamp`` = the stamp of the episode's first frame (0: the next frame);
        mujoco_sim publishes it at every reset. A robot or user may publish it too.
    sub ``imu`` (sensor_msgs/Imu, sensor-data QoS), ``goal`` / ``cmd_vel`` (RELIABLE, KEEP_LAST
        10): robot policies in joint_states mode, as their observation needs them.
    pub ``~/observation`` (std_msgs/Float32MultiArray, not in image mode, only while someone
        subscribes): each observation computed, labelled by the model's ``obs_terms``.
    pub ``commands`` (std_msgs/Float64MultiArray, RELIABLE, KEEP_LAST 1, VOLATILE): the action in
        env units, actuator order, one layout segment labelled ``action``.
    pub ``~/action`` (sensor_msgs/JointState, RELIABLE, KEEP_LAST 10): the same command stamped
        with the node clock at the tick, names = the model's actuator names, position = command;
        only built and published while someone subscribes (it is for recording).
    pub ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, ~1 Hz, while configured): achieved
        rate, inference latency p50/p99, input age and topic, safety state and reason, model
        hash; in image mode also the image size, frame_stack, frames stacked, stack refills and
        episode restarts.
        Level: ERROR while the input is malformed, inference fails, or the input has been stale
        for longer than 5 x ``state_timeout_s``; WARN while it is stale for less, while waiting
        for the first input, after a recovered trouble within the last period, or below 80 % of
        the target rate; OK otherwise (and while inactive). Stamped with the node clock.

Each control step
    1. input freshness (``state_timeout_s``); 2. the observation from the newest message (size /
    layout / joint names / NaN-Inf checked; images: encoding / size / step / data checked, then
    stacked); 3. one inference (only when a new message has arrived since the last one;
    otherwise the previous result is reused); 4. clip to the action bounds; 5. rate limit
    against the last published command; 6. publish.

When a control step runs (``trigger``)
    ``timer`` (default): on every tick of the steady-clock control timer, whether or not a new
        input has arrived; the loop runs at ``control_rate_hz`` independently of the sensor.
        Not synchronised with the plant, it adds 0..1 control period of delay between an
        observation and the command computed from it (the plant holds the previous command
        meanwhile), and when the plant steps at the same rate the phase between the two clocks
        decides, step by step, whether a command is one period late.
    ``observation``: on the arrival of every input message (``observation``, ``joint_states`` or
        ``image_raw``), so the command for state x_t is published about one inference after x_t
        arrives: the plant (a sampled-data system such as mujoco_sim in realtime mode or a
        ros2_control loop publishing joint_states) gets the command for its newest state before its
        next step, as in training. The control timer is then a staleness watchdog: every message
        pushes its next tick back to ``state_timeout_s`` after that message, so while input flows
        it never fires; with no input yet, or once the newest input is stale, it ticks at
        ``control_rate_hz`` and each tick publishes the safe action, until a message arrives.
        The achieved rate is then the input rate. Use it when the sensor stream runs at (or
        near) the model's control rate; ``deploy`` runs it this way (docs/deployment.md).
    No input yet, stale input, a malformed message, an inference exception or a non-finite result
    publishes the safe action instead: ``zero`` (the rest action, clipped into the bounds: zeros,
    or a position-controlled robot policy's default pose), ``hold`` (the last published command;
    the rest action if none yet) or ``default`` (``default_action``), at once.
    Entering and leaving trouble is logged once (throttled): a malformed message or a failing
    inference at ERROR; stale input at WARN when it starts (a busy host overruns the timeout
    for a moment and recovers at the next message) and at ERROR once it has lasted longer than
    ``STALE_ERROR_FACTOR`` (5) x ``state_timeout_s`` from the first stale step
    (fpmd_ros.controller.safety); recovery at INFO. A command is never NaN: a non-finite value
    anywhere falls back to zero.

Clock
    Every stamp this node writes (``~/action``, ``/diagnostics``) is the node clock: ROS time,
    which follows ``/clock`` when ``use_sim_time`` is true. Freshness, the control timer and the
    frame-stack gap rule use the steady clock (arrival times), whatever ``use_sim_time`` is.

Exit
    ``main()`` (fpmd_ros.node_main) handles SIGINT/SIGTERM itself (rclpy's handlers would shut
    the context down first) so that an active node publishes the safe action before it exits: a
    forward_command_controller would otherwise hold the last command forever. A stop in any
    lifecycle state, even while the node is still starting, exits 0.

Modules (pure ones are tested without DDS)
    ``rules`` parameter checks, rate rule, safe action, rate limit; ``safety`` the safety state
    and its log/diagnostic levels; ``inputs`` observation sources per mode; ``policy`` loading,
    checks and warm-up; ``loop`` :class:`~fpmd_ros.controller.loop.ControlLoop`, the control
    loop without ROS; ``parameters`` the parameter table; ``node`` the lifecycle node, which only
    wires topics, timers, parameters and the lifecycle. Run it with the ``policy_controller``
    console script (``ros2 run fpmd_ros policy_controller``) or ``python -m
    fpmd_ros.controller_node`` (its entry module, kept light so a Ctrl-C during the start exits 0).
"""
