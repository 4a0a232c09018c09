"""The run folder's life cycle: a new run never costs an old one before it has proven it can start.

A run writes into ``runs/MODEL`` (or ``--out``). :meth:`RunDir.prepare` decides where the new
run writes, before any work:

- ``--resume``: into the folder itself, which must hold a checkpoint. A folder whose run was
  stopped before its first checkpoint says so and how to start it again.
- a new run into a folder that holds no run (absent, empty, or other files): into the folder.
- a new run into a folder that holds a run: with ``--overwrite``, or without it when that run
  never wrote a checkpoint (killed while loading data or in its first epoch: nothing to lose
  but its start), the new run writes into a *staging* sibling ``.NAME.new-XXXX``. The old run
  stays in place, untouched, until :meth:`RunDir.commit` — called once the new run has loaded
  its data and written its first checkpoint — swaps the two folders and deletes the old one.
  :meth:`RunDir.abort` (a failed start) deletes the staging folder and leaves the old run as it was.

The swap is two renames; a crash between them leaves the old run aside as ``.NAME.old-XXXX``
and no ``NAME``: the next :meth:`prepare` puts it back. Stale staging folders from a crash are
removed then too, as are temporary ``.part`` files in a resumed run. Nothing here follows a
symbolic link: a link named like a staging folder is unlinked, never deleted through, and a
run folder that is itself a link is moved aside as a link (its target is left alone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nnatlas._io import fsync_dir
from nnatlas.train import checkpoint as ckpt

__all__ = ["RunDir", "RunDirError", "RUN_MARKERS"]

log = logging.getLogger(__name__)

RUN_MARKERS = ("config.json", ckpt.MANIFEST, "final.json")  # a folder holding one of these holds a run


class RunDirError(ValueError):
    """A run folder that cannot be used as asked (one line, with the option that fixes it)."""


def _remove(path: Path) -> None:
    """Delete a folder tree, or just the link if ``path`` is a link (never its target)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)  # rmtree unlinks links inside the tree and never descends into them


def _siblings(path: Path, kind: str) -> list[Path]:
    parent = path.parent
    if not parent.is_dir():
        return []
    prefix = f".{path.name}.{kind}-"
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefix))


@dataclass
class RunDir:
    """Where a run writes (``path``) and where it ends up (``final``); see the module docstring."""

    final: Path
    path: Path
    staged: bool = False
    is_main: bool = True

    @classmethod
    def prepare(cls, run_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool, is_main: bool = True) -> RunDir:
        """Check ``run_dir`` for a run started with these options and return where it writes.

        ``is_main`` false (the other ranks of a data-parallel run): nothing is touched and the
        run writes nothing, so ``path`` is ``run_dir``.

        Raises:
            RunDirError: ``resume`` without a checkpoint, or a finished or checkpointed run in
                the way without ``overwrite``.
        """
        final = Path(run_dir)
        if not is_main:
            return cls(final, final, staged=False, is_main=False)
        _recover(final)
        held = [m for m in RUN_MARKERS if (final / m).exists()]
        if resume:
            if not ckpt.has_checkpoint(final):
                if held:
                    raise RunDirError(f"--resume: the run in {final} was stopped before its first checkpoint ({ckpt.MANIFEST} "
                                      f"is absent); start it again without --resume (it starts from the beginning)")
                raise RunDirError(f"--resume: {final} holds no run to resume; start the run without --resume")
            ckpt.remove_orphans(final)
            return cls(final, final)
        if not held:
            return cls(final, final)  # nothing to keep: write in place
        checkpointed = ckpt.has_checkpoint(final) or (final / "final.json").exists()
        if checkpointed and not overwrite:
            raise RunDirError(f"{final} already holds a run ({', '.join(held)}); pass --resume to continue it, "
                              f"--overwrite to replace it, or another --out")
        if not checkpointed:
            log.info("%s holds a run stopped before its first checkpoint; a new run replaces it once it has one", final)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.new-"))
        mask = os.umask(0)
        os.umask(mask)
        staging.chmod(0o777 & ~mask)  # mkdtemp makes 0700; the run folder gets the usual mode
        log.info("the new run writes into %s until its first checkpoint; %s stays as it is until then", staging, final)
        return cls(final, staging, staged=True)

    def commit(self) -> Path:
        """Swap the staging folder in for the old run and delete the old run; returns ``final``.

        Called after the new run's first checkpoint; a no-op when nothing is staged.
        """
        if not self.staged:
            return self.path
        aside = self.final.parent / f".{self.final.name}.old-{os.urandom(4).hex()}"
        if self.final.is_symlink() or self.final.exists():
            os.rename(self.final, aside)  # the old run (or the link to it) moves aside in one step
        os.rename(self.path, self.final)  # and the new one takes its name
        fsync_dir(self.final.parent)
        with contextlib.suppress(FileNotFoundError):
            _remove(aside)
        log.info("the new run has its first checkpoint; it replaced the old run in %s", self.final)
        self.path, self.staged = self.final, False
        return self.final

    def abort(self) -> None:
        """A failed start: delete the staging folder; the old run is left exactly as it was."""
        if self.staged:
            _remove(self.path)
            log.info("the new run did not start; %s is left as it was", self.final)
            self.path, self.staged = self.final, False


def _recover(final: Path) -> None:
    """Undo what a crash left: an old run aside without its name comes back; stale staging goes."""
    asides = _siblings(final, "old")
    if asides and not (final.exists() or final.is_symlink()):
        newest = max(asides, key=lambda p: p.lstat().st_mtime)
        os.rename(newest, final)  # the swap stopped between its two renames: the old run returns
        log.warning("restored %s from %s (a swap interrupted by a crash)", final, newest.name)
        asides.remove(newest)
    for stale in asides + _siblings(final, "new"):
        _remove(stale)
