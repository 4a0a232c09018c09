"""The ``nnatlas`` command: list, show, draw, train, eval, translate, generate, sample, verify, atlas.

Each sub-command's arguments and work live beside the code they drive (``nnatlas.inspect.cli``,
``nnatlas.train.cli``); this file wires them and turns expected errors into one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import nnatlas

from nnatlas.atlas.cli import add_atlas_parser
from nnatlas.inspect.cli import add_draw_parser, add_show_parser
from nnatlas.train.cli import add_eval_parser, add_train_parser
from nnatlas.train.cli_translate import add_translate_parser
from nnatlas.train.cli_generate import add_generate_parser
from nnatlas.train.cli_sample import add_sample_parser
from nnatlas.verify import add_verify_parser


class UsageError(ValueError):
    """A command-line argument that cannot be used; printed as one line."""


def _cmd_list(args: argparse.Namespace) -> int:
    names = nnatlas.list_models(args.pattern)
    if not names:
        raise UsageError(f"no model matches {args.pattern!r}")
    width = max(len(n) for n in names)
    for name in names:
        c = nnatlas.card(name)
        params = f"{c.published_params:>13,}" if c.published_params else " " * 13
        print(f"{name:<{width}}  {c.family:<12} {params}  {c.title}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnatlas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nnatlas {nnatlas.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_list)

    add_show_parser(sub)
    add_draw_parser(sub)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_translate_parser(sub)
    add_generate_parser(sub)
    add_sample_parser(sub)
    add_verify_parser(sub)
    add_atlas_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("nnatlas: interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, TypeError, OSError) as err:
        msg = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"nnatlas {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if not _peer_lost(err):
            raise
        rank = os.environ.get("RANK", "?")
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        print(f"nnatlas {args.command}: error: rank {rank}: another process of the data-parallel run failed or was "
              f"killed ({reason}); its checkpoint is whole: fix the cause and start again with --resume", file=sys.stderr)
        return 2


def _peer_lost(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective that failed because another rank of a torchrun job died."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    return isinstance(err, dist.DistError) or any(k in str(err) for k in ("gloo", "NCCL", "Connection reset", "Connection closed"))


if __name__ == "__main__":
    sys.exit(main())
