"""A run's output folder as one transaction: ``OUT`` is either the previous run or the new one.

:func:`output_transaction` is opened *before* any compute:

1. :func:`check_output_dir` refuses an unusable ``OUT`` (empty name, an existing file, a parent that is a
   file, no write permission or a read-only mount, a folder of unrelated files, a folder that is or lies
   inside the input folder).
2. A lock (``.OUT.lock`` beside ``OUT``, ``flock``) refuses a second concurrent run into the same folder.
3. Staging folders left by killed runs (``.OUT.staging-*``) are removed; a previous run folder that a
   killed swap left aside (``.OUT.old-*``) is put back.
4. The run writes every file, ``report.html`` included, into a fresh staging folder beside ``OUT``.
5. On success the fingerprinted caches of the previous run (``cache/`` and the meso ``checkpoint.pt``)
   and a batch's ``status.json`` / ``batch.log`` are carried into the staging folder, then ``OUT`` is
   set aside and the staging folder renamed to ``OUT`` (signals blocked between the two renames), and
   the old folder removed. Nothing else of the
   previous run survives, so a ``--sparse-only`` re-run leaves no stale dense cloud behind.

SIGINT and SIGTERM raise :class:`Interrupted` inside the run, so the staging folder is removed and the
old ``OUT`` is left untouched; the CLI prints one ``interrupted`` line. Errors of the file system while
writing (disk full, permission denied, read-only) become one-line :class:`TopographError`\\ s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from topograph.errors import TopographError

KEEP = ("cache", "checkpoint.pt", "status.json", "batch.log")
"""Entries of ``OUT`` kept through the swap: the fingerprinted caches (a different run simply misses them)
and the bookkeeping a batch writes into ``OUT/<dataset>`` while the run goes on (its status and log; the
log is hard-linked, so lines written after the swap still land in it)."""
RUN_MARKERS = ("summary.json", "checkpoint.pt", "report.html", "status.json", "cache")
"""An existing non-empty ``OUT`` must hold one of these (a run folder): any other folder is refused, so
that replacing it can never delete a user's unrelated files."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during a run (``signum`` says which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def check_output_dir(out_dir: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Refuse an output folder that the run could not use or that would damage the inputs.

    Args:
        out_dir: the ``-o`` folder.
        inputs: input files or folders: ``OUT`` must not be an input folder or lie inside one, and no
            input file may lie inside ``OUT`` (replacing ``OUT`` would delete it).

    Returns:
        ``out_dir`` as a path.

    Raises:
        TopographError: one line naming the problem and the fix.
    """
    raw = os.fspath(out_dir)
    if raw.strip() in ("", "."):
        raise TopographError(
            f"the output folder is '{raw}' (empty or the current folder)", "give a new folder name: -o results"
        )
    out = Path(raw)
    if out.exists() and not out.is_dir():
        raise TopographError(f"the output path {out} exists and is a file", "choose a folder name: -o results")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise TopographError(f"the output path {out} lies under {ancestor}, which is a file", "choose another -o")
    for p in [out, *out.parents]:
        if p.is_symlink() and not p.exists():
            raise TopographError(f"the output path {p} is a dangling link", "remove it or choose another -o")
    if not _writable(ancestor if not out.exists() else out.parent):
        where = ancestor if not out.exists() else out.parent
        raise TopographError(
            f"cannot write the output folder {out}: {where} is not writable (permissions or a read-only disk)",
            "choose a folder you can write to with -o",
        )
    out_res = out.resolve()
    for item in inputs:
        p = Path(item).resolve()
        folder = p if p.is_dir() else p.parent
        if out_res == folder or (p.is_dir() and folder in out_res.parents):
            raise TopographError(
                f"the output folder {out} is {'the' if out_res == folder else 'inside the'} input folder {folder}",
                "write the results elsewhere, e.g. -o next to the input folder",
            )
        if out_res in p.parents:
            raise TopographError(f"the input {item} lies inside the output folder {out}", "choose another -o")
    if out.is_dir():
        entries = [e.name for e in out.iterdir()]
        if entries and not any(m in entries for m in RUN_MARKERS):
            raise TopographError(
                f"the output folder {out} exists and holds other files (not a topograph run)",
                "give a new or empty folder with -o (a run replaces the whole folder)",
            )
        blocked = [d for d in [out, *(p for p in out.rglob("*") if p.is_dir())] if not _writable(d)]
        if blocked:
            raise TopographError(
                f"the previous run in {out} cannot be replaced: {blocked[0]} is read-only",
                f"make it writable (chmod -R u+w {out}) or choose another -o",
            )
    return out


def _writable(folder: Path) -> bool:
    """Write and search permission on ``folder`` (false on a read-only mount, even for root)."""
    return os.access(folder, os.W_OK | os.X_OK)


@contextlib.contextmanager
def output_transaction(
    out_dir: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]] = (), keep: Sequence[str] = KEEP
) -> Iterator[Path]:
    """Check ``out_dir``, lock it and yield a staging folder that replaces it when the block succeeds.

    Raises:
        TopographError: unusable output folder (:func:`check_output_dir`), another run holds the lock,
            or the file system failed while writing (disk full, permission denied).
        Interrupted: SIGINT / SIGTERM during the block (``OUT`` unchanged).
    """
    out = check_output_dir(out_dir, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out), _signals_raise():
        _clean_leftovers(out)
        # The staged folder carries OUT's own name (inside a hidden holder), so anything that shows the
        # folder's name, such as the report's title, shows the final one.
        holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        stage = holder / out.name
        try:
            try:
                stage.mkdir()
                yield stage
                _carry_over(out, stage, keep)
                _swap(stage, out)
            except OSError as exc:
                if not _while_writing(exc, out, holder):
                    raise  # e.g. an unreadable input: not a problem of the output folder
                raise _file_system_error(exc, out) from exc
        finally:
            shutil.rmtree(holder, ignore_errors=True)


staged_output = output_transaction
"""Former name, kept for callers outside the engines."""


def _while_writing(exc: OSError, out: Path, holder: Path) -> bool:
    """Whether ``exc`` came from writing the run's output (its staging folder or ``OUT``)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    names = [n for n in (exc.filename, exc.filename2) if n]
    if not names:
        return False
    targets = [out.resolve(), holder.resolve()]
    for name in names:
        p = Path(os.fsdecode(name)).resolve()
        if any(p == t or t in p.parents for t in targets):
            return True
    return False


def _file_system_error(exc: OSError, out: Path) -> TopographError:
    where = exc.filename or out
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TopographError(
            f"the disk is full while writing the results for {out} ({where})",
            "free some space or choose a folder on another disk with -o; the previous results are unchanged",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TopographError(
            f"permission denied while writing the results for {out} ({where})",
            "choose a folder you can write to with -o; the previous results are unchanged",
        )
    return TopographError(
        f"writing the results for {out} failed: {exc.strerror or exc} ({where})",
        "check the disk and the folder, then rerun; the previous results are unchanged",
    )


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.OUT.lock`` beside ``OUT`` (released by the kernel if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not serialised
        yield
        return
    path = out.parent / f".{out.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise TopographError(
                f"another topograph run is writing to {out}",
                "wait for it to finish, or write this run elsewhere with -o",
            ) from exc
        yield
    finally:
        os.close(fd)


def _clean_leftovers(out: Path) -> None:
    """Remove staging folders of killed runs; put back a run folder that a killed swap left aside."""
    for stale in out.parent.glob(f".{out.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if not out.exists():
        for old in olds:
            if (old / "run").is_dir():
                os.rename(old / "run", out)
                break
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _carry_over(out: Path, stage: Path, keep: Sequence[str]) -> None:
    """Hard-link (or copy) the kept entries of the previous run that the new run did not write."""
    if not out.is_dir():
        return
    for name in keep:
        src = out / name
        if src.is_dir():
            for f in src.rglob("*"):
                dst = stage / f.relative_to(out)
                if f.is_file() and not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(f, dst)
        elif src.is_file() and not (stage / name).exists():
            _link_or_copy(src, stage / name)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap(stage: Path, out: Path) -> None:
    """Replace ``out`` with ``stage`` by two renames (one if ``out`` is new); signals wait until both are done."""
    blocked = _block_signals()
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "run")
            try:
                os.rename(stage, out)
            except OSError:
                os.rename(old / "run", out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
    finally:
        _unblock_signals(blocked)


def _block_signals() -> set[int] | None:
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _unblock_signals(previous: set[int] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`Interrupted` (main thread only; elsewhere the handlers stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
