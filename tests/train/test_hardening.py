"""Issue 13's "Why" list, one test (or a few) per item; each failed on main before the fix.

Item 3 (inputs and configs) is here; the run-folder items (1, 4, 5, 6) and downloads (2) follow
below and in ``tests/data/test_download_limits.py``. The random versions live in ``tests/fuzz``.
"""

from __future__ import annotations

import pytest
import torch

import nnatlas
from nnatlas.errors import ConfigError, ShapeError, UnknownModelError

# ----------------------------------------------------------------------------- item 3: model entries

def _float_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    x = nnatlas.example_input(name, 2, small=True)
    assert isinstance(x, torch.Tensor) and x.is_floating_point()
    return nnatlas.create(name).eval(), x


@pytest.mark.parametrize("name", ["lenet", "mlp", "simple_cnn"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_float_model_names_the_dtype_it_expects(name: str, dtype: torch.dtype) -> None:
    model, x = _float_model(name)
    with pytest.raises(ShapeError, match=r"expects input of dtype torch.float32.*x.to\(torch.float32\)"):
        model(x.to(dtype))
    model.to(dtype)  # the policy: the model's dtype decides, and a converted model takes the converted input
    if dtype == torch.float64:
        assert model(x.to(dtype)).dtype == dtype


@pytest.mark.parametrize("name", ["lenet", "mlp", "transformer_tiny"])
def test_batch_zero_is_a_shape_error(name: str) -> None:
    x = nnatlas.example_input(name, 2, small=True)
    xs = x if isinstance(x, tuple) else (x,)
    empty = tuple(t[:0] for t in xs)
    with pytest.raises(ShapeError, match=r"B >= 1"):
        nnatlas.create(name).eval()(*empty)


@pytest.mark.parametrize("bad", [-1, 10**7])
def test_token_ids_are_range_checked(bad: int) -> None:
    for name in ("transformer_tiny", "bert_tiny", "nlp_rnn", "gpt_mini"):
        x = nnatlas.example_input(name, 2)
        xs = list(x) if isinstance(x, tuple) else [x]
        xs[0] = xs[0].clone()
        xs[0][0, 0] = bad
        with pytest.raises(ShapeError, match=r"in \[0, \d+\)"):
            nnatlas.create(name).eval()(*xs)


def test_bert_attention_mask_must_be_zeros_and_ones() -> None:
    model = nnatlas.create("bert_tiny", num_layers=1).eval()
    ids = torch.randint(0, 100, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    model(ids, mask)  # 0/1 is fine
    mask[0, 1] = 10**7
    with pytest.raises(ShapeError, match="attention_mask of 0 and 1"):
        model(ids, mask)


@pytest.mark.parametrize("value", ["10", 1.5, True, None, -1])
@pytest.mark.parametrize("name", ["lenet", "lenet5_1998", "resnet18", "vgg11", "transformer_tiny", "mamba_tiny", "gcn"])
def test_config_types_are_checked_in_one_place(name: str, value: object) -> None:
    field = "vocab_size" if name.startswith(("transformer", "mamba")) else "num_classes"
    with pytest.raises(ConfigError, match=rf"\.{field} must be an int >= 1; got"), torch.device("meta"):
        nnatlas.create(name, **{field: value})


def test_bool_is_not_a_class_count_for_lenet_1998() -> None:
    with pytest.raises(ConfigError, match="num_classes must be an int"):
        nnatlas.create("lenet5_1998", num_classes=True)


@pytest.mark.parametrize("name", [None, 3, ("lenet",)])
def test_create_with_a_non_string_name(name: object) -> None:
    with pytest.raises(UnknownModelError, match="a model name is a string"):
        nnatlas.create(name)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- items 1, 4, 5, 6, 7: the run folder

import errno  # noqa: E402  (the run-folder half of the file)
import hashlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from nnatlas._io import atomic_open  # noqa: E402
from nnatlas.train import TrainConfig, train  # noqa: E402
from nnatlas.train import checkpoint as ckpt  # noqa: E402
from nnatlas.train import trainer as trainer_mod  # noqa: E402
from nnatlas.train.rundir import RunDir, RunDirError  # noqa: E402


def _cfg(run: Path, **kw: object) -> TrainConfig:
    base = dict(model="mlp", epochs=1, batch_size=16, limit_train=32, limit_test=16, out=str(run), report=False)
    return TrainConfig(**(base | kw))  # type: ignore[arg-type]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _no_staging_left(run: Path) -> None:
    assert [p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}.")] == []


class _Boom(RuntimeError):
    pass


def _boom(*args: object, **kwargs: object) -> None:
    raise _Boom("the data cannot be loaded")


@pytest.mark.parametrize("where", ["_load_data", "_step"])
def test_overwrite_that_fails_to_start_leaves_the_old_run_untouched(tmp_path: Path, monkeypatch, where: str) -> None:
    run = tmp_path / "run"
    train(_cfg(run), progress=False)
    before = _snapshot(run)
    monkeypatch.setattr(trainer_mod if where == "_load_data" else trainer_mod._Run, where, _boom)
    with pytest.raises(_Boom):
        train(_cfg(run, overwrite=True, seed=1), progress=False)
    assert _snapshot(run) == before, "a failed --overwrite start must not touch the old run"
    _no_staging_left(run)
    monkeypatch.undo()
    train(_cfg(run, resume=True), progress=False)  # the old run still resumes (it is finished: nothing to do)
    train(_cfg(run, overwrite=True, seed=1), progress=False)  # and a working --overwrite replaces it
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 1
    _no_staging_left(run)


def test_a_swap_interrupted_between_its_renames_is_undone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run), progress=False)
    before = _snapshot(run)
    run.rename(tmp_path / ".run.old-deadbeef")  # the crash: the old run moved aside, the new one not yet in place
    (tmp_path / ".run.new-x1").mkdir()
    RunDir.prepare(run, resume=True, overwrite=False)  # what the next start does first
    assert _snapshot(run) == before
    _no_staging_left(run)


def test_a_run_killed_before_its_first_checkpoint_starts_again_without_overwrite(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr(trainer_mod._Run, "_step", _boom)
    with pytest.raises(_Boom):
        train(_cfg(run), progress=False)
    assert (run / "config.json").is_file() and not (run / ckpt.MANIFEST).exists()
    monkeypatch.undo()
    with pytest.raises(RunDirError, match=r"stopped before its first checkpoint .*; start it again without --resume"):
        train(_cfg(run, resume=True), progress=False)
    result = train(_cfg(run), progress=False)  # no --overwrite needed
    assert result.run_dir == run and (run / ckpt.MANIFEST).is_file()
    _no_staging_left(run)


def test_orphaned_part_files_are_removed_at_the_next_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=2, checkpoint_every=1), progress=False)
    orphans = [run / ".last.safetensors.abc123.part", run / "checkpoints" / ".step-000000003.safetensors.xyz.part"]
    for p in orphans:
        p.write_bytes(b"\0" * 1000)
    keep = run / "notes.part"  # not a temporary file of ours: stays
    keep.write_text("mine")
    train(_cfg(run, epochs=2, checkpoint_every=1, resume=True), progress=False)
    assert not any(p.exists() for p in orphans) and keep.read_text() == "mine"


def _edit_state(run: Path, edit) -> None:
    """Edit the checkpoint's JSON and fix its sha256 in the manifest, as a determined user would."""
    manifest = json.loads((run / ckpt.MANIFEST).read_text())
    rel = manifest["state"]
    state = json.loads((run / rel).read_text())
    edit(state)
    data = json.dumps(state).encode()
    (run / rel).write_bytes(data)
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    (run / ckpt.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(step_in_epoch=-1), r"field 'step_in_epoch' is out of range"),
        (lambda s: s.pop("rng"), r"lacks the field 'rng'"),
        (lambda s: s.update(epoch="1"), r"field 'epoch' must be int"),
        (lambda s: s.update(loss_count=True), r"field 'loss_count' must be int"),
        (lambda s: s.update(global_step=s["global_step"] + 1), r"global_step|out of range"),
        (lambda s: s["optimizer"]["param_groups"][0].update(params=[0]), r"parameter group 0"),
        (lambda s: s["rng"].update(python=[3, [1, 2], None]), r"rng.python"),
    ],
)
def test_an_edited_and_rehashed_checkpoint_is_refused(tmp_path: Path, edit, message: str) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=2, checkpoint_every=1), progress=False)
    # keep the run unfinished so that --resume has work to do
    (run / "final.json").unlink()
    _edit_state(run, edit)
    with pytest.raises(ckpt.CheckpointError, match=message):
        train(_cfg(run, epochs=2, checkpoint_every=1, resume=True), progress=False)


def test_a_wrong_optimizer_tensor_shape_is_refused_before_the_first_step(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    tensors, plain = ckpt.optimizer_to_parts(opt)
    ckpt.check_optimizer_fits(opt, {k[len("optim."):]: v for k, v in tensors.items()}, plain, "ckpt")
    tensors["optim.0.exp_avg"] = torch.zeros(5, 5)
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer tensor '0.exp_avg' has shape \(5, 5\); its parameter has \(3, 4\)"):
        ckpt.check_optimizer_fits(opt, {k[len("optim."):]: v for k, v in tensors.items()}, plain, "ckpt")


def test_a_symlinked_checkpoints_folder_is_refused_and_nothing_outside_is_deleted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=2, checkpoint_every=1), progress=False)
    (run / "final.json").unlink()
    outside = tmp_path / "elsewhere"
    (run / "checkpoints").rename(outside)
    (outside / "step-999999999.json").write_text("precious")
    (run / "checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ckpt.CheckpointError, match="is a link"):
        train(_cfg(run, epochs=2, checkpoint_every=1, resume=True), progress=False)
    assert (outside / "step-999999999.json").read_text() == "precious"


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.manifest.json"
    target.write_text("previous")
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"), atomic_open(target) as f:
        f.write(b"new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == [target.name]
