"""A policy trained on a robot task file carries the robot's deploy metadata
(fpmd_core.robots.robot_metadata) in its ONNX metadata: validated on load, and the task is rebuilt
from it only from the very file it was trained on (sha256)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_core_export import rewrite_metadata

from fpmd_core.agents import make_agent
from fpmd_core.config import make_config
from fpmd_core.export import METADATA_KEY, export_onnx
from fpmd_core.robots import TaskFileError, robot_metadata
from fpmd_core.runtime import OnnxPolicy, PolicyError
from fpmd_core.tasks import env_from_metadata, make_env, task_spec

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def arm_task(tmp_path):
    """A private copy of the arm task (so a test can change it) and its model."""
    for name in ('arm_reach.yaml', 'arm3.xml'):
        shutil.copy(REPO_ROOT / 'sim' / name, tmp_path / name)
    return tmp_path / 'arm_reach.yaml'


def export_arm(task: Path, out: Path) -> Path:
    env = make_env(str(task))
    try:
        spec = task_spec(env, str(task))
    finally:
        env.close()
    cfg = make_config('cpu', overrides={'task.id': str(task), 'agent.algo': 'fpmd_r',
                                        'agent.hidden': 32, 'agent.layers': 2})
    torch.manual_seed(0)
    agent = make_agent(spec.obs_dim, spec.act_dim, cfg.agent, torch.device('cpu'))
    return export_onnx(agent, spec, cfg, out, env_steps=10)


def test_exported_policy_carries_the_robot_metadata(arm_task, tmp_path):
    policy = OnnxPolicy(export_arm(arm_task, tmp_path / 'arm.onnx'))
    robot = policy.metadata['robot']
    assert robot == robot_metadata(arm_task)
    assert robot['joint_names'] == ['yaw', 'shoulder', 'elbow']
    assert robot['task_file'] == str(arm_task)
    # The env rebuilt from the metadata is the task file's, in env units.
    env = env_from_metadata(policy.metadata)
    try:
        obs, _ = env.reset(seed=3)
        expected, _ = make_env(str(arm_task), normalized_actions=False).reset(seed=3)
        np.testing.assert_array_equal(obs, expected)
        assert policy(obs).shape == (3,)
    finally:
        env.close()


def test_a_benchmark_policy_has_no_robot_metadata(tmp_path):
    env = make_env('InvertedPendulum-v5')
    assert task_spec(env, 'InvertedPendulum-v5').robot is None
    env.close()


def test_a_changed_task_file_is_refused_by_name(arm_task, tmp_path):
    policy = OnnxPolicy(export_arm(arm_task, tmp_path / 'arm.onnx'))
    arm_task.write_text(arm_task.read_text().replace('episode_seconds: 5.0',
                                                     'episode_seconds: 4.0'))
    with pytest.raises(TaskFileError, match=rf'task file {arm_task}: changed since the policy '
                       r'was trained on it \(sha256 [0-9a-f]{12}\.\.\., the policy\'s metadata '
                       r'robot.task_file_sha256 says [0-9a-f]{12}\.\.\.\)'):
        env_from_metadata(policy.metadata)


def test_a_missing_task_file_is_refused_by_name(arm_task, tmp_path):
    policy = OnnxPolicy(export_arm(arm_task, tmp_path / 'arm.onnx'))
    arm_task.unlink()
    with pytest.raises(TaskFileError, match=f'the policy was trained on {arm_task}'):
        env_from_metadata(policy.metadata)


TETRAHEDRON_OBJ = ('v 0 0 0\nv 0.02 0 0\nv 0 0.02 0\nv 0 0 0.02\n'
                   'f 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n')


@pytest.fixture
def arm_task_with_assets(arm_task):
    """The arm whose model includes a file that declares a mesh, which the base shows."""
    model = arm_task.parent / 'arm3.xml'
    (arm_task.parent / 'parts').mkdir()
    (arm_task.parent / 'parts' / 'assets.xml').write_text(
        '<mujoco><asset><mesh name="cap" file="cap.obj"/></asset></mujoco>\n')
    (arm_task.parent / 'meshes').mkdir()
    (arm_task.parent / 'meshes' / 'cap.obj').write_text(TETRAHEDRON_OBJ)
    text = model.read_text().replace(
        '<compiler angle="radian"/>',
        '<compiler angle="radian" meshdir="meshes"/>\n  <include file="parts/assets.xml"/>')
    text = text.replace('<geom name="base_geom"', '<geom type="mesh" mesh="cap" contype="0" '
                        'conaffinity="0"/>\n      <geom name="base_geom"')
    model.write_text(text)
    return arm_task


def test_the_models_includes_and_meshes_are_part_of_the_policys_robot(arm_task_with_assets,
                                                                     tmp_path):
    folder = arm_task_with_assets.parent
    policy = OnnxPolicy(export_arm(arm_task_with_assets, tmp_path / 'arm.onnx'))
    files = policy.metadata['robot']['model_files']
    assert files == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                     for name in ('meshes/cap.obj', 'parts/assets.xml')}
    env_from_metadata(policy.metadata).close()  # the same files: accepted
    mesh = folder / 'meshes' / 'cap.obj'
    mesh.write_text(TETRAHEDRON_OBJ.replace('0.02', '0.03'))
    with pytest.raises(TaskFileError, match=r"file meshes/cap.obj of model .*arm3.xml: changed "
                       r"since the policy was trained on it \(sha256 [0-9a-f]{12}\.\.\., the "
                       r"policy's metadata robot.model_files\['meshes/cap.obj'\] says"):
        env_from_metadata(policy.metadata)
    mesh.write_text(TETRAHEDRON_OBJ)
    env_from_metadata(policy.metadata).close()
    (folder / 'parts' / 'assets.xml').unlink()
    with pytest.raises(TaskFileError, match=r'file parts/assets.xml of model .*arm3.xml: not '
                       r'found .*the policy was trained with it'):
        env_from_metadata(policy.metadata)


def test_a_model_without_includes_or_assets_records_none(arm_task, tmp_path):
    assert robot_metadata(arm_task)['model_files'] == {}


@pytest.mark.parametrize(('change', 'message'), [
    (lambda r: r.update(joint_names=['a', 'b', 'c']), 'robot.joint_names .* differ from'),
    (lambda r: r.update(kp=[1.0]), r'robot.kp is \[1.0\], expected act_dim=3 numbers'),
    (lambda r: r.update(task_file_sha256='xyz'), 'robot.task_file_sha256 is .xyz., expected 64'),
    (lambda r: r.update(model_files={'meshes/a.obj': 'xyz'}),
     r'robot.model_files is .*, expected an object of file paths'),
    (lambda r: r.update(model_files=['a.obj']), r'robot.model_files is \['),
    (lambda r: r.update(control_period=0.5), 'robot.control_period 0.5'),
    (lambda r: r.update(obs_dim=14), r'robot.observations sizes \[3, 3, 3, 3, 3\] do not sum'),
    (lambda r: r.update(version=7), 'robot.version 7, expected 1'),
    (lambda r: r.pop('joint_names'), "field 'robot.joint_names' is None, expected list"),
    (lambda r: r.update(control_mode='velocity'), 'expected position or effort'),
    (lambda r: r.update(action_high=[9.0, 9.0, 9.0]), 'robot.action_high .* differs'),
])
def test_bad_robot_metadata_is_named(arm_task, tmp_path, change, message):
    good = export_arm(arm_task, tmp_path / 'arm.onnx')

    def rewrite(props):
        meta = json.loads(props[METADATA_KEY])
        change(meta['robot'])
        return {METADATA_KEY: json.dumps(meta)}

    bad = tmp_path / 'bad.onnx'
    rewrite_metadata(good, bad, rewrite)
    with pytest.raises(PolicyError, match=message):
        OnnxPolicy(bad)


def test_robot_metadata_that_is_not_an_object_is_named(arm_task, tmp_path):
    good = export_arm(arm_task, tmp_path / 'arm.onnx')
    bad = tmp_path / 'bad.onnx'
    rewrite_metadata(good, bad, lambda props: {METADATA_KEY: json.dumps(
        {**json.loads(props[METADATA_KEY]), 'robot': [1]})})
    with pytest.raises(PolicyError, match="metadata field 'robot' is not a JSON object"):
        OnnxPolicy(bad)
