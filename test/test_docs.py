"""The user documentation (README.md, docs/) matches the code it describes.

docs/ros_interface.md is the reference for every node parameter and launch argument: each one
the code declares must have a row there, so a new parameter cannot ship undocumented. Links
between the documents must resolve, and nothing may point outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]
_LINK = re.compile(r'\]\(([^)#\s]+)(#[^)\s]*)?\)')


def _interface_rows() -> set[str]:
    text = (REPO_ROOT / 'docs' / 'ros_interface.md').read_text()
    return set(re.findall(r'^\| `([A-Za-z_][A-Za-z0-9_]*)` \|', text, flags=re.MULTILINE))


def _node_parameters() -> dict[str, list[str]]:
    from fpmd_ros import trainer_node
    from fpmd_ros.controller import parameters as controller_parameters
    from fpmd_ros.sim import node as sim_node

    return {'mujoco_sim': list(sim_node.PARAMETERS),
            'trainer': list(trainer_node.PARAMETERS),
            'policy_controller': list(controller_parameters.PARAMETERS)}


def test_every_node_parameter_has_a_row_in_the_interface_reference():
    rows = _interface_rows()
    missing = {node: [name for name in names if name not in rows]
               for node, names in _node_parameters().items()}
    assert not any(missing.values()), (
        f'parameters without a row in docs/ros_interface.md: {missing}')


def test_every_launch_argument_has_a_row_in_the_interface_reference():
    from fpmd_ros.graph import DEPLOY_ARGUMENTS, TRAIN_SIM_ARGUMENTS

    rows = _interface_rows()
    missing = [row.name for row in (*TRAIN_SIM_ARGUMENTS, *DEPLOY_ARGUMENTS)
               if row.name not in rows]
    assert not missing, f'launch arguments without a row in docs/ros_interface.md: {missing}'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_links_resolve_inside_the_repository(doc):
    text = doc.read_text()
    assert '../shared' not in text
    broken = []
    for target, _anchor in _LINK.findall(text):
        if re.match(r'^[a-z]+://', target) or target.startswith('mailto:'):
            continue
        path = (doc.parent / target).resolve()
        if not path.is_relative_to(REPO_ROOT) or not path.exists():
            broken.append(target)
    assert not broken, f'{doc.name}: links to missing files or outside the repository: {broken}'


def test_readme_stays_an_on_ramp():
    lines = (REPO_ROOT / 'README.md').read_text().splitlines()
    assert len(lines) <= 220, f'README.md has {len(lines)} lines; depth belongs in docs/'


def test_code_cites_only_documents_the_repository_has():
    cited = set()
    for folder in ('fpmd_core', 'fpmd_ros', 'launch', 'bench', 'test', 'scripts'):
        for path in (REPO_ROOT / folder).rglob('*.py'):
            cited |= {(path.relative_to(REPO_ROOT), doc)
                      for doc in re.findall(r'docs/[\w.-]+\.md', path.read_text())}
    missing = sorted((str(p), doc) for p, doc in cited if not (REPO_ROOT / doc).exists())
    assert not missing, f'code cites documents that are not in the repository: {missing}'
