"""bench/bench_update_parts.py: the part timer times every part of a real update and leaves the
agent and the update's module as they were; variants are parsed or named; a short run writes one
entry per size and variant, the first at speed 1 against itself."""

import argparse
import json
import sys

import pytest
import torch
from test_core_weights import OBS_DIM, make_batch

from bench import bench_update_parts
from bench.bench_update_parts import MODULE_PARTS, PartTimer, parse_variant
from fpmd_core import linear as linear_module
from fpmd_core.agents import fpmd as fpmd_module
from fpmd_core.agents import make_agent
from fpmd_core.config import make_config
from fpmd_core.linear import onednn_available


def test_part_timer_times_each_part_and_restores_what_it_wrapped(one_thread_torch):
    cfg = make_config('cpu', overrides={'agent.algo': 'fpmd_m', 'agent.hidden': 32,
                                        'agent.batch_size': 16, 'agent.actor_interval': 2})
    agent = make_agent(OBS_DIM, 1, cfg.agent, torch.device('cpu'), gradient_budget=10)
    originals = {name: getattr(fpmd_module, name) for name in MODULE_PARTS}
    with PartTimer(agent) as timer:
        agent.update(make_batch(act_dim=1))
        assert 'actor' not in timer.seconds  # every second update
        agent.update(make_batch(act_dim=1))
    assert set(timer.seconds) == {'best_of_n_next_actions', 'td_target', 'critic', 'weights',
                                  'actor', 'polyak'}
    assert all(seconds > 0 for seconds in timer.seconds.values())
    assert agent.actor_updates == 1
    for name in ('training_samples', 'weights_and_q_statistics', 'update_actor'):
        assert name not in vars(agent), name  # the class's methods again
    assert {name: getattr(fpmd_module, name) for name in MODULE_PARTS} == originals


def test_variants_are_parsed_and_bad_ones_named():
    assert parse_variant('threads2') == (2, 'chosen')
    assert parse_variant('threads1_onednn') == (1, 'onednn')
    assert parse_variant('threads1_torch_linear') == (1, 'torch_linear')
    for bad in ('threads0', 'two', 'threads2_mkl'):
        with pytest.raises(argparse.ArgumentTypeError,
                           match='threadsN, threadsN_onednn or threadsN_torch_linear'):
            parse_variant(bad)


def test_a_short_run_writes_every_size_and_variant(tmp_path, monkeypatch, one_thread_torch):
    chosen = linear_module._use_onednn
    out = tmp_path / 'parts.json'
    monkeypatch.setattr(sys, 'argv', [
        'bench_update_parts', '--sizes', '2x128', '--variants', 'threads1_onednn',
        'threads1_torch_linear', 'threads1', '--set', 'agent.batch_size=64', '--transitions', '200',
        '--rounds', '2', '--seconds', '0.05', '--profile-updates', '2', '--out', str(out)])
    try:
        bench_update_parts.main()
    finally:
        linear_module._use_onednn = chosen
    result = json.loads(out.read_text())
    assert result['task'] == 'InvertedPendulum-v5' and result['algo'] == 'fpmd_m'
    variants = result['sizes']['2x128']
    assert list(variants) == ['threads1_onednn', 'threads1_torch_linear', 'threads1']
    assert variants['threads1_onednn']['speed_vs_first'] == 1.0
    for entry in variants.values():
        assert len(entry['rounds_update_ms']) == 2
        assert entry['update_ms'] > 0
        assert set(entry['parts_ms']) >= {'replay_sample', 'best_of_n_next_actions', 'critic'}
    profiled = result['operators']['2x128']
    assert profiled['variant'] == 'threads1_onednn' and profiled['updates'] == 2
    shares = [entry['self_cpu_share'] for entry in profiled['top']]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    # 256 best-of-N rows x 128 x 128 is a oneDNN product: the first variant has them back on
    # after the other variants switched them off.
    assert result['onednn_available'] is onednn_available() is True
    assert result['onednn_chosen_here'] is (result['cpu_vendor'] == 'AuthenticAMD')
    operators = {entry['operator'] for entry in profiled['top']}
    assert 'mkldnn::_linear_pointwise' in operators


def test_bad_arguments_are_named(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['bench_update_parts', '--rounds', '0'])
    with pytest.raises(SystemExit):
        bench_update_parts.main()
    assert '--rounds: expected at least 1, got 0' in capsys.readouterr().err
