"""Running an exported policy: `OnnxPolicy` (onnxruntime) and `CheckpointPolicy` (torch).

Both validate the model against its metadata when loaded and every observation when called,
and expose the same interface: `metadata`, `model_hash`, `__call__(observation)`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .export import METADATA_FORMAT, METADATA_KEY, content_hash, file_hash, graph_digest
from .files import error_summary

REQUIRED_METADATA = {
    "format": str, "algorithm": str, "task": str, "obs_dim": int, "obs_terms": list,
    "act_dim": int, "action_low": list, "action_high": list, "actuator_names": list,
    "joint_names": list, "control_period_s": float, "nfe": int, "noise_input": bool,
    "config_hash": str,
}


class PolicyError(ValueError):
    """A policy file is missing, corrupt, or does not match what it is used for."""


class ObservationError(ValueError):
    """An observation has the wrong shape or is not finite."""


def _check_field_types(fields: dict, required: dict, prefix: str, source: str) -> None:
    """Every `required` field present with its type; an int stands for a float, but a bool (an
    int to Python) only for a bool."""
    for key, kind in required.items():
        value = fields.get(key)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if isinstance(value, bool) and kind is not bool:
            ok = False
        if not ok:
            raise PolicyError(f"{source}: metadata field {prefix + key!r} is {value!r}, "
                              f"expected {kind.__name__}")


def validate_metadata(meta: object, source: str) -> dict:
    if not isinstance(meta, dict):
        raise PolicyError(f"{source}: metadata is not a JSON object")
    _check_field_types(meta, REQUIRED_METADATA, "", source)
    if meta["format"] != METADATA_FORMAT:
        raise PolicyError(f"{source}: metadata format {meta['format']!r}, "
                          f"expected {METADATA_FORMAT!r}")
    if len(meta["action_low"]) != meta["act_dim"] or len(meta["action_high"]) != meta["act_dim"]:
        raise PolicyError(f"{source}: action bounds do not have act_dim={meta['act_dim']} values")
    shape = meta.get("obs_shape", [meta["obs_dim"]])
    if not (isinstance(shape, list) and len(shape) in (1, 3) and
            all(isinstance(n, int) and n > 0 for n in shape) and
            int(np.prod(shape)) == meta["obs_dim"]):
        raise PolicyError(f"{source}: metadata obs_shape {shape!r} is not (obs_dim,) or "
                          f"(H, W, C) with H*W*C = obs_dim={meta['obs_dim']}")
    if len(shape) == 3:
        k = meta.get("frame_stack")
        if meta.get("obs_dtype") != "uint8" or not isinstance(k, int) or isinstance(k, bool) \
                or k < 1 or shape[2] != 3 * k:
            raise PolicyError(f"{source}: pixel metadata obs_shape {shape}, obs_dtype "
                              f"{meta.get('obs_dtype')!r}, frame_stack {k!r}; expected uint8 "
                              "frames (H, W, 3k) with k = frame_stack >= 1")
    digest = meta.get("graph_sha256")  # only in policies exported since it was added
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        raise PolicyError(f"{source}: metadata graph_sha256 is {digest!r}, expected 64 hex "
                          "digits")
    if sum(size for _, size in meta["obs_terms"]) != meta["obs_dim"]:
        raise PolicyError(f"{source}: obs_terms sizes do not sum to obs_dim={meta['obs_dim']}")
    if "robot" in meta:
        validate_robot_metadata(meta, source)
    return meta


# The fields of fpmd_core.robots.robot_metadata that a consumer relies on, and their types.
REQUIRED_ROBOT_METADATA = {
    "version": int, "task_file": str, "task_file_sha256": str, "control_mode": str,
    "control_period": float, "joint_names": list, "default_joint_pos": list, "kp": list,
    "kd": list, "action_scale": list, "effort_limit": list, "action_low": list,
    "action_high": list, "observations": list, "obs_dim": int, "command": dict,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_robot_metadata(meta: dict, source: str) -> None:
    """A robot policy's `robot` metadata (fpmd_core.robots.robot_metadata): its fields, and
    that it describes the same robot as the rest of the metadata (joints, action bounds,
    observation size, control period)."""
    from .robots.metadata import METADATA_VERSION  # here: only robot policies need MuJoCo

    robot = meta["robot"]
    if not isinstance(robot, dict):
        raise PolicyError(f"{source}: metadata field 'robot' is not a JSON object")
    _check_field_types(robot, REQUIRED_ROBOT_METADATA, "robot.", source)
    if robot["version"] != METADATA_VERSION:
        raise PolicyError(f"{source}: metadata robot.version {robot['version']}, expected "
                          f"{METADATA_VERSION}")
    # task_file_sha256 is required (checked above); model_sha256 and model_files only in
    # newer policies.
    for key in ("task_file_sha256", "model_sha256"):
        if key in robot and not (isinstance(robot[key], str) and _SHA256.match(robot[key])):
            raise PolicyError(f"{source}: metadata robot.{key} is {robot[key]!r}, expected 64 "
                              "hex digits")
    files = robot.get("model_files", {})
    if not (isinstance(files, dict) and all(
            isinstance(name, str) and name and isinstance(digest, str) and _SHA256.match(digest)
            for name, digest in files.items())):
        raise PolicyError(f"{source}: metadata robot.model_files is {files!r}, expected an object "
                          "of file paths (relative to the model's folder, or package:// URIs) to "
                          "64 hex digits")
    if robot["control_mode"] not in ("position", "effort"):
        raise PolicyError(f"{source}: metadata robot.control_mode is "
                          f"{robot['control_mode']!r}, expected position or effort")
    act_dim = meta["act_dim"]
    per_joint = ["joint_names", "default_joint_pos", "effort_limit", "action_low",
                 "action_high"]
    if robot["control_mode"] == "position":
        per_joint += ["kp", "kd", "action_scale"]
    for key in per_joint:
        values = robot[key]
        kind = str if key == "joint_names" else (int, float)
        if len(values) != act_dim or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in values):
            raise PolicyError(f"{source}: metadata robot.{key} is {values!r}, expected "
                              f"act_dim={act_dim} {'names' if kind is str else 'numbers'}")
    if robot["joint_names"] != meta["joint_names"]:
        raise PolicyError(f"{source}: metadata robot.joint_names {robot['joint_names']} "
                          f"differ from joint_names {meta['joint_names']}")
    for key in ("action_low", "action_high"):
        if not np.allclose(robot[key], meta[key], rtol=1e-6, atol=1e-6):
            raise PolicyError(f"{source}: metadata robot.{key} {robot[key]} differs from "
                              f"{key} {meta[key]}")
    period = robot["control_period"] * int(meta.get("action_repeat", 1))
    if abs(period - meta["control_period_s"]) > 1e-9 * max(1.0, period):
        raise PolicyError(f"{source}: metadata robot.control_period {robot['control_period']} "
                          f"(x action_repeat) differs from control_period_s "
                          f"{meta['control_period_s']}")
    sizes = [term.get("size") if isinstance(term, dict) else None
             for term in robot["observations"]]
    if not all(isinstance(n, int) and n > 0 for n in sizes) or sum(sizes) != robot["obs_dim"]:
        raise PolicyError(f"{source}: metadata robot.observations sizes {sizes} do not sum "
                          f"to robot.obs_dim={robot['obs_dim']}")
    if len(observation_shape(meta)) == 1 and robot["obs_dim"] != meta["obs_dim"]:
        raise PolicyError(f"{source}: metadata robot.obs_dim {robot['obs_dim']} differs from "
                          f"obs_dim {meta['obs_dim']}")


def check_expected(meta: dict, source: str, expected: dict) -> None:
    """Each expected key (obs_dim, act_dim, joint_names, control_period_s, ...) must match."""
    for key, value in expected.items():
        have = meta.get(key)
        if isinstance(value, float) and isinstance(have, (int, float)):
            same = abs(have - value) <= 1e-9 * max(1.0, abs(value))
        else:
            same = have == value
        if not same:
            raise PolicyError(f"{source}: {key} is {have!r} in the model, expected {value!r}")


def observation_shape(meta: dict) -> tuple[int, ...]:
    """(obs_dim,) for state policies, (H, W, 3k) for pixel policies (older files: state)."""
    return tuple(meta.get("obs_shape") or (meta["obs_dim"],))


class _Policy:
    metadata: dict
    model_hash: str

    @property
    def pixels(self) -> bool:
        return len(observation_shape(self.metadata)) == 3

    def _frames(self, observation) -> np.ndarray:
        shape = observation_shape(self.metadata)
        frames = np.asarray(observation)
        if frames.dtype != np.uint8:
            raise ObservationError(f"observation: expected uint8 frames, got {frames.dtype}")
        if frames.shape == shape:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != shape or frames.shape[0] == 0:
            raise ObservationError(f"observation: expected frames of shape {shape} or "
                                   f"(B, {', '.join(map(str, shape))}), got {frames.shape}")
        return frames

    def _observation(self, observation) -> np.ndarray:
        if self.pixels:
            return self._frames(observation)
        obs = np.asarray(observation, dtype=np.float32)
        dim = self.metadata["obs_dim"]
        if obs.ndim == 1:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != dim or obs.shape[0] == 0:
            raise ObservationError(f"observation: expected shape ({dim},) or (B, {dim}), "
                                   f"got {np.shape(observation)}")
        if not np.isfinite(obs).all():
            raise ObservationError("observation: contains NaN or Inf")
        return obs

    def _takes_noise(self) -> bool:
        return self.metadata["noise_input"]

    def _noise(self, noise, batch: int) -> np.ndarray | None:
        if noise is None:
            return None
        if not self._takes_noise():
            raise ObservationError("noise: this policy was exported without a noise input")
        arr = np.asarray(noise, dtype=np.float32)
        dim = self.metadata["act_dim"]
        if arr.ndim == 1 and batch == 1:
            arr = arr[None]
        if arr.shape != (batch, dim):
            raise ObservationError(f"noise: expected shape ({dim},) or ({batch}, {dim}), "
                                   f"got {np.shape(noise)}")
        if not np.isfinite(arr).all():
            raise ObservationError("noise: contains NaN or Inf")
        return arr

    def __call__(self, observation, noise=None) -> np.ndarray:
        """Action(s) in env units; a single observation gives shape (act_dim,)."""
        single = np.ndim(observation) == len(observation_shape(self.metadata))
        obs = self._observation(observation)
        actions = self._run(obs, self._noise(noise, len(obs)))
        return actions[0] if single else actions


class OnnxPolicy(_Policy):
    def __init__(self, path: str | Path, threads: int = 1, expected: dict | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise PolicyError(f"policy {self.path}: file not found")
        # Read once: the session, the digest check and model_hash then describe the same bytes,
        # even if the file is replaced meanwhile.
        try:
            model = self.path.read_bytes()
        except OSError as err:
            raise PolicyError(f"policy {self.path}: {error_summary(err)}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:
            raise PolicyError(f"policy {self.path}: not a loadable ONNX model "
                              f"({type(err).__name__})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise PolicyError(f"policy {self.path}: no {METADATA_KEY!r} metadata; "
                              "export it with fpmd_core.export")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            raise PolicyError(f"policy {self.path}: metadata is not valid JSON") from None
        self.metadata = validate_metadata(meta, f"policy {self.path}")
        self._check_digest(model)
        self._check_graph()
        check_expected(self.metadata, f"policy {self.path}", expected or {})
        self.model_hash = content_hash(model)

    def _check_digest(self, model: bytes) -> None:
        """The graph as exported (policies exported before the digest existed carry none)."""
        recorded = self.metadata.get("graph_sha256")
        if recorded is None:
            return
        import onnx

        digest = graph_digest(onnx.load_from_string(model).graph)
        if digest != recorded:
            raise PolicyError(f"policy {self.path}: corrupt: its graph (operators and weights) "
                              f"has sha256 {digest[:12]}..., its metadata graph_sha256 says "
                              f"{recorded[:12]}...; copy it again, or export it again from its "
                              "checkpoint")

    def _check_graph(self) -> None:
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        source = f"policy {self.path}"
        shape = observation_shape(self.metadata)
        if "observation" not in inputs or tuple(inputs["observation"][1:]) != shape:
            raise PolicyError(f"{source}: graph input 'observation' {inputs.get('observation')} "
                              f"does not match the metadata's observation shape {shape}")
        if "action" not in outputs or outputs["action"][-1] != self.metadata["act_dim"]:
            raise PolicyError(f"{source}: graph output 'action' {outputs.get('action')} "
                              f"does not match act_dim={self.metadata['act_dim']}")
        if ("noise" in inputs) != self.metadata["noise_input"]:
            raise PolicyError(f"{source}: noise input presence disagrees with metadata")

    def _run(self, obs: np.ndarray, noise) -> np.ndarray:
        feed = {"observation": obs}
        if self.metadata["noise_input"]:
            feed["noise"] = (np.zeros((len(obs), self.metadata["act_dim"]), np.float32)
                             if noise is None else np.asarray(noise, np.float32))
        return self.session.run(["action"], feed)[0]


class CheckpointPolicy(_Policy):
    """The same deploy graph run by torch from a training checkpoint.

    `threads` sets torch's thread count for the whole process (torch has no per-model
    setting): meant for a deploy process, not for use inside a running trainer."""

    def __init__(self, path: str | Path, expected: dict | None = None, threads: int = 1):
        import torch

        from .agents import make_agent
        from .checkpoint import load_agent_state, load_checkpoint
        from .config import config_from_dict
        from .export import deploy_graph, policy_metadata
        from .tasks import TaskSpec

        self.path = Path(path)
        payload = load_checkpoint(self.path)
        cfg = config_from_dict(payload["config"])
        spec_dict = dict(payload["task_spec"])
        spec_dict["obs_terms"] = tuple(tuple(t) for t in spec_dict["obs_terms"])
        spec = TaskSpec(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in spec_dict.items()})
        # What the caller expects is checked before any tensor is loaded: a checkpoint of
        # another task, algorithm or size is named as such, not as a state_dict error.
        self.metadata = validate_metadata(
            policy_metadata(cfg, spec, False, int(payload["counters"]["env_steps"])),
            f"checkpoint {self.path}")
        check_expected(self.metadata, f"checkpoint {self.path}", expected or {})
        torch.set_num_threads(threads)
        agent = make_agent(spec.obs_shape or spec.obs_dim, spec.act_dim, cfg.agent,
                           torch.device("cpu"))
        load_agent_state(agent, payload, self.path)
        # The general graph: it accepts an optional x0 (`noise`) like an export with noise input.
        self.graph = deploy_graph(agent, spec, noise_input=True).eval()
        self.model_hash = file_hash(self.path)

    def _takes_noise(self) -> bool:
        return True  # the torch deploy graph always has its optional noise argument

    def _run(self, obs: np.ndarray, noise) -> np.ndarray:
        import torch

        with torch.no_grad():
            noise_t = None if noise is None else torch.as_tensor(noise, dtype=torch.float32)
            return self.graph(torch.as_tensor(obs), noise_t).numpy()


def load_policy(path: str | Path, expected: dict | None = None, threads: int = 1):
    """An ONNX file (the deploy path) or a training checkpoint (.pt)."""
    if Path(path).suffix == ".onnx":
        return OnnxPolicy(path, threads=threads, expected=expected)
    return CheckpointPolicy(path, expected=expected, threads=threads)


def rest_action(robot: dict | None, act_dim: int) -> np.ndarray:
    """The command, in env units, that asks the actuators for nothing: zeros for torques, but for
    a position-controlled robot (`robot`: its metadata, None for benchmark tasks) its default
    pose, since a joint target of 0 rad would move it. What safe actions and command timeouts
    send."""
    if robot and robot.get("control_mode") == "position":
        return np.asarray(robot["default_joint_pos"], dtype=np.float64)
    return np.zeros(act_dim, dtype=np.float64)
