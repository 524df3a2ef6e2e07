"""Checkpoints: atomic writes, loads that never unpickle code, a digest that catches a changed
bit, and errors that name the problem."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from .files import error_summary, write_atomically

FORMAT = "fpmd_core.checkpoint"
VERSION = 3
"""3: SAC with ReLU networks, the released time embedding and `agent.critic_steps`; carries
DIGEST_KEY. Earlier versions hold networks that compute something else under the same tensor
names (SAC's activation, the time embedding), so they are refused rather than resumed wrongly."""
DIGEST_KEY = "sha256"
REQUIRED = ("format", "version", "config", "task_spec", "agent", "counters", "rng")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or does not match what is expected."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves
    a half-written checkpoint under the final name. The file stores the sha256 digest of its
    content (`payload_digest`), checked by `load_checkpoint`."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    payload[DIGEST_KEY] = payload_digest(payload)
    return write_atomically(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a checkpoint written by `save_checkpoint`, its tensors on `map_location`,
    or CheckpointError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        # On the CPU first: the digest is computed there, and RNG states must stay there.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or truncated files
        raise CheckpointError(
            f"checkpoint {path}: cannot be read (corrupt, truncated or not a checkpoint): "
            f"{error_summary(err)}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an fpmd_core checkpoint "
                              f"(expected format {FORMAT!r})")
    version = payload.get("version")
    if version in (1, 2):
        raise CheckpointError(
            f"checkpoint {path}: version {version}, written by an earlier fpmd_core whose "
            f"networks differ (SAC's activation, the time embedding; docs/algorithm.md); expected "
            f"version {VERSION}: train again (its exported policy.onnx still runs as it is)")
    if version != VERSION:
        raise CheckpointError(f"checkpoint {path}: version {version!r}, expected {VERSION}")
    required = (*REQUIRED, DIGEST_KEY)
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing entries {missing}")
    if DIGEST_KEY in payload:
        content = {k: v for k, v in payload.items() if k != DIGEST_KEY}
        if payload_digest(content) != payload[DIGEST_KEY]:
            raise CheckpointError(
                f"checkpoint {path}: corrupt: its content does not match the sha256 digest "
                "stored when it was written (the file changed since); refusing to load it")
    if torch.device(map_location) != torch.device("cpu"):
        payload = _to_device(payload, torch.device(map_location))
    return payload


def payload_digest(payload: dict) -> str:
    """sha256 over the payload's structure and values: every key, every scalar, every tensor's
    dtype, shape and bytes. Stable through save and load (the order of a dict's keys is kept)."""
    digest = hashlib.sha256()
    _feed(digest, payload, "payload")
    return digest.hexdigest()


def _feed(digest, value, where: str) -> None:
    if isinstance(value, torch.Tensor):
        data = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"tensor {data.dtype} {tuple(value.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key, f"{where} key")
            _feed(digest, item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'list' if isinstance(value, list) else 'tuple'} {len(value)};".encode())
        for index, item in enumerate(value):
            _feed(digest, item, f"{where}[{index}]")
    elif value is None or isinstance(value, (bool, int, float, str, bytes)):
        digest.update(f"{type(value).__name__} {value!r};".encode())
    elif isinstance(value, (torch.dtype, torch.device)):
        digest.update(f"{type(value).__name__} {value};".encode())
    else:
        raise TypeError(f"checkpoint payload: {where} is a {type(value).__name__}; expected "
                        "tensors, dicts, lists, tuples, numbers, strings or None")


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)((k, _to_device(v, device)) for k, v in value.items())
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def describe(payload: dict) -> dict:
    """The agent a checkpoint says it holds: algorithm, observation shape, action size."""
    spec = payload["task_spec"]
    return {"algorithm": payload["config"]["agent"]["algo"],
            "obs_shape": tuple(spec.get("obs_shape") or (spec["obs_dim"],)),
            "act_dim": spec["act_dim"]}


def load_agent_state(agent, payload: dict, path: str | Path) -> None:
    """Load the checkpoint's agent state into `agent`, or raise a one-line CheckpointError that
    names the mismatch: algorithm, observation shape or action size, and the first tensor that
    does not fit. Every loader of agents (resume, CheckpointPolicy) goes through here."""
    built = {"algorithm": agent.cfg.algo, "obs_shape": tuple(agent.obs_shape),
             "act_dim": agent.act_dim}
    saved = describe(payload)
    for key, value in saved.items():
        if value != built[key]:
            raise CheckpointError(f"checkpoint {path}: {_name(key)} is {_show(value)}, "
                                  f"expected {_show(built[key])} ({_agent_text(built)})")
    try:
        agent.load_full_state(payload["agent"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path}: its agent state does not fit the configured agent "
            f"({_agent_text(built)}): {_state_mismatch(agent, payload['agent'], err)}"
        ) from None


def _name(key: str) -> str:
    return {"algorithm": "algorithm", "obs_shape": "observation shape",
            "act_dim": "action size (act_dim)"}[key]


def _show(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _agent_text(description: dict) -> str:
    return (f"a {description['algorithm']} agent for observations of shape "
            f"{list(description['obs_shape'])} and {description['act_dim']} actions")


def _shapes(modules: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in modules.items() if isinstance(v, torch.Tensor)}


def _state_mismatch(agent, state, err: Exception) -> str:
    """What differs between a saved agent state and `agent`, in one line."""
    modules = state.get("modules") if isinstance(state, dict) else None
    if not isinstance(modules, dict):
        return f"no module state ({type(err).__name__}: {' '.join(str(err).split())[:300]})"
    have, want = _shapes(modules), _shapes(agent.state_dict())
    if have.keys() != want.keys():
        other = _algorithm_with_these_tensors(agent, have)
        missing, unexpected = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
        parts = [f"the tensors are those of a {other} agent" if other else
                 "the tensors are those of another agent"]
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        return "; ".join(parts)
    for key in want:
        if have[key] != want[key]:
            return (f"{key} has shape {list(have[key])} in the checkpoint, {list(want[key])} in "
                    "the agent (a different observation or action size, or network size)")
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


def _algorithm_with_these_tensors(agent, shapes: dict[str, tuple]) -> str | None:
    """The algorithm whose agent (same sizes otherwise) has exactly these tensor names."""
    from .agents import make_agent
    from .config import ALGORITHMS

    for algo in ALGORITHMS:
        if algo == agent.cfg.algo:
            continue
        cfg = dataclasses.replace(agent.cfg, algo=algo)
        candidate = make_agent(agent.obs_shape, agent.act_dim, cfg, torch.device("cpu"))
        if _shapes(candidate.state_dict()).keys() == shapes.keys():
            return algo
    return None
