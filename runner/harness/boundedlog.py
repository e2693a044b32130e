"""A run's log kept within `resources.log_limit`: its head and its tail, the middle dropped with a line saying how
much. The run is never stopped for it.

The first half of the limit goes to run.log as it comes; the rest to numbered segments of an eighth of the limit each
in `run.log.tail/`: when one is full the next begins, and the oldest of five goes, so the last half of the limit is
always there (in the four before and the one being written), at most five eighths of the limit on disk, nothing held
in memory. Once the log is past its limit (its middle begins to go) one line in run.log says so. Segment N begins at
byte N * eighth of what went there: the files alone say how much came (an owner that takes over, or the run's next
attempt, goes on from them). When the run ends (`settle`), the count of bytes dropped and the kept tail are appended
to run.log and the segments go: a log within its limit is then whole, as it came (what came past half of it shows
only then). Standard library only: the shim uses it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO

TAIL = "run.log.tail"  # the segments' folder, beside run.log
STATE = "state.json"  # the run's state, where its limit is (runner.runs.rundir.RunDir.state)
DEFAULT_LIMIT = 1024**3  # resources.log_limit's default, for runs whose state predates it
MIN_LIMIT = 1024
LOOK = 4096  # how far a cut may move to fall between lines
SEGMENTS = 8  # segments per limit: the tail kept is the last SEGMENTS // 2 of them


def limit_in(root: Path) -> int | None:
    """The log limit of the run in folder `root` (None: no limit); a run that predates the setting has the default."""
    try:
        state = json.loads((root / STATE).read_text())
    except (OSError, ValueError):
        return DEFAULT_LIMIT
    return state.get("log_limit", DEFAULT_LIMIT) if isinstance(state, dict) else DEFAULT_LIMIT


def size_text(size: int) -> str:
    """A size as resources.log_limit takes it: 64k, 1g; or the bytes."""
    for unit, scale in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


class BoundedLog:
    """run.log appended to within `limit` (None: no limit), through write(); where a tail was begun, it goes on."""

    def __init__(self, log: Path, limit: int | None):
        self.log, self.limit = log, limit
        self.tail = log.with_name(TAIL)
        self.out = _open(log, "a+b")  # read too: its last byte
        self.segment: IO[bytes] | None = None
        self.index = self.filled = 0
        self.passed = False  # the tail went past what is kept: the middle is dropped
        self.ends_line = _last_byte(self.out.fileno()) in (b"", b"\n")
        if (
            limit is not None and self.tail.is_symlink()
        ):  # the run's own doing (a local run can): never followed
            self.tail.unlink()
        if limit is not None and self.tail.is_dir():
            self._go_on()

    def __enter__(self) -> BoundedLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.out.close()
        if self.segment is not None:
            self.segment.close()

    def write(self, data: bytes) -> None:
        if self.limit is None:
            self.out.write(data)
            return
        if self.segment is None:
            room = self.limit // 2 - os.fstat(self.out.fileno()).st_size
            if len(data) <= room:
                self._head(data)
                return
            cut = self._head_cut(data, room)
            self._head(data[:cut])
            self._begin_tail()
            data = data[cut:]
        self._to_tail(data)

    def _head(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.ends_line = data.endswith(b"\n")

    def _head_cut(self, data: bytes, room: int) -> int:
        """Where the head ends in `data`: after a line within LOOK bytes of the room's end, else at a character's
        start."""
        room = max(0, room)
        line = data.rfind(b"\n", max(0, room - LOOK), room)
        if line >= 0:
            return line + 1
        if room <= LOOK and self.ends_line:
            return 0
        return _char_start(data, room)

    def _begin_tail(self) -> None:
        self.tail.mkdir(exist_ok=True)
        self.segment = _open(self.tail / "0", "ab")

    def _go_on(self) -> None:
        """The tail as the segments left it."""
        indices = _indices(self.tail)
        self.index = indices[-1] if indices else 0
        self.segment = _open(self.tail / str(self.index), "ab")
        self.filled = os.fstat(self.segment.fileno()).st_size
        self.passed = self._came() > self._kept()

    def _came(self) -> int:
        """The bytes that went to the tail."""
        assert self.limit is not None
        return self.index * (self.limit // SEGMENTS) + self.filled

    def _kept(self) -> int:
        assert self.limit is not None
        return self.limit // SEGMENTS * (SEGMENTS // 2)

    def _say_passed(self) -> None:
        """The log is past its limit: said once, as its middle begins to go (within it, the log stays whole)."""
        assert self.limit is not None
        self.passed = True
        newline = "" if _last_byte(self.out.fileno()) in (b"", b"\n") else "\n"
        self.out.write(
            f"{newline}[runner] the log passed resources.log_limit={size_text(self.limit)}: its middle is dropped, "
            f"its last {size_text(self._kept())} are kept and shown when the run ends\n".encode()
        )

    def _to_tail(self, data: bytes) -> None:
        assert self.limit is not None and self.segment is not None
        size = self.limit // SEGMENTS
        while data:
            if self.filled >= size:
                self.segment.close()
                (self.tail / str(self.index - SEGMENTS // 2)).unlink(missing_ok=True)
                self.index, self.filled = self.index + 1, 0
                self.segment = _open(self.tail / str(self.index), "wb")
            part = data[: size - self.filled]
            self.segment.write(part)
            self.filled += len(part)
            data = data[len(part) :]
        if not self.passed and self._came() > self._kept():
            self._say_passed()


def settle(log: Path, limit: int | None) -> None:
    """At the run's end: the count of bytes dropped and the kept tail appended to run.log, the segments gone; a log
    that stayed within its limit is whole again, as it came."""
    tail = log.with_name(TAIL)
    if tail.is_symlink():  # put there by the run itself (a local run can): never followed
        tail.unlink()
        return
    indices = _indices(tail) if tail.is_dir() else []
    if limit is None or not indices:
        shutil.rmtree(tail, ignore_errors=True)
        return
    size, last = limit // SEGMENTS, indices[-1]
    came = last * size + (tail / str(last)).stat().st_size
    # The tail's first byte kept, at a line's start if one is near, else at a character's.
    first = max(0, came - size * (SEGMENTS // 2))
    if first:
        with _open(tail / str(first // size), "rb") as fh:
            fh.seek(first % size)
            start = fh.read(LOOK + 4)
        line = start.find(b"\n", 0, LOOK)
        first += line + 1 if line >= 0 else _char_start(start, 0, forward=True)
    with open(log, "a+b") as out:
        newline = "" if _last_byte(out.fileno()) in (b"", b"\n") else "\n"
        if first:  # else the log stayed within its limit: whole, as it came
            out.write(
                f"{newline}[runner] {first} bytes of the log's middle were dropped (resources.log_limit="
                f"{size_text(limit)}); its last {came - first} bytes follow\n".encode()
            )
        for index in range(first // size, last + 1):
            try:
                src = _open(tail / str(index), "rb")
            except OSError:  # gone, or made a link by the run itself: not followed
                continue
            with src:
                src.seek(first - index * size if index == first // size else 0)
                shutil.copyfileobj(src, out, 1 << 20)
    shutil.rmtree(tail, ignore_errors=True)


def _open(path: Path, mode: str) -> IO[bytes]:
    """Unbuffered: what is written is in the file at once, for `runner logs -f` and for whoever goes on from it.
    A segment that is a link (a local run's doing) is not followed."""
    nofollow = os.O_NOFOLLOW if path.parent.name == TAIL else 0
    return open(path, mode, buffering=0, opener=lambda p, flags: os.open(p, flags | nofollow, 0o644))


def _indices(tail: Path) -> list[int]:
    return sorted(int(p.name) for p in tail.iterdir() if p.name.isdigit() and not p.is_symlink())


def _last_byte(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, 1, size - 1) if size else b""


def _char_start(data: bytes, at: int, forward: bool = False) -> int:
    """`at`, or the nearest position to it (back, or `forward`) where a UTF-8 character begins: a cut there splits
    none."""
    for _ in range(3):
        if at >= len(data) or not 0x80 <= data[at] < 0xC0 or (at == 0 and not forward):
            break
        at += 1 if forward else -1
    return at
