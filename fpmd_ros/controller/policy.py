"""Loading the policy_controller's policy: the file checks, the metadata checks and the warm-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpmd_ros.controller.rules import ConfigureError

WARMUP_INFERENCES = 10


def load_checked_policy(path: str, expected_task: str, threads: int):
    """The policy at ``path`` with metadata checked for use by this node, or ConfigureError."""
    from fpmd_core.files import error_summary
    from fpmd_core.runtime import PolicyError, load_policy

    if not path:
        raise ConfigureError("parameter 'policy' is empty; expected the path of an exported "
                             '.onnx policy or a .pt checkpoint')
    if Path(path).suffix not in ('.onnx', '.pt'):
        raise ConfigureError(f"parameter 'policy' is {path!r}; expected a .onnx or .pt file")
    if Path(path).is_dir():
        raise ConfigureError(f"parameter 'policy': {path} is a directory; expected a .onnx or "
                             '.pt file')
    if not Path(path).is_file():
        raise ConfigureError(f"parameter 'policy': {path}: file not found")
    expected = {'task': expected_task} if expected_task else None
    try:
        policy = load_policy(path, expected=expected, threads=threads)
    except PolicyError as error:
        prefix = "parameter 'expected_task': " if expected and ' task is ' in str(error) else ''
        raise ConfigureError(f'{prefix}{error}') from None
    except Exception as error:  # corrupt checkpoint (CheckpointError), unreadable file, ...
        raise ConfigureError(f"policy {path}: cannot be loaded ({error_summary(error)})") \
            from None
    meta = policy.metadata
    low = np.asarray(meta['action_low'], dtype=np.float64)
    high = np.asarray(meta['action_high'], dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
        raise ConfigureError(f'policy {path}: action bounds {low.tolist()} .. {high.tolist()} '
                             'are not finite with low <= high')
    if len(meta['actuator_names']) != meta['act_dim']:
        raise ConfigureError(f"policy {path}: {len(meta['actuator_names'])} actuator names for "
                             f"act_dim {meta['act_dim']}")
    if not meta['control_period_s'] > 0:
        raise ConfigureError(f"policy {path}: control_period_s is {meta['control_period_s']}; "
                             'expected > 0')
    return policy


def warm_up(policy, meta: dict, inferences: int = WARMUP_INFERENCES) -> None:
    """Run ``policy`` on zeros of its input shape and dtype (uint8 frames for pixel policies)
    ``inferences`` times: the first calls allocate, so the first real control step is not the
    slowest. ConfigureError if it fails or returns anything but ``act_dim`` finite values."""
    from fpmd_core.runtime import observation_shape

    dtype = np.uint8 if meta.get('obs_dtype') == 'uint8' else np.float32
    obs = np.zeros(observation_shape(meta), dtype=dtype)
    for _ in range(inferences):
        try:
            action = np.asarray(policy(obs), dtype=np.float64)
        except Exception as error:
            raise ConfigureError(f'warm-up inference failed: {type(error).__name__}: '
                                 f'{error}') from None
        if action.shape != (meta['act_dim'],) or not np.all(np.isfinite(action)):
            raise ConfigureError(f'warm-up inference returned {action.tolist()}; expected '
                                 f"{meta['act_dim']} finite values")
