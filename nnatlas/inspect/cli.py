"""``nnatlas show`` and ``nnatlas draw``: the card and per-layer summary; the diagrams as files.

Errors are raised as ``ValueError``/``KeyError``/``OSError`` with a one-line message;
``nnatlas.cli.main`` prints that line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

import nnatlas
from nnatlas.inspect.diagram import FORMATS, diagram
from nnatlas.inspect.render import LANGS
from nnatlas.inspect.summary import summary

__all__ = ["add_show_parser", "add_draw_parser", "parse_shape"]


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` -> ``(1, 3, 64, 64)``; anything else raises a ValueError saying what was expected."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--input expects positive sizes separated by commas, batch first, such as 1,3,64,64; "
                         f"got {text!r}")
    return tuple(int(p) for p in parts)


def _input(name: str, shape_text: str | None) -> Any:
    card = nnatlas.card(name)  # an unknown name fails here, before any work
    if shape_text is None:
        return None
    shape = parse_shape(shape_text)
    if card.multi_input:
        raise ValueError(f"{name} takes {len(card.input_shape)} inputs {card.input_shape}; --input gives one "
                         "tensor, so leave it out to use the model's example input")
    if card.input_dtype == "int":
        return torch.zeros(shape, dtype=torch.long)  # token id 0 exists in every vocabulary
    return torch.zeros(shape)


def _depth(value: int) -> int | None:
    if value < 0:
        raise ValueError(f"--depth expects 0 (every level) or a positive number of levels; got {value}")
    return value or None


def _cmd_show(args: argparse.Namespace) -> int:
    inputs = _input(args.name, args.input)
    table = summary(args.name, inputs, depth=_depth(args.depth))
    print(nnatlas.registry.format_card(nnatlas.card(args.name)))
    print()
    print(table)
    return 0


def _cmd_draw(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = (args.format or out.suffix.lstrip(".") or "svg").lower()
    if fmt not in FORMATS:
        raise ValueError(f"--format expects one of {', '.join(FORMATS)}; got {fmt!r}")
    suffix = out.suffix.lstrip(".").lower()
    if suffix != fmt:  # "-o net.svg --format pdf" writes net.pdf; "-o net" writes net.svg
        out = out.with_suffix("." + fmt) if suffix in FORMATS else out.with_name(f"{out.name}.{fmt}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write {out}: directory {out.parent} is not writable")
    inputs = _input(args.name, args.input)
    drawing = diagram(args.name, inputs, depth=_depth(args.depth), blocks=not args.no_blocks, lang=args.lang,
                      bare_shapes=args.bare_shapes)
    for path in drawing.render_all(out, fmt):
        print(path)
    return 0


def add_show_parser(sub: Any) -> argparse.ArgumentParser:
    """``nnatlas show NAME [--input 1,3,64,64] [--depth N]``."""
    p = sub.add_parser("show", help="print a model's card and its per-layer summary (shapes, parameters, MACs)")
    p.add_argument("name", help="a registered model (nnatlas list)")
    p.add_argument("--input", metavar="SHAPE", help="input shape with the batch, e.g. 1,3,64,64 (default: the "
                   "card's example input at batch size 1)")
    p.add_argument("--depth", type=int, default=2, help="levels of layers listed; 0 lists every level (default 2)")
    p.set_defaults(func=_cmd_show)
    return p


def add_draw_parser(sub: Any) -> argparse.ArgumentParser:
    """``nnatlas draw NAME -o FILE [--format svg|png|pdf|dot] [--depth N] [--no-blocks] [--lang zh] [--bare-shapes]``."""
    p = sub.add_parser("draw", help="draw a model's diagram (and one per block type) with Graphviz")
    p.add_argument("name", help="a registered model (nnatlas list)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the main diagram; block diagrams go beside it as FILE-stem_BLOCK.FORMAT")
    p.add_argument("--format", metavar="|".join(FORMATS), help="default: FILE's suffix, else svg")
    p.add_argument("--input", metavar="SHAPE", help="input shape with the batch, e.g. 1,3,64,64")
    p.add_argument("--depth", type=int, default=1, help="levels of blocks opened; 0 opens every level (default 1)")
    p.add_argument("--no-blocks", action="store_true", help="draw only the main diagram")
    p.add_argument("--lang", default="en", metavar="|".join(LANGS), help="zh writes every descriptive label in Chinese "
                   "(layer type names stay as the seeds write them)")
    p.add_argument("--bare-shapes", action="store_true", help="write shapes as [B, 64, 56, 56] instead of the "
                   "default [B, C=64, H=56, W=56]")
    p.set_defaults(func=_cmd_draw)
    return p
