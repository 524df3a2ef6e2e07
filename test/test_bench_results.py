"""bench/ helpers that decide what is committed of a benchmark: the learning summary must hold
what its table and plots show (the run dirs are not committed), and the multi-host check must pick
addresses no network of the machine uses. No ROS, no training: synthetic run dirs."""

import csv
import ipaddress
import json
import os
import random
import shutil
import sys
import time

import pytest

from bench import bench_learning
from bench.bench_multi_host import POOL, pick_subnet
from bench.common import json_text
from fpmd_core.config import RESOLVED_CONFIG_NAME, make_config, save_config

TASK = 'InvertedPendulum-v5'


def write_csv(path, rows):
    with path.open('w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_run(out_dir, algo, seed, returns, best_of_n=None, config=None):
    directory = out_dir / TASK / algo / f'seed_{seed}'
    directory.mkdir(parents=True)
    if config is not None:
        save_config(config, directory / RESOLVED_CONFIG_NAME)
    steps = [1000 * (i + 1) for i in range(len(returns))]
    write_csv(directory / 'eval.csv', [
        {'env_steps': s, 'updates': s - 500, 'wall_time_s': s / 100, 'return_deploy': r,
         'return_best_of_n': '' if best_of_n is None else best_of_n[i],
         'length_deploy': r, 'length_best_of_n': '' if best_of_n is None else best_of_n[i]}
        for i, (s, r) in enumerate(zip(steps, returns, strict=True))])
    write_csv(directory / 'train.csv', [
        {'env_steps': s, 'updates': s - 500, 'alpha': 1.0 / (i + 1), 'q/mean': 0.123456789 * i,
         'weights/max': 9.0} for i, s in enumerate(steps)])
    output_dir = f'/somewhere/else/bench/results/x/{TASK}/{algo}/seed_{seed}'
    overrides = [f'task.id={TASK}', f'agent.algo={algo}', f'trainer.seed={seed}',
                 f'trainer.total_steps={steps[-1]}', f'trainer.output_dir={output_dir}']
    command = [sys.executable, '-m', 'fpmd_core.cli', '--profile', 'cpu']
    for item in overrides:
        command += ['--set', item]
    (directory / 'run.json').write_text(json.dumps({
        'task': TASK, 'algo': algo, 'seed': seed, 'profile': 'cpu', 'total_steps': steps[-1],
        'overrides': overrides, 'command': command, 'started': '2026-01-01 00:00:00',
        'returncode': 0, 'process_wall_s': 12.5}))


def test_json_text_is_json_with_number_lists_on_one_line():
    data = {'curve': [1, 2.5, None], 'nested': [[1, 2], {'a': 'b'}], 'empty': {},
            'words': ['x' * 60, 'y' * 60], 'few': ['a', 'b']}
    text = json_text(data)
    assert json.loads(text) == data
    assert '"curve": [1, 2.5, null]' in text
    assert '"few": ["a", "b"]' in text
    assert '"words": [\n' in text  # long strings one per line


def test_pick_subnet_avoids_every_network_in_use():
    used = [ipaddress.ip_network('10.0.0.0/9'), ipaddress.ip_network('10.200.0.0/16')]
    for seed in range(50):
        subnet = pick_subnet(used, random.Random(seed))
        assert subnet.prefixlen == 30 and subnet.subnet_of(POOL)
        assert not any(subnet.overlaps(network) for network in used)
    with pytest.raises(RuntimeError, match='no free /30'):
        pick_subnet([POOL], random.Random(0), tries=20)


def test_learning_summary_holds_what_the_table_and_plots_show(tmp_path):
    out_dir = tmp_path / 'learning'
    make_run(out_dir, 'sac', 0, [10.0, 30.0, 50.0])
    make_run(out_dir, 'sac', 1, [20.0, 50.0, 70.0])
    make_run(out_dir, 'fpmd_m', 0, [5.0, 15.0, 25.0], best_of_n=[6.0, 16.0, 26.0])
    bench_learning.write_aggregate(out_dir, [TASK], ['fpmd_m', 'sac'])
    summary = json.loads((out_dir / 'summary.json').read_text())
    sac = summary['tasks'][TASK]['sac']

    assert sac['curves']['deploy'] == {'env_steps': [1000, 2000, 3000], 'mean': [15.0, 40.0, 60.0],
                                       'std': pytest.approx([7.0711, 14.1421, 14.1421],
                                                            abs=1e-4)}
    assert sac['curves']['best_of_n'] is None
    assert sac['evaluations']['1']['return_deploy'] == [20.0, 50.0, 70.0]
    log = summary['tasks'][TASK]['fpmd_m']['training_log']['0']
    assert log['q/mean'] == [0.0, 0.1235, 0.2469]  # 4 significant digits
    assert log['weights/max'] == [9.0, 9.0, 9.0]
    run = sac['runs'][0]
    assert run['command'].startswith('python -m fpmd_core.cli --profile cpu')
    assert f'trainer.output_dir=bench/results/x/{TASK}/sac/seed_0' in run['command']
    assert run['process_wall_s'] == 12.5
    assert summary['commands']

    # Without the run dirs, the summary alone re-makes the table and the plot.
    table = (out_dir / 'summary.md').read_text()
    for path in [out_dir / TASK, out_dir / 'summary.md', out_dir / f'{TASK}.png']:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    bench_learning.write_outputs(out_dir, bench_learning.read_summary(out_dir))
    assert (out_dir / 'summary.md').read_text() == table
    assert (out_dir / f'{TASK}.png').stat().st_size > 0


def test_a_learning_summary_keeps_what_an_earlier_sitting_ran(tmp_path, monkeypatch):
    """A sitting that runs other tasks or algorithms into a study folder, or one on a fresh
    clone without the run dirs, keeps the runs the folder's summary.json records."""
    out_dir = tmp_path / 'learning'
    make_run(out_dir, 'fpmd_m', 0, [5.0, 15.0, 25.0])
    bench_learning.write_aggregate(out_dir, [TASK], ['fpmd_m'])
    shutil.rmtree(out_dir / TASK)  # a fresh clone: only the summary
    assert bench_learning.folder_contents(out_dir, ['Hopper-v5'], ['sac']) == (
        ['Hopper-v5', TASK], ['fpmd_m', 'sac'])
    monkeypatch.setattr(sys, 'argv', ['bench_learning', '--aggregate-only',
                                      '--out-dir', str(out_dir)])
    bench_learning.main()
    summary = json.loads((out_dir / 'summary.json').read_text())
    assert summary['tasks'][TASK]['fpmd_m']['deploy']['final_per_seed'] == [25.0]


def test_a_study_averages_the_seeds_of_its_newest_configuration_only(tmp_path, capsys):
    """A study folder where one seed is left from before a change of configuration (the
    seeds' own fields aside) aggregates the newest configuration's seeds and says which seed
    it left out; seeds of one configuration are all kept."""
    out_dir = tmp_path / 'learning'
    overrides = [f'task.id={TASK}', 'agent.algo=sac']
    before = make_config('cpu', overrides=[*overrides, 'agent.batch_size=64'])
    make_run(out_dir, 'sac', 0, [10.0, 30.0, 50.0], config=before)
    for seed in (1, 2):
        now = make_config('cpu', overrides=[*overrides, f'trainer.seed={seed}'])
        make_run(out_dir, 'sac', seed, [20.0, 50.0, 60.0 + seed], config=now)
    bench_learning.write_aggregate(out_dir, [TASK], ['sac'])
    sac = json.loads((out_dir / 'summary.json').read_text())['tasks'][TASK]['sac']
    assert sac['seeds'] == [1, 2]
    assert sac['deploy']['final_per_seed'] == [61.0, 62.0]
    assert sac['config']['agent']['batch_size'] == now.agent.batch_size != 64
    assert (f'{TASK}/sac: seed 0 left out: it ran with another configuration '
            f'(agent.batch_size: 64 -> {now.agent.batch_size})') in capsys.readouterr().out


def test_a_study_keeps_the_recorded_seeds_of_its_newest_run_dirs_configuration(tmp_path, capsys):
    """On a fresh machine a study's summary is all that is left of its seeds. A new sitting
    that re-runs seed 1 as it was, beside a trial of another configuration written before it,
    aggregates seed 1 with the recorded seed 2 (one configuration, the newest run dir's) and
    leaves the trial out: the records are judged by the newest run dir, not the first."""
    out_dir = tmp_path / 'learning'
    overrides = [f'task.id={TASK}', 'agent.algo=sac']
    seeded = {seed: make_config('cpu', overrides=[*overrides, f'trainer.seed={seed}'])
              for seed in range(3)}
    for seed, config in seeded.items():
        make_run(out_dir, 'sac', seed, [20.0, 50.0, 60.0 + seed], config=config)
    bench_learning.write_aggregate(out_dir, [TASK], ['sac'])
    shutil.rmtree(out_dir / TASK)  # a fresh clone: summary.json only

    trial = make_config('cpu', overrides=[*overrides, 'agent.batch_size=64'])
    make_run(out_dir, 'sac', 0, [10.0, 30.0, 40.0], config=trial)
    an_hour_ago = time.time() - 3600
    os.utime(out_dir / TASK / 'sac' / 'seed_0' / RESOLVED_CONFIG_NAME,
             (an_hour_ago, an_hour_ago))
    make_run(out_dir, 'sac', 1, [20.0, 50.0, 71.0], config=seeded[1])
    capsys.readouterr()
    bench_learning.write_aggregate(out_dir, [TASK], ['sac'])
    sac = json.loads((out_dir / 'summary.json').read_text())['tasks'][TASK]['sac']
    assert sac['seeds'] == [1, 2]
    assert sac['deploy']['final_per_seed'] == [71.0, 62.0]
    out = capsys.readouterr().out
    assert f'{TASK}/sac: seed 0 left out: it ran with another configuration' in out
    assert "of another experiment" not in out
