"""A run's log as a terminal would finally show it: progress bars' carriage-return redraws at their last state,
colour codes gone; and that text in the record as the `run.log` artifact."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TERMINAL = re.compile(r"(\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|\r|\x08)")


def log_the_log(client: Any, run_id: str, logfile: Path) -> None:
    """The run's log as an artifact (run.log), as a person would read it (readable_log), made a block of lines at a
    time (a log may be as long as resources.log_limit); the file in the run's folder stays as it came, for
    `runner logs`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="runner-log-") as tmp:
        readable = Path(tmp) / "run.log"
        with open(logfile, "rb") as src, open(readable, "w", encoding="utf-8", newline="") as out:
            for block in line_blocks(src):
                out.write(readable_log(block))
        client.log_artifact(run_id, str(readable))


def line_blocks(src: IO[bytes], size: int = 1 << 20) -> Iterator[str]:
    """The text of `src` in blocks of whole lines (each about `size` bytes, or one line where it is longer); no
    character is cut, as none spans a newline."""
    held: list[bytes] = []
    while block := src.read(size):
        cut = block.rfind(b"\n") + 1
        if not cut:
            held.append(block)
            continue
        yield b"".join([*held, block[:cut]]).decode("utf-8", errors="replace")
        held = [block[cut:]]
    if rest := b"".join(held):
        yield rest.decode("utf-8", errors="replace")


def raw_log(logfile: Path) -> str:
    """The log's text as it came, carriage returns kept: read as text, Python's universal newlines would make
    each progress bar's redraw a line of its own before readable_log could apply it."""
    return logfile.read_bytes().decode("utf-8", errors="replace")


def readable_log(text: str) -> str:
    """What a terminal would finally show of `text`: ANSI codes gone, carriage-return redraws (progress bars)
    and backspaces applied, each line at its last state."""
    lines = []
    for raw in text.split("\n"):
        if "\r" not in raw and "\b" not in raw and "\x1b" not in raw:
            lines.append(raw)
            continue
        line: list[str] = []
        col = 0
        for piece in TERMINAL.split(raw):
            if not piece:
                continue
            if piece == "\r":
                col = 0
            elif piece == "\x08":
                col = max(0, col - 1)
            elif piece.startswith("\x1b"):
                if piece.startswith("\x1b[") and piece.endswith("K"):  # erase to the end of the line
                    del line[col:]
            else:
                for ch in piece:
                    if col < len(line):
                        line[col] = ch
                    else:
                        line.append(ch)
                    col += 1
        lines.append("".join(line).rstrip())
    return "\n".join(lines)
