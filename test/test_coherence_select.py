"""scripts/coherence_select.py: the overlap of consecutive predictions and the selection rules."""
import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "coherence_select", Path(__file__).resolve().parents[1] / "scripts" / "coherence_select.py")
cs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cs)


def test_distance_compares_the_instants_both_predictions_cover():
    torch.manual_seed(0)
    tp, a, start, executed = 16, 8, 1, 8
    prev = torch.randn(tp, a)
    props = torch.randn(4, tp, a)
    # proposal 2 continues exactly where the previous prediction was going; its actions after the
    # overlap (indices 8..15) are free and must not count
    props[2, start:start + 7] = prev[start + executed:]
    d = cs.coherence_distance(prev, props, start, executed)
    assert d.shape == (4,)
    assert d[2] == 0.0 and bool((d[[0, 1, 3]] > 0).all())
    props[2, 8:] += 100.0
    props[2, 0] += 100.0  # index 0 is the instant before the newest observation: not compared either
    assert cs.coherence_distance(prev, props, start, executed)[2] == 0.0
    props[2, start, 0] += 1.0
    assert cs.coherence_distance(prev, props, start, executed)[2] == pytest.approx(1.0)


def test_distance_refuses_predictions_that_do_not_overlap():
    with pytest.raises(ValueError, match="no overlap"):
        cs.coherence_distance(torch.zeros(8, 2), torch.zeros(3, 8, 2), 1, 8)


def test_rules_pick_as_documented():
    p = cs.CoherencePlanner.__new__(cs.CoherencePlanner)
    q = torch.tensor([0.1, 0.9, 0.8, 0.2])
    dist = torch.tensor([0.0, 5.0, 1.0, 3.0])
    for rule, want in (("first", 0), ("coh", 0), ("critic", 1), ("topk", 2)):
        p.rule, p.k, p.lam = rule, 2, 1.0
        assert p._pick(q, dist) == want, rule
    p.rule = "blend"
    assert p._pick(q, dist) == 2  # z(Q) - z(d): 0.73 + 0.56 for proposal 2, 0.98 - 1.24 for 1
    p.rule = "coh"
    assert p._pick(None, None) == 0  # an episode's first decision, no critic
    p.rule = "topk"
    assert p._pick(q, None) == 1  # first decision: the critic's choice
    with pytest.raises(ValueError, match="rule"):
        cs.CoherencePlanner(None, "nearest", 8, 0)
