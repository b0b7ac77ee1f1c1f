"""Files a run can trust: atomic writes, checksums, an output-folder lock,
fingerprints of what a stage depends on, and checkpoints that survive a kill.

* :func:`atomic_write` / :func:`atomic_save`: a file is written to a temporary
  name beside it, flushed to disk (``fsync``) and renamed over the target, so a
  kill leaves either the old file or the new one, never a torn one
  (``paddle.save`` writes its target in place).
* :class:`OutputLock`: one run per output folder; a lock left by a dead process
  is taken over.
* :func:`fingerprint_diff`: which keys of a stage's inputs changed.
* :func:`save_checkpoint` / :func:`load_checkpoint`: a checkpoint is a folder
  whose ``state.json`` (written last) records the SHA-256 of every file; the
  previous checkpoint is kept as a fallback, and a checkpoint
  that fails to load or to match its checksums is reported and skipped.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket

from .errors import UserError

__all__ = [
    "atomic_write", "atomic_save", "sha256_file", "OutputLock", "flatten", "fingerprint_diff",
    "write_record", "read_record", "save_checkpoint", "load_checkpoint", "set_state_strictly", "CHECKPOINT_STATE",
]

CHECKPOINT_STATE = "state.json"
PREVIOUS_SUFFIX = ".previous"
PARTIAL_SUFFIX = ".partial"


def _fsync_dir(directory: str) -> None:
    """Makes a rename inside ``directory`` durable."""
    fd = os.open(directory or os.curdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str = "utf-8", newline=None):
    """Opens a temporary file beside ``path``; on a clean exit it is fsynced and
    renamed onto ``path``, on an exception it is removed and ``path`` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    binary = "b" in mode
    try:
        with open(tmp, mode, **({} if binary else {"encoding": encoding, "newline": newline})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


def atomic_save(obj, path: str) -> str:
    """``paddle.save(obj, path)`` through :func:`atomic_write`; returns the SHA-256 of what was written."""
    import paddle

    buffer = io.BytesIO()
    paddle.save(obj, buffer)
    data = buffer.getvalue()
    with atomic_write(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputLock:
    """Holds ``FOLDER/.lock`` (an ``flock`` on a file naming the holder's PID and host)
    while one run writes into ``FOLDER``.

    A second process is refused with a :class:`UserError` naming the folder and the
    holder's PID. The kernel drops an ``flock`` when its process dies, so a lock file
    left by a killed run is taken over; :attr:`took_over_from` then holds that run's
    PID (``None`` otherwise), for the caller to report.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, ".lock")
        self._file = None
        self.took_over_from = None

    def acquire(self) -> "OutputLock":
        try:
            os.makedirs(self.folder, exist_ok=True)
            f = open(self.path, "a+")
        except OSError as err:
            raise UserError(f"{self.folder}: cannot write into the output folder ({err.strerror})") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = (f.read().split() or ["unknown"])[0]
            f.close()
            raise UserError(f"{self.folder}: in use by another paddle-kure run (PID {holder}, lock {self.path}); "
                            f"wait for it to finish or choose another --output-dir") from None
        f.seek(0)
        previous = f.read().split()
        if previous and previous[0].isdigit():  # not emptied by release(): that run was killed
            self.took_over_from = int(previous[0])
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        os.fsync(f.fileno())
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            # emptied, not removed: removing would let a waiting process lock a file no longer in the folder
            self._file.truncate(0)
            self._file.flush()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def flatten(mapping: dict, prefix: str = "") -> dict:
    """``{"Global": {"seed": 7}}`` -> ``{"Global.seed": 7}`` (lists stay values)."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def fingerprint_diff(recorded: dict, current: dict) -> list:
    """``["Global.seed: 7 then, 99 now", ...]`` for every key whose value differs."""
    old, new = flatten(recorded), flatten(current)
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            then = "unset" if a is missing else repr(a)
            now = "unset" if b is missing else repr(b)
            lines.append(f"{key}: {then} then, {now} now")
    return lines


def stale_error(path: str, recorded, fingerprint: dict) -> UserError:
    if recorded is None:
        why = "it was written without a fingerprint of its config (an older paddle-kure)"
    else:
        why = "the config changed: " + "; ".join(fingerprint_diff(recorded, fingerprint))
    return UserError(f"{path}: cannot resume: {why}. Run without --resume to start over, or use another "
                     f"--output-dir")


def write_record(path: str, record: dict, fingerprint: dict, files=()) -> None:
    """Writes a finished stage's ``record`` atomically with its ``fingerprint`` and the
    SHA-256 of each of ``files`` (paths relative to the record's folder's parent)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    sums = {f: sha256_file(os.path.join(root, f)) for f in files}
    with atomic_write(path) as f:
        json.dump({"record": record, "fingerprint": fingerprint, "files": sums}, f, indent=1)


def read_record(path: str, fingerprint: dict):
    """``(record, problem)`` of a stage record written by :func:`write_record`.

    ``(None, None)``: no record. ``(None, problem)``: the record or one of its files
    is unreadable or fails its checksum (``problem`` names the path); the stage must
    run again. Raises :class:`UserError` when the record was made with another
    fingerprint (naming the keys that differ).
    """
    if not os.path.exists(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        record = stored["record"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{path}: unreadable ({type(err).__name__}: {err})"
    if stored.get("fingerprint") != fingerprint:
        raise stale_error(path, stored.get("fingerprint"), fingerprint)
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    for name, digest in stored.get("files", {}).items():
        file = os.path.join(root, name)
        if not os.path.isfile(file):
            return None, f"{file}: missing (recorded in {path})"
        if sha256_file(file) != digest:
            return None, f"{file}: does not match the checksum recorded in {path}"
    return record, None


def save_checkpoint(directory: str, state: dict, objects: dict) -> None:
    """Writes ``objects`` (``{file name: object for paddle.save}``) and ``state.json``
    (``state`` plus the files' SHA-256) into ``DIRECTORY.partial``, then swaps it in:
    ``DIRECTORY`` becomes ``DIRECTORY.previous`` and the new one ``DIRECTORY``. A kill
    at any point leaves a complete checkpoint in one of the two."""
    partial, previous = directory + PARTIAL_SUFFIX, directory + PREVIOUS_SUFFIX
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    sums = {name: atomic_save(obj, os.path.join(partial, name)) for name, obj in objects.items()}
    with atomic_write(os.path.join(partial, CHECKPOINT_STATE)) as f:
        json.dump(dict(state, files=sums), f)
    if os.path.isdir(directory):
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(partial, directory)  # DIRECTORY.previous stays: the fallback if DIRECTORY is damaged later
    _fsync_dir(os.path.dirname(os.path.abspath(directory)))


def set_state_strictly(layer, state: dict, source: str) -> None:
    """``layer.set_state_dict(state)``, refusing (UserError naming ``source``) a state
    whose keys or shapes differ: Paddle only warns, and the layer keeps random weights."""
    expected = layer.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
             if k in state and list(state[k].shape) != list(v.shape)]
    if missing or unexpected or wrong:
        parts = [f"missing keys {missing}" if missing else "", f"unexpected keys {unexpected}" if unexpected else "",
                 f"shapes differ ({'; '.join(wrong)})" if wrong else ""]
        raise UserError(f"{source}: not a state dict of this {type(layer).__name__}: "
                        + ", ".join(p for p in parts if p))
    layer.set_state_dict(state)


def load_checkpoint(directory: str, restore, fingerprint=None):
    """The newest good checkpoint of ``directory`` (itself, else ``DIRECTORY.previous``).

    ``restore(objects)`` receives ``{file name: loaded object}`` and applies them.
    Returns ``(state, problems)``: ``state`` is the loaded ``state.json`` (None when
    no good checkpoint exists: start from the beginning), ``problems`` one line per
    checkpoint skipped, naming its path. A checkpoint made with another
    ``fingerprint`` raises :class:`UserError` naming the keys that differ.
    """
    import paddle

    problems = []
    for candidate in (directory, directory + PREVIOUS_SUFFIX):
        state_path = os.path.join(candidate, CHECKPOINT_STATE)
        if not os.path.exists(state_path):
            continue
        try:
            with open(state_path, encoding="utf-8") as f:
                state = json.load(f)
            files = state["files"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(f"{state_path}: unreadable ({type(err).__name__}: {err})")
            continue
        if fingerprint is not None and state.get("fingerprint") != fingerprint:
            raise stale_error(state_path, state.get("fingerprint"), fingerprint)
        bad = next((name for name, digest in files.items()
                    if not os.path.isfile(os.path.join(candidate, name))
                    or sha256_file(os.path.join(candidate, name)) != digest), None)
        if bad is not None:
            problems.append(f"{os.path.join(candidate, bad)}: missing or does not match the checksum in {state_path}")
            continue
        try:
            objects = {name: paddle.load(os.path.join(candidate, name)) for name in files}
        except Exception as err:  # noqa: BLE001 - paddle.load raises many types for a bad file
            problems.append(f"{candidate}: does not load ({type(err).__name__}: {err})")
            continue
        restore(objects)  # loaded completely before anything is applied: a failure above changes nothing
        return state, problems
    return None, problems
