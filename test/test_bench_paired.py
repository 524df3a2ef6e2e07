"""The paired benchmark against stable-baselines3 SAC (bench/bench_paired_sb3.py): the score's
normalisation, the seed-noise rule, what an interrupted run needs on the next sitting (skip,
resume from its newest checkpoint, start over), and one real SB3 run of a few hundred steps
evaluated with our protocol. Synthetic run dirs, no training beyond that SB3 run."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench import bench_learning, bench_paired_sb3
from bench.bench_learning import SB3_SAC, group_starts, next_action
from bench.bench_paired_sb3 import normalised, scores, seed_noise
from bench.common import REPO, child_env
from fpmd_core.config import config_from_dict, make_config, parse_override, save_config
from fpmd_core.trainer import evaluation_seeds

TASK = 'InvertedPendulum-v5'
OVERRIDES = [f'task.id={TASK}', 'agent.algo=fpmd_m', 'trainer.total_steps=600']


def aggregate(finals_by_task):
    """A budget's aggregate as bench_learning makes it, reduced to what the scores read:
    task -> algo -> final deploy return per seed."""
    return {'tasks': {task: {algo: {'deploy': {'final_per_seed': finals}}
                             for algo, finals in algos.items()}
                      for task, algos in finals_by_task.items()}}


def test_normalised_is_zero_at_random_and_one_at_the_best_run():
    assert normalised(10.0, 10.0, 110.0) == 0.0
    assert normalised(110.0, 10.0, 110.0) == 1.0
    assert normalised(60.0, 10.0, 110.0) == 0.5
    assert normalised(-40.0, 10.0, 110.0) == -0.5  # worse than random stays visible
    # Negative returns (Reacher): the same line through the two anchors.
    assert normalised(-5.0, -43.0, -4.0) == pytest.approx(38 / 39)
    assert normalised(5.0, 10.0, 10.0) is None  # no run beat the random policy: undefined


def test_seed_noise_compares_the_difference_of_means_with_the_pooled_std():
    ours, peer = [1.0, 2.0, 3.0], [1.5, 2.5, 3.5]  # sample std 1 on both sides
    within = seed_noise(ours, peer)
    assert within['difference'] == pytest.approx(-0.5)
    assert within['pooled_std'] == pytest.approx(1.0)
    assert within['verdict'] == 'within noise'
    assert seed_noise([2.5, 3.5, 4.5], peer)['verdict'] == 'within noise'  # +1 = pooled std
    assert seed_noise([4.0, 5.0, 6.0], peer)['verdict'] == 'ahead'  # +2.5
    assert seed_noise([0.0, 1.0, 2.0], [2.0, 3.0, 4.0])['verdict'] == 'behind'  # -2
    # Unequal spreads: sqrt((0.25 + 1) / 2).
    unequal = seed_noise([0.0, 0.5, 1.0], peer)
    assert unequal['pooled_std'] == pytest.approx(math.sqrt(0.625))
    assert unequal['verdict'] == 'behind'  # -2 beyond 0.79
    one_seed = seed_noise([1.0], [2.0])
    assert one_seed['verdict'] == 'n/a' and one_seed['difference'] == -1.0


def test_scores_normalise_per_task_by_the_best_run_of_any_budget_and_compare_with_sb3():
    budgets = {
        '25000': aggregate({
            'A-v5': {'fpmd_m': [50.0, 60.0, 70.0], SB3_SAC: [55.0, 60.0, 65.0]},
            'B-v5': {'fpmd_m': [10.0, 12.0, 14.0], SB3_SAC: [30.0, 31.0, 32.0]},
            'C-v5': {SB3_SAC: [1.0, 2.0, 3.0]}}),  # ours missing: out of the means
        '50000': aggregate({
            'A-v5': {'fpmd_m': [90.0, 100.0, 110.0], SB3_SAC: [80.0, 80.0, 80.0]},
            'B-v5': {'fpmd_m': [40.0, 40.0, 40.0], SB3_SAC: [20.0, 35.0, 50.0]}})}
    randoms = {'A-v5': {'mean': 10.0}, 'B-v5': {'mean': 0.0}, 'C-v5': {'mean': 0.0}}
    result = scores(budgets, randoms)

    # The best final return over every algorithm, seed and budget anchors 1.
    assert result['scale']['A-v5'] == {'random': 10.0, 'best': 110.0,
                                       'best_run': 'FPMD-M at 50000 steps'}
    assert result['scale']['B-v5']['best'] == 50.0
    small = result['budgets']['25000']
    a = small['tasks']['A-v5']['fpmd_m']
    assert a['per_seed'] == pytest.approx([0.4, 0.5, 0.6])
    assert a['mean'] == pytest.approx(0.5) and a['std'] == pytest.approx(0.1)
    # Means over the tasks ours shares with SB3 SAC (A and B, not C).
    [row] = small['means']
    assert row['tasks'] == ['A-v5', 'B-v5']
    assert row['mean']['fpmd_m'] == pytest.approx((0.5 + 0.24) / 2)
    assert row['mean'][SB3_SAC] == pytest.approx((0.5 + 0.62) / 2)
    assert small['versus_sb3']['A-v5']['fpmd_m']['verdict'] == 'within noise'
    assert small['versus_sb3']['B-v5']['fpmd_m']['verdict'] == 'behind'
    large = result['budgets']['50000']
    assert large['versus_sb3']['A-v5']['fpmd_m']['verdict'] == 'ahead'
    assert large['versus_sb3']['B-v5']['fpmd_m']['verdict'] == 'within noise'

    checks = bench_paired_sb3.goal_checks(small)
    assert checks == [f"- FPMD-M: mean {(0.5 + 0.24) / 2:.3f} against SB3 SAC's "
                      f"{(0.5 + 0.62) / 2:.3f} over 2 tasks (A-v5, B-v5), at least as high: no; "
                      "tasks behind beyond seed noise: B-v5"]


def test_one_of_ours_on_fewer_tasks_gets_its_own_mean_and_leaves_the_others_whole():
    """A sitting in progress: FPMD-R has run one of three tasks. FPMD-M and SB3 SAC keep their
    means over all three; FPMD-R is compared with SB3 SAC over its one task, in a row of its
    own that every algorithm with that task is in too."""
    budgets = {'50000': aggregate({
        'A-v5': {'fpmd_m': [50.0, 100.0], 'fpmd_r': [10.0, 20.0], SB3_SAC: [40.0, 50.0]},
        'B-v5': {'fpmd_m': [80.0, 100.0], SB3_SAC: [60.0, 70.0]},
        'C-v5': {'fpmd_m': [60.0, 80.0], SB3_SAC: [30.0, 100.0]}})}
    randoms = {task: {'mean': 0.0} for task in ('A-v5', 'B-v5', 'C-v5')}  # best 100 on each
    result = scores(budgets, randoms)['budgets']['50000']
    everything, only_a = result['means']
    assert everything['tasks'] == ['A-v5', 'B-v5', 'C-v5']
    assert set(everything['mean']) == {'fpmd_m', SB3_SAC}
    assert everything['mean']['fpmd_m'] == pytest.approx((0.75 + 0.9 + 0.7) / 3)
    assert only_a['tasks'] == ['A-v5']
    assert only_a['mean'] == pytest.approx({'fpmd_m': 0.75, 'fpmd_r': 0.15, SB3_SAC: 0.45})
    checks = bench_paired_sb3.goal_checks(result)
    assert checks[0].startswith(f"- FPMD-M: mean {(0.75 + 0.9 + 0.7) / 3:.3f} against SB3 "
                                f"SAC's {(0.45 + 0.65 + 0.65) / 3:.3f} over 3 tasks, ")
    assert checks[1].startswith("- FPMD-R: mean 0.150 against SB3 SAC's 0.450 over 1 tasks "
                                "(A-v5), at least as high: no")


def test_a_score_with_fewer_seeds_than_the_table_says_how_many_and_one_seed_shows_no_std():
    """A sitting in progress leaves some entries with fewer seeds: '± 0.00' for one seed would
    read as no seed noise at all."""
    budgets = {'50000': aggregate({
        'A-v5': {'fpmd_m': [50.0, 100.0, 75.0], 'fpmd_r': [10.0], SB3_SAC: [40.0, 50.0, 60.0]},
        'B-v5': {'fpmd_m': [80.0, 100.0, 90.0], 'fpmd_r': [20.0, 40.0],
                 SB3_SAC: [60.0, 70.0, 80.0]}})}
    result = scores(budgets, {task: {'mean': 0.0} for task in ('A-v5', 'B-v5')})
    cells = {task: {algo: bench_paired_sb3.score_cell(score, 3) for algo, score in algos.items()}
             for task, algos in result['budgets']['50000']['tasks'].items()}
    assert cells['A-v5'] == {'fpmd_m': '0.75 ± 0.25', 'fpmd_r': '0.10 (1 seed)',
                             SB3_SAC: '0.50 ± 0.10'}
    assert cells['B-v5']['fpmd_r'] == '0.30 ± 0.14 (2 seeds)'


def test_paired_groups_put_every_algorithm_and_sb3_of_a_task_budget_and_seed_together(tmp_path):
    groups = bench_paired_sb3.paired_groups(['A-v5', 'B-v5'], ['fpmd_m', 'sac'], 2,
                                            [25_000, 50_000], tmp_path)
    assert len(groups) == 2 * 2 * 2
    for group in groups:
        assert [run.algo for run in group] == ['fpmd_m', 'sac', SB3_SAC]
        assert len({(run.task, run.seed, run.total_steps) for run in group}) == 1
        assert all(run.out_dir == tmp_path / f'steps_{run.total_steps}' for run in group)
    assert groups[0][0].total_steps == 50_000  # the longer budget first


def write_eval(directory, steps):
    directory.mkdir(parents=True, exist_ok=True)
    lines = ['env_steps,updates,wall_time_s,return_deploy']
    lines += [f'{s},{s},{s / 100},1.0' for s in steps]
    (directory / 'eval.csv').write_text('\n'.join(lines) + '\n')


def started_run(tmp_path, name, overrides=OVERRIDES, checkpoints=(), evaluated=(200,)):
    directory = tmp_path / name
    write_eval(directory, evaluated)
    (directory / 'run.json').write_text(json.dumps({'overrides': overrides}))
    (directory / 'checkpoints').mkdir()
    for steps in checkpoints:
        (directory / 'checkpoints' / f'step_{steps}.pt').write_bytes(b'')
    return directory


@pytest.mark.parametrize('size, running, jobs, starts', [
    (1, 0, 2, True), (2, 0, 2, True), (1, 1, 2, True), (2, 1, 2, False), (1, 2, 2, False),
    # larger than --jobs: it never fits, so it takes the first free slot rather than idle ones
    (3, 0, 2, True), (3, 1, 2, True), (3, 2, 2, False), (4, 3, 4, False), (5, 3, 4, True)])
def test_a_group_starts_when_it_fits_or_when_it_never_can_and_a_slot_is_free(size, running,
                                                                            jobs, starts):
    assert group_starts(size, running, jobs) is starts


def test_next_action_skips_finished_runs_resumes_from_the_newest_checkpoint_or_restarts(
        tmp_path):
    assert next_action(tmp_path / 'none', 'fpmd_m', 600, OVERRIDES)[0] == 'start'
    finished = started_run(tmp_path, 'finished', evaluated=(200, 400, 600))
    assert next_action(finished, 'fpmd_m', 600, OVERRIDES)[0] == 'finished'

    interrupted = started_run(tmp_path, 'interrupted', checkpoints=(200, 400, 1000))
    (interrupted / 'checkpoints' / 'step_300.pt.tmp').write_bytes(b'')  # a write cut short
    (interrupted / 'checkpoints' / 'final.pt').write_bytes(b'')
    action, checkpoint, _ = next_action(interrupted, 'fpmd_m', 2000, OVERRIDES)
    assert (action, checkpoint.name) == ('resume', 'step_1000.pt')  # numeric, not text order

    no_checkpoint = started_run(tmp_path, 'no_checkpoint')
    assert next_action(no_checkpoint, 'fpmd_m', 600, OVERRIDES)[0] == 'restart'
    other_settings = started_run(tmp_path, 'other', checkpoints=(400,),
                                 overrides=OVERRIDES + ['agent.hidden=64'])
    assert next_action(other_settings, 'fpmd_m', 600, OVERRIDES)[:2] == ('restart', None)
    sb3 = started_run(tmp_path, 'sb3', checkpoints=(400,))
    assert next_action(sb3, SB3_SAC, 600, OVERRIDES)[0] == 'restart'
    past = started_run(tmp_path, 'past', checkpoints=(800,))
    assert next_action(past, 'fpmd_m', 600, OVERRIDES)[0] == 'restart'
    unreadable = started_run(tmp_path, 'unreadable', checkpoints=(400,))
    (unreadable / 'run.json').write_text('{')
    assert next_action(unreadable, 'fpmd_m', 600, OVERRIDES)[0] == 'restart'


def test_a_run_of_another_configuration_runs_again_finished_or_not(tmp_path):
    """A profile that changed between sittings (same overrides, other resolved fields) must not
    let old runs count as new ones, nor resume into the new configuration."""
    overrides = dict(parse_override(item) for item in OVERRIDES) | {'trainer.warmup_steps': 100}
    wanted = make_config('cpu', overrides=overrides)
    old = make_config('cpu', overrides=overrides | {
        'agent.hidden': 64, 'agent.reward_scale': 0.5})
    same_finished = started_run(tmp_path, 'same', evaluated=(200, 400, 600))
    moved = make_config('cpu', overrides=overrides | {'trainer.output_dir': '/elsewhere',
                                                      'trainer.checkpoint_interval': 777})
    save_config(moved, same_finished / 'config.yaml')  # where it ran changes nothing
    assert next_action(same_finished, 'fpmd_m', 600, OVERRIDES, wanted)[0] == 'finished'

    old_finished = started_run(tmp_path, 'old_finished', evaluated=(200, 400, 600))
    save_config(old, old_finished / 'config.yaml')
    action, _, why = next_action(old_finished, 'fpmd_m', 600, OVERRIDES, wanted)
    assert action == 'restart'
    assert 'agent.hidden: 64 -> 256' in why and 'agent.reward_scale: 0.5 -> 1.0' in why
    old_unfinished = started_run(tmp_path, 'old_unfinished', checkpoints=(400,))
    save_config(old, old_unfinished / 'config.yaml')
    assert next_action(old_unfinished, 'fpmd_m', 600, OVERRIDES, wanted)[:2] == ('restart', None)
    # SB3 runs follow SB3's defaults, not our profile: a finished one stays finished
    sb3 = started_run(tmp_path, 'sb3_finished', evaluated=(200, 400, 600))
    save_config(old, sb3 / 'config.yaml')
    assert next_action(sb3, SB3_SAC, 600, OVERRIDES, wanted)[0] == 'finished'
    (old_finished / 'config.yaml').write_text('agent:\n  no_such_field: 1\n')
    assert 'no longer reads' in next_action(old_finished, 'fpmd_m', 600, OVERRIDES, wanted)[2]


def test_a_resumed_runs_wall_time_adds_the_earlier_sittings():
    rows = [{'env_steps': str(s), 'wall_time_s': str(w)}
            for s, w in ((200, 5.0), (400, 10.0), (600, 4.0), (800, 9.0), (1000, 3.0))]
    bench_learning.add_earlier_sittings(rows, [{'env_steps': 800}, {'env_steps': 400}])
    assert [float(r['wall_time_s']) for r in rows] == [5.0, 10.0, 14.0, 19.0, 22.0]


def test_random_policy_return_repeats_and_is_reused_from_the_summary():
    first = bench_paired_sb3.random_return(TASK, seeds=2, episodes=2)
    assert first == bench_paired_sb3.random_return(TASK, seeds=2, episodes=2)
    assert first['eval_seeds'] == evaluation_seeds(0, 2) + evaluation_seeds(1, 2)
    assert first['episodes'] == 4 and 0 < first['mean'] < 50  # a random pendulum falls soon
    cached = {TASK: dict(first, mean=-1.0)}
    assert bench_paired_sb3.random_returns([TASK], 2, 2, cached)[TASK]['mean'] == -1.0
    # Other episodes than the cached ones: measured again.
    assert bench_paired_sb3.random_returns([TASK], 1, 2, cached)[TASK]['mean'] != -1.0


def test_sb3_run_evaluates_with_our_protocol_into_our_eval_csv(tmp_path):
    """A real SB3 SAC run of 300 env steps (its 100 of warm-up included), evaluated every 100
    on 2 episodes, as its own process; about 10 s on the 2-core machine. Skipped where the
    bench extra (bench/requirements.txt) is not installed: stable-baselines3 is never a runtime
    dependency."""
    pytest.importorskip('stable_baselines3', reason='bench extra not installed: pip install -c '
                        'constraints.txt -r bench/requirements.txt')
    directory = tmp_path / TASK / SB3_SAC / 'seed_1'
    command = [sys.executable, '-m', 'bench.sb3_run', '--task', TASK, '--seed', '1',
               '--total-steps', '300', '--eval-interval', '100', '--eval-episodes', '2',
               '--log-interval', '100', '--out-dir', str(directory)]
    done = subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (directory / 'run.json').write_text(json.dumps({'seed': 1, 'total_steps': 300,
                                                    'command': command}))
    runs = bench_learning.seed_runs(tmp_path, TASK, SB3_SAC)
    assert len(runs) == 1
    rows = runs[0]['eval']
    assert [int(r['env_steps']) for r in rows] == [100, 200, 300]
    # Evaluated after each step's update: none before SB3's 100 steps of warm-up, then one a step.
    assert [int(r['updates']) for r in rows] == [0, 100, 200]
    for row in rows:
        assert row['return_best_of_n'] == '' and row['length_best_of_n'] == ''
        assert np.isfinite(float(row['return_deploy'])) and float(row['length_deploy']) >= 1
    alphas = [float(r['alpha']) for r in runs[0]['train']]
    assert len(alphas) == 3 and alphas[0] == 1.0 and alphas[-1] < 1.0  # SB3 tunes it from 1
    config = json.loads((directory / 'sb3_config.json').read_text())
    assert config['hyperparameters']['learning_starts'] == '100'
    assert bench_learning.stats(runs, 'return_deploy')['final_per_seed'] == [
        float(rows[-1]['return_deploy'])]


def make_run(out_dir, algo, seed, returns, alpha, config=None):
    directory = out_dir / TASK / algo / f'seed_{seed}'
    directory.mkdir(parents=True)
    if config is not None:
        save_config(config, directory / 'config.yaml')
    steps = [100 * (i + 1) for i in range(len(returns))]
    evals = ['env_steps,updates,wall_time_s,return_deploy,return_best_of_n']
    evals += [f'{s},{s},{s / 10},{r},' for s, r in zip(steps, returns, strict=True)]
    (directory / 'eval.csv').write_text('\n'.join(evals) + '\n')
    train = ['env_steps,updates,alpha,one_step_error']
    train += [f'{s},{s},{alpha / (i + 1)},{"" if algo == SB3_SAC else 0.1 / (i + 1)}'
              for i, s in enumerate(steps)]
    (directory / 'train.csv').write_text('\n'.join(train) + '\n')
    (directory / 'run.json').write_text(json.dumps({'seed': seed, 'total_steps': steps[-1],
                                                    'profile': 'cpu'}))


def test_summary_table_and_plots_come_from_the_summary_alone(tmp_path):
    out_dir = tmp_path / 'paired'
    budget = out_dir / 'steps_300'
    for seed, (ours, peer) in enumerate(((10.0, 30.0), (20.0, 40.0))):
        make_run(budget, 'fpmd_m', seed, [5.0, 8.0, ours], alpha=5.0)
        make_run(budget, SB3_SAC, seed, [5.0, 20.0, peer], alpha=1.0)
    summary = {'commands': ['python -m bench.bench_paired_sb3 ...'],
               'random_returns': {TASK: {'mean': 0.0}},
               'budgets': {'300': bench_learning.aggregate(budget, [TASK],
                                                           ['fpmd_m', SB3_SAC])}}
    bench_paired_sb3.write_outputs(out_dir, summary)
    table = (out_dir / 'summary.md').read_text()
    # Best run 40: FPMD-M 0.25 and 0.5, SB3 0.75 and 1.0; -0.5 beyond the pooled std 0.18.
    assert (f'| {TASK} | 0.0 | 40.0 | 0.38 ± 0.18 | 0.88 ± 0.18 | -0.50 (behind) |'
            in table)
    assert '| mean over 1 tasks | | | 0.38 | 0.88 | |' in table
    assert f'tasks behind beyond seed noise: {TASK}' in table
    png = out_dir / f'{TASK}_300.png'
    assert png.stat().st_size > 0
    log = json.loads((out_dir / 'summary.json').read_text())['budgets']['300']['tasks'][TASK]
    assert log['fpmd_m']['training_log']['0']['one_step_error'] == [0.1, 0.05, 0.03333]
    assert bench_paired_sb3.seed_mean(log['fpmd_m']['training_log'], 'alpha') == (
        [100, 200, 300], pytest.approx([5.0, 2.5, 5.0 / 3], rel=1e-3))
    assert bench_paired_sb3.seed_mean(log[SB3_SAC]['training_log'], 'one_step_error') == (
        [], [])

    # --from-summary: the same table from summary.json without the run dirs.
    import shutil

    shutil.rmtree(budget)
    (out_dir / 'summary.md').unlink()
    png.unlink()
    bench_paired_sb3.write_outputs(out_dir, bench_learning.read_summary(out_dir))
    assert (out_dir / 'summary.md').read_text() == table
    assert png.stat().st_size > 0


def test_the_summary_covers_every_run_on_disk_whichever_sitting_started_it(tmp_path, monkeypatch,
                                                                             capsys):
    """One sitting ran FPMD-M at 300 steps, a later one our SAC at 600: re-aggregating keeps
    both budgets and both algorithms, as a sitting's own --total-steps and --algos would not."""
    out_dir = tmp_path / 'paired'
    for seed in range(2):
        make_run(out_dir / 'steps_300', 'fpmd_m', seed, [5.0, 10.0 + seed], alpha=5.0)
        make_run(out_dir / 'steps_300', SB3_SAC, seed, [5.0, 20.0 + seed], alpha=1.0)
        make_run(out_dir / 'steps_600', 'sac', seed, [5.0, 8.0, 9.0, 30.0 + seed], alpha=1.0)
        make_run(out_dir / 'steps_600', SB3_SAC, seed, [5.0, 8.0, 9.0, 40.0 + seed], alpha=1.0)
    (out_dir / 'steps_600' / 'notes.txt').write_text('not a task')
    assert bench_paired_sb3.runs_on_disk(out_dir) == {300: ([TASK], ['fpmd_m', SB3_SAC]),
                                                      600: ([TASK], ['sac', SB3_SAC])}

    monkeypatch.setattr(sys, 'argv', ['bench_paired_sb3', '--aggregate-only', '--seeds', '2',
                                      '--out-dir', str(out_dir)])
    bench_paired_sb3.main()
    budgets = json.loads((out_dir / 'summary.json').read_text())['budgets']
    assert {b: sorted(agg['tasks'][TASK]) for b, agg in budgets.items()} == {
        '300': ['fpmd_m', SB3_SAC], '600': ['sac', SB3_SAC]}
    table = (out_dir / 'summary.md').read_text()
    assert '### 0.3k env steps' in table and '### 0.6k env steps' in table

    # Choosing runs makes no sense without running any: said, not silently ignored.
    monkeypatch.setattr(sys, 'argv', ['bench_paired_sb3', '--aggregate-only', '--total-steps',
                                      '300', '--out-dir', str(out_dir)])
    with pytest.raises(SystemExit):
        bench_paired_sb3.main()
    assert '--total-steps only choose the runs to start' in capsys.readouterr().err


def aggregate_only(out_dir, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['bench_paired_sb3', '--aggregate-only', '--seeds', '3',
                                      '--out-dir', str(out_dir)])
    bench_paired_sb3.main()
    return json.loads((out_dir / 'summary.json').read_text())['budgets']


def test_a_fresh_machine_keeps_the_runs_the_summary_records(tmp_path, monkeypatch, capsys):
    """The run dirs are not committed: a sitting on a fresh clone has only summary.json of
    the earlier sittings. Its runs stay in the summary next to the new sitting's, and a run
    dir wins over the record of the same seed."""
    out_dir = tmp_path / 'paired'
    budget = out_dir / 'steps_300'
    for seed in range(2):
        make_run(budget, 'fpmd_m', seed, [5.0, 8.0, 10.0 + seed], alpha=5.0)
        make_run(budget, SB3_SAC, seed, [5.0, 8.0, 20.0 + seed], alpha=1.0)
    before = aggregate_only(out_dir, monkeypatch)['300']['tasks'][TASK]
    table = (out_dir / 'summary.md').read_text()

    import shutil

    shutil.rmtree(budget)  # a fresh clone
    assert aggregate_only(out_dir, monkeypatch)['300']['tasks'][TASK] == before
    assert (out_dir / 'summary.md').read_text() == table

    make_run(budget, 'fpmd_m', 2, [5.0, 8.0, 30.0], alpha=5.0)  # the new sitting's seed
    (budget / TASK / 'fpmd_m' / 'seed_1').mkdir(parents=True)   # and one it ran again
    make_run(budget / 'again', 'fpmd_m', 1, [5.0, 8.0, 40.0], alpha=5.0)
    (budget / TASK / 'fpmd_m' / 'seed_1').rmdir()
    (budget / 'again' / TASK / 'fpmd_m' / 'seed_1').rename(budget / TASK / 'fpmd_m' / 'seed_1')
    shutil.rmtree(budget / 'again')
    after = aggregate_only(out_dir, monkeypatch)['300']['tasks'][TASK]
    assert after['fpmd_m']['seeds'] == [0, 1, 2]
    assert after['fpmd_m']['deploy']['final_per_seed'] == [10.0, 40.0, 30.0]
    assert after['fpmd_m']['evaluations']['0'] == before['fpmd_m']['evaluations']['0']
    assert after['fpmd_m']['training_log']['0'] == before['fpmd_m']['training_log']['0']
    assert after['fpmd_m']['runs'][0] == before['fpmd_m']['runs'][0]
    assert after[SB3_SAC] == before[SB3_SAC]

    # Records of another experiment (other overrides) are not mixed in; that is said.
    for seed in (1, 2):
        info_path = budget / TASK / 'fpmd_m' / f'seed_{seed}' / 'run.json'
        info = json.loads(info_path.read_text())
        info_path.write_text(json.dumps(info | {'overrides': ['agent.hidden=64']}))
    capsys.readouterr()
    other = aggregate_only(out_dir, monkeypatch)['300']['tasks'][TASK]
    assert other['fpmd_m']['seeds'] == [1, 2]
    assert "the summary's seeds [0]" in capsys.readouterr().out


def test_the_summary_holds_runs_of_the_profile_as_it_is_now(tmp_path, monkeypatch, capsys):
    """A run, or a record, made before the profile changed is another experiment: the paired
    summary leaves it out, with a line, and keeps the runs of the profile as it is now (and SB3
    SAC's, which have no configuration of ours)."""
    out_dir = tmp_path / 'paired'
    budget = out_dir / 'steps_300'
    parser = bench_learning.argparse.ArgumentParser()
    bench_learning.add_run_arguments(parser)
    parser.set_defaults(checkpoint_interval=bench_paired_sb3.CHECKPOINT_INTERVAL)
    args = parser.parse_args(['--warmup-steps', '100'])
    args.out_dir = out_dir
    now = bench_paired_sb3.protocol_configs(args, 300)(TASK, 'fpmd_m')
    assert bench_paired_sb3.protocol_configs(args, 300)(TASK, SB3_SAC) is None
    fields = now.to_dict()
    before = config_from_dict({**fields, 'agent': {**fields['agent'], 'target_entropy_scale': 1.5}})
    for seed, config in enumerate((now, before)):
        make_run(budget, 'fpmd_m', seed, [5.0, 8.0, 10.0 + seed], alpha=5.0, config=config)
        make_run(budget, SB3_SAC, seed, [5.0, 8.0, 20.0 + seed], alpha=1.0)
    argv = ['bench_paired_sb3', '--aggregate-only', '--seeds', '3', '--out-dir', str(out_dir),
            '--warmup-steps', '100']
    monkeypatch.setattr(sys, 'argv', argv)
    capsys.readouterr()
    bench_paired_sb3.main()
    tasks = json.loads((out_dir / 'summary.json').read_text())['budgets']['300']['tasks'][TASK]
    assert tasks['fpmd_m']['seeds'] == [0] and tasks[SB3_SAC]['seeds'] == [0, 1]
    assert ('fpmd_m: seed 1 left out: it ran with another configuration '
            '(agent.target_entropy_scale: 1.5 -> 1.0)') in capsys.readouterr().out

    # On a fresh clone only the records are left; they are judged alike.
    import shutil

    shutil.rmtree(budget)
    monkeypatch.setattr(sys, 'argv', [*argv, '--set', 'agent.target_entropy_scale=2.0'])
    bench_paired_sb3.main()
    tasks = json.loads((out_dir / 'summary.json').read_text())['budgets']['300']['tasks'][TASK]
    assert list(tasks) == [SB3_SAC]
    assert 'seed 0 left out' in capsys.readouterr().out


def test_a_run_the_summary_records_is_not_run_again(tmp_path):
    """run_all skips a run without a dir that the summary records with this invocation's
    configuration (or, where it kept none, overrides); another seed, a changed profile or a run
    dir of its own (which next_action judges) make it run."""
    parser = bench_learning.argparse.ArgumentParser()
    bench_learning.add_run_arguments(parser)
    args = parser.parse_args(['--checkpoint-interval', '5000'])
    run = bench_learning.Run(TASK, 'fpmd_m', 0, 600, tmp_path)
    sets = bench_learning.run_overrides(args, run)
    ran = bench_learning.without_per_seed_fields(make_config('cpu', overrides=sets).to_dict())
    entry = {'seeds': [0, 1], 'total_steps': 600,
             'overrides': bench_learning.overrides({'overrides': sets}), 'config': ran}
    finished = bench_learning.recorded_finished
    assert 'with this configuration' in finished(args, run, entry)
    assert 'with these overrides' in finished(args, run, {**entry, 'config': None})
    assert finished(args, run, None) is None
    assert finished(args, bench_learning.Run(TASK, 'fpmd_m', 2, 600, tmp_path), entry) is None
    assert finished(args, run, {**entry, 'total_steps': 300}) is None
    # The configuration decides where it was kept: a study's --set the profile has adopted
    # since is the same experiment; without it the overrides must be the same.
    assert 'with this configuration' in finished(
        args, run, {**entry, 'overrides': entry['overrides'][:-1]})
    assert finished(args, run, {**entry, 'overrides': entry['overrides'][:-1],
                                'config': None}) is None
    warm = {**ran, 'trainer': {**ran['trainer'], 'warmup_steps': 123}}
    assert finished(args, run, {**entry, 'config': warm}) is None
    run.directory.mkdir(parents=True)
    assert finished(args, run, entry) is None


def test_a_record_and_a_run_dir_are_one_experiment_by_their_configuration(tmp_path):
    """A run dir and a record with the same resolved configuration are one experiment though
    their overrides differ (a study's run copied in once the profile adopted its --set; a
    benchmark that checkpoints more often); a changed field that changes results is another.
    Without a kept configuration the overrides decide."""
    sets = [f'task.id={TASK}', 'agent.algo=fpmd_m']
    cfg = make_config('cpu', overrides=sets)
    directory = tmp_path / 'seed_0'
    directory.mkdir()
    save_config(cfg, directory / 'config.yaml')
    run = {'dir': directory, 'config': bench_learning.experiment_config(directory),
           'info': {'seed': 0, 'overrides': [*sets, 'agent.layers=2']}}
    kept = bench_learning.without_per_seed_fields(cfg.to_dict())
    entry = {'overrides': [*sets, 'trainer.checkpoint_interval=5000'],
             'config': {**kept, 'trainer': {**kept['trainer'], 'checkpoint_interval': 5000}}}
    difference = bench_learning.experiment_difference
    assert difference(run, entry) is None
    other = {**kept, 'agent': {**kept['agent'], 'target_entropy_scale': 2.0}}
    assert 'agent.target_entropy_scale: 2.0 -> 1.0' in difference(run, {**entry, 'config': other})
    unkept = {**run, 'config': None}
    assert 'overrides' in difference(unkept, entry)
    same_sets = {**entry, 'overrides': run['info']['overrides']}
    assert difference(unkept, same_sets) is None


def test_recorded_runs_name_their_machine():
    """Sittings run on different machines: a record keeps its own, and a record from before
    records kept one takes its aggregate's (set only where every run agreed)."""
    table = {'env_steps': [100, 200, 300], 'updates': [0, 100, 200],
             'wall_time_s': [1.0, 3.0, 5.0], 'return_deploy': [1.0, 2.0, 3.0]}
    entry = {'seeds': [0, 1], 'total_steps': 300, 'overrides': [],
             'runs': [{'seed': 0}, {'seed': 1, 'machine': {'cpu': 'B'}}],
             'evaluations': {'0': table, '1': table}}
    runs = bench_learning.recorded_runs(entry, {'cpu': 'A'})
    assert [bench_learning.run_record(run)['machine'] for run in runs] == [{'cpu': 'A'},
                                                                          {'cpu': 'B'}]
    assert [run['info']['machine'] for run in runs] == [{'cpu': 'A'}, {'cpu': 'B'}]
    assert runs[0]['rate'] == 50.0  # 100 env steps in the 2 s between the updating rows
    assert runs[0]['eval'][-1] == {'env_steps': 300, 'updates': 200, 'wall_time_s': 5.0,
                                   'return_deploy': 3.0}
    assert entry['runs'][0] == {'seed': 0}  # the earlier summary is not changed
    assert bench_learning.recorded_runs({**entry, 'total_steps': 400}, None) == []
