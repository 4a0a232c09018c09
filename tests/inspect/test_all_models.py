"""Every registered model summarises and draws on its example input, at depth 1 and at full depth."""

from __future__ import annotations

import pytest
import torch

import nnatlas
from nnatlas.inspect import diagram, summary, trace_model

MODELS = nnatlas.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_summarises_and_draws(name: str, svg_warnings) -> None:
    t = trace_model(name)  # one trace for every view below
    with torch.device("meta"):
        model = nnatlas.create(name)
    unique = {id(p): p for p in model.parameters()}
    s = summary(t, depth=None)
    assert s.total_params == sum(p.numel() for p in unique.values())
    assert s.trainable_params == sum(p.numel() for p in unique.values() if p.requires_grad)
    assert s.total_macs > 0
    assert str(s).count("\n") >= len(s.rows) + 2
    assert summary(t, depth=1).total_macs == s.total_macs
    shallow, full = diagram(t), diagram(t, depth=None, blocks=False)
    for d in (shallow, full):
        assert d.graph.nodes[0].kind == "input" and d.graph.nodes[-1].kind == "output"
        ids = {n.id for n in d.graph.nodes}
        assert all(e.src in ids and e.dst in ids for e in d.graph.edges)
        # every output is reached from some input
        assert all(any(e.dst == n.id for e in d.graph.edges) for n in d.graph.nodes if n.kind == "output")
    assert len(full.graph.nodes) >= len(shallow.graph.nodes)
    for text in [shallow.dot(), full.dot()] + [b.dot() for b in shallow.blocks]:
        assert svg_warnings(text) == ""
