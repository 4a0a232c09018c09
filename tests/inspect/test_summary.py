"""The summary table: rows, depth, text, Markdown and JSON."""

from __future__ import annotations

import json

import torch
from torch import nn

from nnatlas.inspect import summary


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 5))


def test_rows_and_totals() -> None:
    net = _net()
    s = summary(net, torch.randn(2, 3, 4, 4))
    assert [r.path for r in s.rows] == ["", "0", "1", "2", "3", "4"]
    conv = s.rows[1]
    assert (conv.type, conv.output_shape, conv.params, conv.trainable) == ("Conv2d", (2, 8, 4, 4), 224, 224)
    assert conv.macs == 2 * 8 * 4 * 4 * 3 * 9
    assert s.total_params == sum(p.numel() for p in net.parameters())
    assert s.rows[0].macs == s.total_macs == sum(r.macs for r in s.rows[1:])
    assert s.param_bytes == 4 * s.total_params
    assert s.activation_bytes > 0


def test_frozen_parameters_are_not_trainable() -> None:
    net = _net()
    for p in net[0].parameters():
        p.requires_grad_(False)
    s = summary(net, torch.randn(1, 3, 4, 4))
    assert s.trainable_params == s.total_params - 224
    assert s.rows[1].trainable == 0


def test_text_is_an_aligned_table() -> None:
    text = str(summary(_net(), torch.randn(1, 3, 4, 4)))
    lines = text.splitlines()
    header, rule = lines[0], lines[1]
    assert header.split() == ["Layer", "Type", "Output", "shape", "Params", "Trainable", "MACs"]
    assert set(rule) == {"-"}
    table = lines[2:lines.index(rule, 2)]
    assert len(table) == 6
    assert len({len(line) for line in table + [header]}) == 1  # right-aligned numbers end in one column
    assert "Total params: 885" in text  # 224 conv + 16 norm + 645 linear and "Total MACs:" in text


def test_markdown_and_json() -> None:
    s = summary(_net(), torch.randn(1, 3, 4, 4))
    md = s.to_markdown()
    assert md.startswith("| Layer | Type | Output shape | Params | Trainable | MACs |")
    assert md.count("\n| ") == len(s.rows)
    data = json.loads(json.dumps(s.to_dict()))
    assert data["total_params"] == s.total_params and data["total_macs"] == s.total_macs
    assert data["rows"][1] == {"path": "0", "type": "Conv2d", "depth": 1, "output_shape": [1, 8, 4, 4],
                               "params": 224, "trainable": 224, "macs": 1 * 8 * 4 * 4 * 27, "calls": 1}


def test_depth_limits_rows_not_totals() -> None:
    s1 = summary("resnet18", depth=1)
    s3 = summary("resnet18", depth=None)
    assert len(s1.rows) < len(s3.rows)
    assert s1.total_macs == s3.total_macs and s1.total_params == s3.total_params
    assert all(r.depth <= 1 for r in s1.rows)
