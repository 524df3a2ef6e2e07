"""Export of the deploy-mode sampler to ONNX, with its metadata stored inside the model.

The graph maps a raw observation to an action in the env's units: the encoder (pixels: uint8
frames (B, H, W, 3k) as a camera publishes them, scaled and encoded inside the graph), one
generator call from x0 = 0 (or an optional `noise` input), clip to [-1, 1] and rescaling to the
action bounds all happen inside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import torch
from torch import nn

from .config import Config
from .files import write_atomically

METADATA_KEY = "fpmd_metadata"
METADATA_FORMAT = "fpmd_ros.policy/1"
NFE = {"fpmd_r": 1, "fpmd_m": 1, "sac": 1}


class DeployGraph(nn.Module):
    """raw observation -> action in env units (the exported computation)."""

    def __init__(self, encoder: nn.Module, deploy_module: nn.Module, action_low, action_high):
        super().__init__()
        self.encoder = encoder
        self.deploy = deploy_module
        self.register_buffer("low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(action_high, dtype=torch.float32))

    def forward(self, observation: torch.Tensor, noise: torch.Tensor | None = None):
        action = self.deploy(self.encoder(observation), noise).clamp(-1.0, 1.0)
        return self.low + (action + 1.0) * 0.5 * (self.high - self.low)


def nfe(cfg: Config) -> int:
    return NFE.get(cfg.agent.algo, cfg.agent.diffusion_steps)


def policy_metadata(cfg: Config, spec, noise_input: bool, env_steps: int) -> dict:
    """What a consumer needs to check a policy against its robot before running it."""
    spec_dict = dataclasses.asdict(spec)
    obs_shape = list(spec.obs_shape or (spec.obs_dim,))
    pixels = len(obs_shape) == 3
    return {
        "format": METADATA_FORMAT,
        "algorithm": cfg.agent.algo,
        "task": spec.id,
        "obs_dim": spec.obs_dim,
        "obs_terms": [[name, size] for name, size in spec_dict["obs_terms"]],
        "obs_shape": obs_shape,
        "obs_dtype": "uint8" if pixels else "float32",
        "frame_stack": obs_shape[2] // 3 if pixels else 0,
        "camera": spec.camera,
        "action_repeat": spec.action_repeat,
        "act_dim": spec.act_dim,
        "action_low": list(spec.action_low),
        "action_high": list(spec.action_high),
        "actuator_names": list(spec.actuator_names),
        "joint_names": list(spec.joint_names),
        "control_period_s": spec.control_dt,
        "nfe": nfe(cfg),
        "noise_input": noise_input,
        "config_hash": cfg.hash(),
        "env_steps": env_steps,
        # Robot task files: joints, default pose, gains, observation terms, command, period
        # and the task file's sha256 (fpmd_core.robots.robot_metadata), for a deploy controller.
        **({"robot": spec.robot} if spec.robot else {}),
    }


def deploy_graph(agent, spec, noise_input: bool = False) -> DeployGraph:
    """The exported computation. Without a noise input, a one-step flow policy is specialised
    to x0 = 0 with its constant inputs folded (`one_step_from_zero`): same actions, about the
    operation count of a Gaussian actor's mean. With it, the graph takes x0 as `noise`."""
    deploy = agent.deploy_policy()
    policy = getattr(deploy, "policy", None)
    if not noise_input and getattr(deploy, "steps", None) == 1 and \
            hasattr(policy, "one_step_from_zero"):
        deploy = policy.one_step_from_zero()
    return DeployGraph(agent.encoder, deploy, spec.action_low, spec.action_high)


def export_onnx(agent, spec, cfg: Config, path: str | Path, env_steps: int = 0,
                noise_input: bool = False) -> Path:
    """Write the deploy graph to `path` atomically (mode 0644); returns the path."""
    import onnx

    path = Path(path)
    graph = deploy_graph(agent, spec, noise_input).to("cpu").eval()
    obs = torch.zeros(1, *agent.obs_shape, dtype=torch.uint8 if agent.pixels else torch.float32)
    args = (obs, torch.zeros(1, spec.act_dim)) if noise_input else (obs,)
    names = ["observation", "noise"] if noise_input else ["observation"]
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            graph, args, buffer, dynamo=False, opset_version=17, input_names=names,
            output_names=["action"],
            dynamic_axes={name: {0: "batch"} for name in names + ["action"]},
        )
    model = onnx.load_from_string(buffer.getvalue())
    # The exporter names a size-1 action dimension symbolically (it might broadcast), and
    # OnnxPolicy then refuses the model; the graph always returns (batch, act_dim).
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = spec.act_dim
    if noise_input and "noise" not in {i.name for i in model.graph.input}:
        raise ValueError(f"noise_input: the {cfg.agent.algo} deploy action does not use noise; "
                         "export it without a noise input")
    meta = policy_metadata(cfg, spec, noise_input, env_steps) | {
        "graph_sha256": graph_digest(model.graph)}
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    write_atomically(path, lambda handle: handle.write(data))
    graph.to(agent.device)
    return path


def graph_digest(graph) -> str:
    """sha256 of an ONNX graph (its operators and weights; the metadata lives outside it), so
    that a weight changed on the way to the robot (a flipped bit, a half-synced copy that still
    parses) is refused on load rather than run."""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()


def file_hash(path: str | Path) -> str:
    return content_hash(Path(path).read_bytes())


def content_hash(data: bytes) -> str:
    """A policy's model_hash: the sha256 of its file's bytes."""
    return hashlib.sha256(data).hexdigest()
