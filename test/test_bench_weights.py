"""bench/bench_weights.py on real trainer checkpoints of both weight forms: it reports the
checkpoint's own form, fractions within the bounds of an effective sample fraction, the same
numbers for the same seed, and the advantage form telling a state's actions apart."""

import pytest

from bench.bench_weights import weight_spread
from fpmd_core.config import make_config
from fpmd_core.trainer import Trainer

STATES, ACTIONS = 16, 4
FORMS = ('normalized', 'advantage')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """form -> the final checkpoint of a short FPMD-M run with that weight form."""
    paths = {}
    for form in FORMS:
        cfg = make_config('cpu', overrides={
            'task.id': 'InvertedPendulum-v5', 'agent.algo': 'fpmd_m', 'agent.hidden': 32,
            'agent.batch_size': 32, 'agent.weight_form': form, 'trainer.total_steps': 300,
            'trainer.warmup_steps': 100, 'trainer.eval_interval': 0,
            'trainer.checkpoint_interval': 0, 'trainer.progress': False,
            'trainer.torch_threads': 1, 'trainer.device': 'cpu',
            'trainer.output_dir': str(tmp_path_factory.mktemp(form))})
        paths[form] = Trainer(cfg).run().checkpoint
    return paths


@pytest.mark.parametrize('form', FORMS)
def test_reports_the_checkpoints_form_within_bounds_and_repeatably(checkpoints, form):
    row = weight_spread(checkpoints[form], STATES, ACTIONS, seed=0)
    assert (row['algo'], row['weight_form'], row['env_steps']) == ('fpmd_m', form, 300)
    for key, n in (('ess_batch_one_action_per_state', STATES),
                   ('ess_among_actions_of_a_state', ACTIONS)):
        assert 1 / n - 1e-9 <= row[key] <= 1 + 1e-9, (key, row[key])
    assert row['z_std_across_states'] >= 0 and row['z_std_across_actions_of_a_state'] >= 0
    assert weight_spread(checkpoints[form], STATES, ACTIONS, seed=0) == row
    assert weight_spread(checkpoints[form], STATES, ACTIONS, seed=1) != row


def test_advantage_scores_tell_a_states_actions_apart_more_than_normalised_ones(checkpoints):
    """The advantage form divides by the spread of Q within states (sigma_A), the normalised
    form by its spread over states (sigma): the same kind of samples differ more in z."""
    spread = {form: weight_spread(path, STATES, ACTIONS, seed=0)[
        'z_std_across_actions_of_a_state'] for form, path in checkpoints.items()}
    assert spread['advantage'] > 3 * spread['normalized'], spread
