"""``nnatlas atlas build`` and ``nnatlas atlas serve``.

Errors are raised as ``ValueError``/``OSError`` with a one-line message; ``nnatlas.cli.main``
prints that line and exits with status 2.
"""

from __future__ import annotations

import argparse
import functools
import http.server
from pathlib import Path
from typing import Any

__all__ = ["add_atlas_parser"]


def _cmd_build(args: argparse.Namespace) -> int:
    import torch

    from nnatlas.atlas.build import build

    if args.threads:
        torch.set_num_threads(args.threads)
    for run in args.runs or []:
        if not Path(run).is_dir():
            raise FileNotFoundError(f"--runs expects run folders written by nnatlas train; {run} is not a folder")
    result = build(args.out, runs=args.runs or [], lang=args.lang, pattern=args.pattern, cache_dir=args.cache,
                   verify=not args.no_verify, progress=None if args.quiet else print)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    print(f"{result.pages} pages in {result.out}: {len(result.written)} files written, {result.unchanged} unchanged, "
          f"{len(result.removed)} removed; {result.seconds:.1f} s ({timings})")
    print(f"open {Path(result.out).resolve() / 'index.html'}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not (root / "index.html").is_file():
        raise FileNotFoundError(f"{root} holds no index.html; build the atlas first: nnatlas atlas build --out {root}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    with http.server.ThreadingHTTPServer((args.host, args.port), handler) as server:
        host, port = server.server_address[:2]
        print(f"serving {root} at http://{host}:{port}/ (Ctrl-C stops)")
        server.serve_forever()
    return 0


def add_atlas_parser(sub: Any) -> argparse.ArgumentParser:
    """``nnatlas atlas build --out DIR [--runs DIR ...] [--lang en|zh|both]`` and ``nnatlas atlas serve [DIR]``."""
    p = sub.add_parser("atlas", help="build (or serve) the atlas: a static website generated from the code")
    actions = p.add_subparsers(dest="atlas_command", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="write the static site (works from file:// and any static host)")
    b.add_argument("--out", required=True, metavar="DIR", help="the site's folder (created if missing)")
    b.add_argument("--runs", nargs="*", metavar="DIR", help="run folders of nnatlas train whose results are shown")
    b.add_argument("--lang", default="both", choices=("en", "zh", "both"), help="languages written (default both)")
    b.add_argument("--pattern", default=None, help="only the models matching this fnmatch pattern")
    b.add_argument("--cache", metavar="DIR", default=None, help="cache of traces, SVGs and verification results "
                   "(default ~/.cache/nnatlas)")
    b.add_argument("--no-verify", action="store_true", help="leave out nnatlas verify's results")
    b.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    b.set_defaults(func=_cmd_build)
    s = actions.add_parser("serve", help="serve a built atlas on localhost for a quick look")
    s.add_argument("dir", nargs="?", default="atlas", help="the site's folder (default ./atlas)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(func=_cmd_serve)
    return p
