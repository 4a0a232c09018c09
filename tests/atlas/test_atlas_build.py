"""The atlas builds for every registered model, links resolve, a rebuild writes nothing, one page
matches its golden (normalised) HTML, runs are read defensively.

Accept a changed golden page on purpose:

    NNATLAS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/atlas/test_atlas_build.py -k golden
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import nnatlas
from nnatlas.atlas.build import build, read_run
from nnatlas.cli import main
from nnatlas.verify import cache_key

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("NNATLAS_UPDATE_GOLDEN") == "1"
HAVE_DOT = shutil.which("dot") is not None


@dataclass
class _Links:
    links: list[str]
    ids: set[str]


def _parse(path: Path) -> _Links:
    """Links and ids of a page (attributes as the templates, Pygments and Graphviz write them: double-quoted)."""
    html = path.read_text(encoding="utf-8")
    links = re.findall(r'\s(?:href|src|xlink:href)="([^"]*)"', html)
    return _Links(links, set(re.findall(r'\sid="([^"]*)"', html)))


def _pages(site_dir: Path) -> list[Path]:
    return sorted(site_dir.rglob("*.html"))


def test_every_model_and_family_has_a_page_in_both_languages(site) -> None:
    names = nnatlas.list_models()
    families = {nnatlas.card(n).family for n in names}
    for prefix in ("", "zh/"):
        assert (site.out / prefix / "index.html").is_file()
        for n in names:
            assert (site.out / f"{prefix}models/{n}.html").is_file(), n
        for f in families:
            assert (site.out / f"{prefix}families/{f}.html").is_file(), f
    assert site.result.pages == 2 * (1 + len(families) + len(names)) == len(_pages(site.out))
    index = (site.out / "index.html").read_text(encoding="utf-8")
    for n in names:
        assert f'href="models/{n}.html"' in index, n


def test_every_internal_link_and_anchor_resolves(site) -> None:
    root = site.out.resolve()
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    ids: dict[str, set[str]] = {}
    checked = 0
    for page in _pages(root):
        rel = page.relative_to(root).as_posix()
        parsed = _parse(page)
        ids.setdefault(rel, parsed.ids)
        base = posixpath.dirname(rel)
        for link in set(parsed.links):
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue  # paper links: external by design, never fetched by the page
            target = posixpath.normpath(posixpath.join(base, unquote(parts.path))) if parts.path else rel
            assert not target.startswith(".."), f"{rel} links outside the site: {link}"
            assert target in files, f"{rel} links to a missing {link}"
            if parts.fragment and target.endswith(".html"):
                if target not in ids:
                    ids[target] = _parse(root / target).ids
                assert parts.fragment in ids[target], f"{rel}: no #{parts.fragment} in {target}"
            checked += 1
    assert checked > 1000


def test_no_network_at_view_time(site) -> None:
    for page in _pages(site.out):
        html = page.read_text(encoding="utf-8")
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html), page
        assert "fetch(" not in html and "XMLHttpRequest" not in html, page


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed: diagrams are shown as DOT text")
def test_diagrams_are_inline_svg_with_block_links(site) -> None:
    html = (site.out / "models" / "resnet18.html").read_text(encoding="utf-8")
    main = html[html.index('id="main-diagram"'):html.index("</svg>", html.index('id="main-diagram"'))]
    assert "<svg" in main and "<?xml" not in html
    blocks = re.findall(r'id="block-([\w-]+)"', html)
    assert "BasicBlock" in blocks
    assert re.search(r'href="#block-BasicBlock"', main), "a block box links to its block diagram"
    zh = (site.out / "zh" / "models" / "resnet18.html").read_text(encoding="utf-8")
    assert "输入" in zh and '<html lang="zh-CN">' in zh  # the diagram is drawn with lang="zh"


def test_source_equations_verification_and_runs_are_on_the_pages(site) -> None:
    family = (site.out / "families" / "resnet.html").read_text(encoding="utf-8")
    assert 'id="L-1"' in family and 'href="#L-1"' in family  # line anchors, Pygments
    assert '<span class="k">class</span>' in family
    assert "<math" in family and "</math>" in family
    page = (site.out / "models" / "resnet18.html").read_text(encoding="utf-8")
    line = re.search(r'href="\.\./families/resnet\.html#L-(\d+)"', page)
    assert line and "def resnet18" in (Path(nnatlas.models.resnet.__file__).read_text().splitlines()[int(line[1]) - 1])
    assert "torchvision.models.resnet18" in page and "ResNet18_Weights.IMAGENET1K_V1" in page
    assert 'class="status s-pass"' in page
    # the fake run: final metrics, curves, samples; the manifest's path outside artefacts/ is refused
    assert "test_accuracy" in page and "0.72" in page and "the quick brown fox" in page
    assert (site.out / "runs" / "resnet18-cifar10" / "curves.png").is_file()
    assert len(list((site.out / "runs" / "resnet18-cifar10").glob("sample*.png"))) == 1
    assert "passwd" not in page and "an older sample" not in page and "epoch-002" in page
    index = (site.out / "index.html").read_text(encoding="utf-8")
    assert "test_accuracy 0.72" in index
    lenet = (site.out / "models" / "lenet.html").read_text(encoding="utf-8")
    assert "did not run the checks" in lenet and "No training run" in lenet


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pages_of(names: set[str]) -> set[str]:
    """The files a source change in these models may rewrite: their pages, their families', the index."""
    families = {nnatlas.card(n).family for n in names}
    rel = {f"models/{n}.html" for n in names} | {f"families/{f}.html" for f in families} | {"index.html"}
    return rel | {f"zh/{r}" for r in rel} | {"verify.json"}


def test_a_rebuild_with_nothing_changed_writes_nothing(site) -> None:
    before = _digest(site.out)
    again = site.rebuild()
    print(f"warm rebuild: {again.seconds:.1f} s {again.timings}")
    assert again.seconds < 60, again.timings
    # another engineer editing a model file mid-session changes those pages, legitimately; nothing else may change
    edited = {n for n, key in site.keys.items() if cache_key(n) != key}
    assert set(again.written) <= _pages_of(edited) and again.removed == [], (again.written, again.removed, edited)
    if not edited:
        assert again.written == [] and _digest(site.out) == before


def test_same_inputs_give_identical_bytes_and_stale_files_go(site, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    build(first, lang="both", pattern="lenet*", cache_dir=site.cache, verify=False)
    build(second, lang="both", pattern="lenet*", cache_dir=tmp_path / "fresh-cache", verify=False)  # traced anew
    assert _digest(first) == _digest(second)
    again = build(first, lang="en", pattern="lenet", cache_dir=site.cache, verify=False)
    assert "models/lenet_bn.html" in again.removed and "zh/index.html" in again.removed
    assert not (first / "models" / "lenet_bn.html").exists() and not list((first / "zh").rglob("*.html"))
    html = (first / "index.html").read_text(encoding="utf-8")
    assert 'id="lang-switch"' not in html  # one language: no switch


def _normalise(html: str) -> str:
    html = re.sub(r"<svg\b.*?</svg>", "<svg/>", html, flags=re.S)
    html = re.sub(r"#L-\d+", "#L-N", html)
    html = re.sub(r"line \d+|第 \d+ 行", "line N", html)
    return html


def test_golden_page(site) -> None:
    """models/logistic_regression.html with its SVG and source line numbers normalised."""
    got = _normalise((site.out / "models" / "logistic_regression.html").read_text(encoding="utf-8"))
    path = GOLDEN / "logistic_regression.html"
    if UPDATE or not path.is_file():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"golden {path} was missing and has been written; check it and commit it")
    assert got == path.read_text(encoding="utf-8"), "the page changed; if on purpose: NNATLAS_UPDATE_GOLDEN=1"


def test_read_run_is_defensive(tmp_path: Path) -> None:
    assert read_run(tmp_path) is None  # nothing names a model
    (tmp_path / "config.json").write_text('{"config": {"model": "lenet"}}')
    run = read_run(tmp_path)
    assert run is not None and run["model"] == "lenet"
    assert run["metrics"] == [] and run["final"] == {} and run["curves"] is None and run["samples"] == []
    (tmp_path / "final.json").write_text("{broken")
    assert read_run(tmp_path)["final"] == {}


def test_cli_build_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], site) -> None:
    out = tmp_path / "site"
    assert main(["atlas", "build", "--out", str(out), "--pattern", "linear_regression", "--lang", "zh",
                 "--cache", str(site.cache), "--no-verify", "-q"]) == 0
    assert (out / "index.html").is_file() and 'lang="zh-CN"' in (out / "index.html").read_text(encoding="utf-8")
    assert "pages in" in capsys.readouterr().out
    assert main(["atlas", "build", "--out", str(out), "--pattern", "nothing*", "--cache", str(site.cache)]) == 2
    assert "no model matches" in capsys.readouterr().err
    assert main(["atlas", "build", "--out", str(out), "--runs", str(tmp_path / "absent")]) == 2
    assert main(["atlas", "serve", str(tmp_path / "empty")]) == 2
    assert "build the atlas first" in capsys.readouterr().err
