"""``nnatlas atlas build``: the static site, generated from the registry, the code, the diagrams,
``nnatlas verify`` and (optionally) training runs.

The site works from ``file://`` and any static host: every asset is in the output, data is
inlined in the pages (no ``fetch``), equations are MathML made at build time, diagrams are
inline SVG. A build is deterministic (the same inputs give byte-identical files) and
incremental: per-model data (trace, summary, diagrams) is cached under a key of the model's
sources, SVGs under a hash of their DOT text, verification results by ``nnatlas.verify``'s
cache; a file is written only when its bytes change, and files an earlier build wrote that
this one does not are removed (listed in ``.nnatlas-site.json``).

Layout: ``index.html``, ``families/<family>.html``, ``models/<name>.html``, ``assets/``,
``runs/<run>/`` (copied curves and samples), ``verify.json``; the second language under
``zh/`` with the same paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

import nnatlas
from nnatlas import registry
from nnatlas import verify as verify_mod
from nnatlas.atlas import text
from nnatlas.atlas.text import word
from nnatlas.inspect.summary import format_count

__all__ = ["build", "BuildResult", "LANGS", "default_cache_dir", "read_run"]

log = logging.getLogger(__name__)

LANGS = ("en", "zh")
SITE_MANIFEST = ".nnatlas-site.json"
_HERE = Path(__file__).resolve().parent
_SUMMARY_DEPTH = 2
_MAX_SAMPLES = 12
_SVG_SCALE = 0.6  # the seed style's boxes and fonts are large; at 60 % a ResNet fits a screen's width


def default_cache_dir() -> Path:
    """``~/.cache/nnatlas``: ``verify/`` (shared with ``nnatlas verify``), ``models/`` and ``svg/``."""
    return verify_mod.default_cache_dir().parent


def _atlas_code_hash() -> str:
    """Changes to the atlas's own code or templates invalidate the per-model cache."""
    h = hashlib.sha256()
    for path in sorted(p for p in _HERE.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".css", ".js")):
        h.update(path.relative_to(_HERE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


@dataclass
class BuildResult:
    out: Path
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    pages: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class _Writer:
    """Writes files only when their bytes change; remembers every path it was given."""

    def __init__(self, out: Path, result: BuildResult) -> None:
        self.out, self.result, self.paths = out, result, set()

    def write(self, rel: str, data: bytes | str) -> None:
        data = data.encode("utf-8") if isinstance(data, str) else data
        path = self.out / rel
        self.paths.add(rel)
        if path.is_file() and path.read_bytes() == data:
            self.result.unchanged += 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.result.written.append(rel)

    def finish(self) -> None:
        """Remove what an earlier build wrote and this one did not; record this build's files."""
        manifest = self.out / SITE_MANIFEST
        before = set(json.loads(manifest.read_text(encoding="utf-8"))) if manifest.is_file() else set()
        for rel in sorted(before - self.paths):
            stale = self.out / rel
            if stale.is_file():
                stale.unlink()
                self.result.removed.append(rel)
        listing = json.dumps(sorted(self.paths), indent=0) + "\n"
        if not manifest.is_file() or manifest.read_text(encoding="utf-8") != listing:
            manifest.write_text(listing, encoding="utf-8")


# --- diagrams -------------------------------------------------------------------------------------


def _dot_text(d: Any, lang: str, href: Callable[[str], str] | None) -> tuple[str, bool]:
    """The DOT text of a diagram in ``lang`` with block links, and whether links were drawn.

    The diagram API grew ``Diagram.dot(lang=, href=)``; with the older ``Diagram.dot`` string the
    language is fixed when the diagram is made and boxes carry no links.
    """
    attr = inspect.getattr_static(type(d), "dot", None)
    if callable(attr) and not isinstance(attr, property):
        params = inspect.signature(d.dot).parameters
        kwargs: dict[str, Any] = {}
        if "lang" in params:
            kwargs["lang"] = lang
        if "href" in params and href is not None:
            kwargs["href"] = href
        return d.dot(**kwargs), "href" in kwargs
    return str(d.dot), False


def _dot_takes_lang() -> bool:
    attr = inspect.getattr_static(nnatlas.Diagram, "dot", None)
    return callable(attr) and not isinstance(attr, property) and "lang" in inspect.signature(attr).parameters


def _diagram_dots(trace: Any, name: str) -> dict[str, Any]:
    """Per language: the main DOT and each block's (name, DOT); block boxes link to ``#block-<name>``."""
    from nnatlas.inspect import diagram

    out: dict[str, Any] = {}
    shared = diagram(trace) if _dot_takes_lang() else None
    for lang in LANGS:
        d = shared if shared is not None else diagram(trace, lang=lang)
        names = {b.name for b in d.blocks}

        def href(block: str, names: set[str] = names) -> str:
            return f"#block-{block}" if block in names else ""

        main, linked = _dot_text(d, lang, href)
        out[lang] = {"main": main, "linked": linked,
                     "blocks": [[b.name, _dot_text(b, lang, href)[0]] for b in d.blocks]}
    return out


class _SvgCache:
    """``dot -Tsvg`` of a DOT text, cached under the hash of the text and Graphviz's version."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.exe = shutil.which("dot")
        self.version = ""
        if self.exe:
            done = subprocess.run([self.exe, "-V"], capture_output=True, check=False)
            self.version = (done.stderr or done.stdout).decode(errors="replace").strip()

    def svg(self, dot: str) -> str | None:
        if self.exe is None:
            return None
        digest = hashlib.sha256((self.version + "\n" + dot).encode()).hexdigest()[:24]
        path = self.folder / f"{digest}.svg"
        if path.is_file():
            return path.read_text(encoding="utf-8")
        done = subprocess.run([self.exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise OSError(f"dot failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}")
        svg = done.stdout.decode("utf-8")
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(svg, encoding="utf-8")
        tmp.replace(path)
        return svg


def _inline_svg(svg: str, prefix: str) -> Markup:
    """Graphviz's SVG file made fit to sit in a page: no prolog, ids unique to this drawing."""
    svg = svg[svg.index("<svg"):]
    head, rest = svg.split(">", 1)  # the drawing at _SVG_SCALE of Graphviz's size; the viewBox keeps it whole
    head = re.sub(r'\s(width|height)="([\d.]+)pt"', lambda m: f' {m[1]}="{float(m[2]) * _SVG_SCALE:.0f}pt"', head)
    svg = head + ">" + rest
    svg = re.sub(r'\sid="([^"]*)"', lambda m: f' id="{prefix}-{m.group(1)}"', svg)
    svg = svg.replace("<svg ", f'<svg class="diagram-svg" role="img" aria-label="{prefix}" ', 1)
    return Markup(svg)  # noqa: S704  (Graphviz's own output, labels escaped by Graphviz)


# --- per-model data (cached) -------------------------------------------------------------------------


def _config_fields(name: str) -> dict[str, str]:
    with torch.device("meta"):
        model = nnatlas.create(name)
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {f.name: repr(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _model_data(name: str) -> dict[str, Any]:
    """Everything a model page needs that costs a trace: summary rows, totals, diagram DOT, config."""
    from nnatlas.inspect import summary, trace_model

    data: dict[str, Any] = {"name": name, "config": _config_fields(name)}
    with torch.device("meta"):
        data["config_type"] = type(getattr(nnatlas.create(name), "config", None)).__name__
    factory = registry._entry(name).factory
    lines, first = inspect.getsourcelines(factory)  # from the decorator: link to the ``def`` line
    data["line"] = first + next((i for i, t in enumerate(lines) if t.lstrip().startswith("def ")), 0)
    try:
        trace = trace_model(name)
        table = summary(trace, depth=_SUMMARY_DEPTH)
        data["rows"] = [
            {"path": r.path or name, "type": r.type + (f" x{r.calls}" if r.calls > 1 else ""), "depth": r.depth,
             "shape": "[" + ", ".join(map(str, r.output_shape)) + "]" if r.output_shape is not None else "-",
             "params": r.params, "trainable": r.trainable, "macs": r.macs}
            for r in table.rows
        ]
        data["params"] = table.total_params
        data["trainable"] = table.trainable_params
        data["macs"] = table.total_macs
        data["dots"] = _diagram_dots(trace, name)
    except Exception as err:  # noqa: BLE001  (a model the tracer cannot follow still gets its page)
        data["error"] = f"{type(err).__name__}: {err}"
        log.warning("atlas: %s: no trace (%s)", name, data["error"])
    return data


def _cached_model_data(names: Sequence[str], folder: Path, code: str) -> tuple[dict[str, dict[str, Any]], int]:
    out, fresh = {}, 0
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        key = f"{verify_mod.cache_key(name)}-{code}"
        path = folder / f"{name}-{key}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text(encoding="utf-8"))
            continue
        data = _model_data(name)
        for old in folder.glob(f"{name}-*.json"):
            old.unlink()
        text_ = json.dumps(data, sort_keys=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text_, encoding="utf-8")
        tmp.replace(path)
        out[name] = json.loads(text_)  # the cached form: a fresh build and a cached one render the same
        fresh += 1
    return out, fresh


# --- training runs ------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_run(folder: Path) -> dict[str, Any] | None:
    """What a run folder of ``nnatlas train`` holds that the atlas shows; None when it names no model.

    Every piece is optional: a missing or unreadable file is simply left out.
    """
    config = _read_json(folder / "config.json")
    final = _read_json(folder / "final.json")
    model = None
    if isinstance(config, dict):
        inner = config.get("config") if isinstance(config.get("config"), dict) else config
        model = inner.get("model")
    if model is None and isinstance(final, dict):
        model = final.get("model")
    if not isinstance(model, str):
        return None
    metrics = []
    try:
        for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                metrics.append(row)
    except OSError:
        pass
    samples: list[dict[str, str]] = []
    art = folder / "artefacts"
    manifest = _read_json(art / "manifest.json")
    listed: list[tuple[str, str]] = []
    entries: Any = manifest
    if isinstance(manifest, dict):  # nnatlas train writes {tag: [files]} in evaluation order: show the last
        tags = [k for k, v in manifest.items() if isinstance(v, list)]
        entries = [{"path": f, "caption": tags[-1]} for f in manifest[tags[-1]]] if tags else []
    if isinstance(entries, list):
        for e in entries:
            if isinstance(e, str):
                listed.append((e, ""))
            elif isinstance(e, dict):
                rel = e.get("path") or e.get("file") or e.get("name")
                if isinstance(rel, str):
                    listed.append((rel, str(e.get("caption") or e.get("title") or e.get("tag") or "")))
    if not listed and art.is_dir():
        listed = [(p.relative_to(art).as_posix(), "") for p in sorted(art.rglob("*"))
                  if p.is_file() and p.suffix in (".txt", ".png")]
    for rel, caption in listed[-_MAX_SAMPLES:]:
        path = (art / rel).resolve()
        if not path.is_file() or art.resolve() not in path.parents or path.suffix not in (".txt", ".png"):
            continue
        samples.append({"path": str(path), "name": rel, "caption": caption, "kind": path.suffix[1:]})
    return {"folder": str(folder), "model": model, "final": final if isinstance(final, dict) else {},
            "metrics": metrics, "curves": str(folder / "curves.png") if (folder / "curves.png").is_file() else None,
            "samples": samples, "anchor": _anchor(model, final)}


def _anchor(model: str, final: Any) -> dict[str, Any] | None:
    """The published figure a run is compared with: the run's own record, else the card's, else none."""
    if isinstance(final, dict) and isinstance(final.get("anchor"), dict):
        return final["anchor"]
    try:
        card = nnatlas.card(model)
    except KeyError:
        return None
    anchor = getattr(card, "anchor", None) or getattr(getattr(card, "training", None), "anchor", None)
    if anchor is None:
        return None
    if dataclasses.is_dataclass(anchor):
        return {k: v for k, v in dataclasses.asdict(anchor).items() if v not in (None, "")}
    return anchor if isinstance(anchor, dict) else {"value": str(anchor)}


def _headline(final: dict[str, Any]) -> tuple[str, Any] | None:
    """The first test metric of a run's final.json (its headline figure)."""
    for key in sorted(final):
        if key.startswith("test_") and isinstance(final[key], (int, float)):
            return key, final[key]
    return None


# --- the site ---------------------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("nnatlas.atlas", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["count"] = lambda n: f"{n:,}" if isinstance(n, int) else "-"
    env.filters["si"] = lambda n: format_count(n) if isinstance(n, (int, float)) else "-"
    env.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    return env


def _mathml(latex: str) -> Markup:
    from latex2mathml.converter import convert

    return Markup(convert(latex, display="block"))  # noqa: S704  (latex2mathml escapes the text it emits)


def _highlight(source: str) -> Markup:
    formatter = HtmlFormatter(linenos="inline", lineanchors="L", anchorlinenos=True, cssclass="highlight",
                              wrapcode=True)
    return Markup(highlight(source, PythonLexer(), formatter))  # noqa: S704  (Pygments escapes the code)


def _sections(names: Sequence[str]) -> list[dict[str, Any]]:
    by_family: dict[str, list[str]] = {}
    for n in names:
        by_family.setdefault(nnatlas.card(n).family, []).append(n)
    out = []
    known = {f for *_, fams in text.SECTIONS for f in fams}
    listing = [(sid, en, zh, [f for f in fams if f in by_family]) for sid, en, zh, fams in text.SECTIONS]
    others = sorted(f for f in by_family if f not in known)
    if others:
        listing.append((*text.OTHER_SECTION, others))
    for sid, en, zh, fams in listing:
        if fams:
            out.append({"id": sid, "title": {"en": en, "zh": zh},
                        "families": [{"family": f, "models": by_family[f]} for f in fams]})
    return out


def _variant_diffs(family_names: list[str], data: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each variant's config fields that differ from the first variant built from the same config class."""
    out = {}
    for n in family_names:
        kind = data[n].get("config_type")
        base = data[next(m for m in family_names if data[m].get("config_type") == kind)]["config"]
        cfg = data[n]["config"]
        out[n] = ", ".join(f"{k}={v}" for k, v in cfg.items() if base.get(k) != v)
        if kind and base is not cfg and not out[n]:
            out[n] = "—"
        elif kind and base is cfg:
            out[n] = f"{kind} (base)" if sum(data[m].get("config_type") == kind for m in family_names) > 1 else kind
    return out


def _verify_rows(report: verify_mod.ModelReport | None) -> list[dict[str, Any]]:
    return [dataclasses.asdict(c) for c in report.checks] if report is not None else []


def _verified_against(report: verify_mod.ModelReport | None) -> tuple[str, str]:
    if report is None:
        return "-", "none"
    refs = report.of("reference")
    passed = [c.label.split(" (")[0] for c in refs if c.status == "pass"]
    failed = [c.label.split(" (")[0] for c in refs if c.status == "fail"]
    if failed:
        return "FAIL " + ", ".join(failed), "fail"
    if passed:
        return ", ".join(passed), "pass"
    if any(c.status == "not checked" for c in refs):
        return "not checked", "not checked"
    return "-", "none"


def _run_id(folder: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(folder).name) or "run"
    rid, k = base, 2
    while rid in used:
        rid, k = f"{base}_{k}", k + 1
    used.add(rid)
    return rid


def build(out: str | Path, runs: Sequence[str | Path] = (), lang: str = "both", pattern: str | None = None,
          cache_dir: str | Path | None = None, verify: bool | Sequence[str] = True,
          progress: Callable[[str], None] | None = None) -> BuildResult:
    """Write the atlas into ``out``; see the module docstring. Returns what was written and how long it took.

    ``verify``: run ``nnatlas verify`` on every model (True), on none (False), or on the models named.
    """
    if lang not in ("en", "zh", "both"):
        raise ValueError(f"--lang expects en, zh or both; got {lang!r}")
    langs = list(LANGS) if lang == "both" else [lang]
    names = nnatlas.list_models(pattern)
    if not names:
        raise ValueError(f"no model matches {pattern!r}")
    say = progress or (lambda msg: None)
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    result = BuildResult(out)

    t = time.perf_counter()
    reports: dict[str, verify_mod.ModelReport] = {}
    checked = names if verify is True else [n for n in names if n in verify] if verify else []
    if checked:
        for r in verify_mod.verify(checked, cache / "verify",
                                   lambda n, r, cached: None if cached else say(f"verified {n} ({r.seconds:.1f} s)")):
            reports[r.name] = r
    result.timings["verify"] = time.perf_counter() - t

    t = time.perf_counter()
    data, fresh = _cached_model_data(names, cache / "models", _atlas_code_hash())
    result.timings["trace"] = time.perf_counter() - t
    say(f"traced {fresh} models ({result.timings['trace']:.1f} s), {len(names) - fresh} from the cache")

    t = time.perf_counter()
    svgs = _SvgCache(cache / "svg")
    rendered: dict[tuple[str, str], dict[str, Any]] = {}
    for name in names:
        dots = data[name].get("dots")
        for lg in langs:
            if dots is None:
                rendered[name, lg] = {"main": None, "blocks": [], "dot": None, "linked": False}
                continue
            d = dots[lg]
            main = svgs.svg(d["main"])
            rendered[name, lg] = {
                "main": _inline_svg(main, f"{name}-main") if main else None,
                "dot": d["main"],
                "linked": d["linked"],
                "blocks": [{"name": b, "svg": _inline_svg(s, f"{name}-{b}") if (s := svgs.svg(dot)) else None,
                            "dot": dot} for b, dot in d["blocks"]],
            }
    result.timings["svg"] = time.perf_counter() - t

    t = time.perf_counter()
    run_infos = [r for r in (read_run(Path(p)) for p in runs) if r is not None]
    writer = _Writer(out, result)
    used: set[str] = set()
    runs_by_model: dict[str, list[dict[str, Any]]] = {}
    for info in run_infos:
        rid = _run_id(info["folder"], used)
        info["id"] = rid
        if info["curves"]:
            writer.write(f"runs/{rid}/curves.png", Path(info["curves"]).read_bytes())
            info["curves_rel"] = f"runs/{rid}/curves.png"
        for k, s in enumerate(info["samples"]):
            src = Path(s["path"])
            if s["kind"] == "png":
                s["rel"] = f"runs/{rid}/sample{k:02d}.png"
                writer.write(s["rel"], src.read_bytes())
            else:
                s["text"] = src.read_text(encoding="utf-8", errors="replace")[:4000]
        info["headline"] = _headline(info["final"])
        runs_by_model.setdefault(info["model"], []).append(info)

    families: dict[str, list[str]] = {}
    for n in names:
        families.setdefault(nnatlas.card(n).family, []).append(n)
    diffs: dict[str, str] = {}
    for fam_names in families.values():
        diffs.update(_variant_diffs(fam_names, data))
    family_modules = {f: registry._entry(ns[0]).factory.__module__ for f, ns in families.items()}
    equations = {f: [{"caption": c, "math": _mathml(tex)} for c, tex in text.EQUATIONS.get(f, [])] for f in families}

    env = _environment()
    sections = _sections(names)
    css = (_HERE / "static" / "atlas.css").read_text(encoding="utf-8")
    css += "\n/* Pygments */\n" + HtmlFormatter(cssclass="highlight").get_style_defs(".highlight") + "\n"
    writer.write("assets/atlas.css", css)
    writer.write("verify.json", json.dumps([r.to_json() for r in reports.values()], indent=1, sort_keys=True) + "\n")

    rows = []
    for n in names:
        c = nnatlas.card(n)
        d = data[n]
        against, status = _verified_against(reports.get(n))
        run = (runs_by_model.get(n) or [None])[0]
        rows.append({
            "name": n, "title": c.title, "family": c.family, "year": c.paper.year if c.paper else None,
            "params": d.get("trainable"), "macs": d.get("macs"), "task": c.task, "verified": against,
            "vstatus": status, "zh": text.zh_label(n, c.family),
            "paper": c.paper.title if c.paper else "",
            "trained": (f"{run['headline'][0]} {run['headline'][1]:.4g}" if run and run["headline"] else ""),
            "anchor": run["anchor"] if run else None,
        })

    def page(template: str, rel: str, lg: str, **ctx: Any) -> None:
        prefix = "" if lg == langs[0] else f"{lg}/"
        depth = (prefix + rel).count("/")
        root = "../" * depth
        other = None
        if len(langs) > 1:
            ol = langs[1] if lg == langs[0] else langs[0]
            other = {"lang": ol, "href": root + ("" if ol == langs[0] else f"{ol}/") + rel}
        site_root = "../" * rel.count("/")  # this language's root, for links between pages
        html = env.get_template(template).render(
            lang=lg, w=lambda key: word(key, lg), root=root, site=site_root, other=other, rel=rel,
            family_zh=text.FAMILY_ZH, sections=sections, card=nnatlas.card, zh_label=text.zh_label, **ctx)
        writer.write(prefix + rel, html)
        result.pages += 1

    for lg in langs:
        page("index.html.j2", "index.html", lg, rows=rows, runs=bool(run_infos))
        for fam, fam_names in families.items():
            module = importlib.import_module(family_modules[fam])
            source_path = Path(module.__file__ or "")
            page("family.html.j2", f"families/{fam}.html", lg, family=fam, names=fam_names, diffs=diffs,
                 doc=(module.__doc__ or "").strip(), equations=equations[fam],
                 source=_highlight(source_path.read_text(encoding="utf-8")),
                 source_name=f"nnatlas/{source_path.relative_to(_HERE.parent).as_posix()}", data=data)
        for n in names:
            c = nnatlas.card(n)
            page("model.html.j2", f"models/{n}.html", lg, name=n, c=c, d=data[n], variants=families[c.family],
                 diffs=diffs, diagram=rendered[n, lg], equations=equations[c.family],
                 checks=_verify_rows(reports.get(n)), verified=bool(reports),
                 runs=runs_by_model.get(n, []), any_runs=bool(run_infos), data=data,
                 module_file=family_modules[c.family].rsplit(".", 1)[-1] + ".py", row=next(r for r in rows if r["name"] == n))
    writer.finish()
    result.timings["pages"] = time.perf_counter() - t
    result.seconds = time.perf_counter() - start
    return result
