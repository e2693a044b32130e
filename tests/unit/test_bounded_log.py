"""A run's log within resources.log_limit (runner.harness.boundedlog): the head and the tail kept, the middle dropped
with a line saying how many bytes, the segments on disk bounded, and an owner that takes over going on from the files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.harness.boundedlog import DEFAULT_LIMIT, TAIL, BoundedLog, limit_in, settle

LIMIT = 4096  # a head of 2048 bytes, segments of 1024


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(f"line {i:06d} of the run\n".encode() for i in range(start, start + n))


def folder(path: Path) -> Path:
    """run.log in a folder of its own (its tail's segments go beside it)."""
    path.mkdir()
    return path / "run.log"


def written(log: Path, chunks: list[bytes], limit: int | None = LIMIT) -> bytes:
    with BoundedLog(log, limit) as out:
        for chunk in chunks:
            out.write(chunk)
    settle(log, limit)
    return log.read_bytes()


def pieces(text: bytes, output: bytes) -> tuple[bytes, bytes, int, bytes]:
    """The kept head, the line said when the log passed its limit, the bytes said dropped, the kept tail."""
    head, rest = text.split(b"[runner] the log passed resources.log_limit=", 1)
    if head.endswith(b"\n") and not output.startswith(head):  # cut mid-line: the line said begins a line
        head = head[:-1]
    passed, rest = rest.split(b"\n", 1)
    said = re.fullmatch(rb"\[runner\] (\d+) bytes of the log's middle were dropped \(resources.log_limit=4k\); "
                        rb"its last (\d+) bytes follow\n(.*)", rest, re.S)  # fmt: skip
    assert said, rest[:200]
    tail = said.group(3)
    assert int(said.group(2)) == len(tail)
    return head, passed, int(said.group(1)), tail


def test_a_log_within_its_limit_is_left_as_it_came(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_bytes(b"[runner] run abc\n")
    assert (
        written(log, [lines(10), b"no newline at the end"])
        == b"[runner] run abc\n" + lines(10) + b"no newline at the end"
    )
    assert not (tmp_path / TAIL).exists()


def test_past_half_its_limit_a_log_waits_whole_and_says_so_only_once_past_the_limit(tmp_path: Path) -> None:
    output = lines(170)  # 3910 bytes: past half the limit, within it
    assert (
        written(folder(tmp_path / "whole"), [output]) == output
    )  # within its limit: whole, no line of the runner's

    log = tmp_path / "run.log"
    with BoundedLog(log, LIMIT) as out:
        out.write(output)
        assert len(log.read_bytes()) <= 2048 and b"[runner]" not in log.read_bytes()
        out.write(lines(10, 170))  # past it now
        assert log.read_bytes().endswith(b"[runner] the log passed resources.log_limit=4k: its middle is dropped, "
                                         b"its last 2k are kept and shown when the run ends\n")  # fmt: skip


def test_the_head_and_the_tail_are_kept_and_the_dropped_bytes_counted_exactly(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    output = lines(1000)
    text = written(log, [output[i : i + 100] for i in range(0, len(output), 100)])
    head, passed, dropped, tail = pieces(text, output)
    assert passed == b"4k: its middle is dropped, its last 2k are kept and shown when the run ends"
    assert output.startswith(head) and output.endswith(tail)
    assert len(head) + dropped + len(tail) == len(output)
    assert head.endswith(b"\n") and tail.startswith(b"line ")  # cut between lines
    assert 2048 - 100 < len(head) <= 2048 and 2048 - 23 < len(tail) <= 2048  # less a line at most
    assert tail.endswith(b"line 000999 of the run\n")
    assert not (tmp_path / TAIL).exists()  # the segments are gone once settled


def test_the_segments_on_disk_stay_within_five_eighths_of_the_limit(tmp_path: Path) -> None:
    log, chunk = tmp_path / "run.log", len(lines(50))
    with BoundedLog(log, LIMIT) as out:
        for n in range(200):
            out.write(lines(50, n * 50))
            segments = sorted((tmp_path / TAIL).iterdir(), key=lambda p: int(p.name)) if n > 5 else []
            assert len(segments) <= 5 and sum(p.stat().st_size for p in segments) <= LIMIT * 5 // 8
    last = (chunk * 200 - 2047 - 1) // 512  # segment N holds the tail's bytes from N * 512 on
    assert [p.name for p in segments] == [str(i) for i in range(last - 4, last + 1)]
    assert log.stat().st_size < LIMIT // 2 + 200  # the head and the line saying the limit passed, no more


@pytest.mark.parametrize("at", [1, 777, 2048, 3000, 9000])
def test_a_writer_that_takes_over_goes_on_from_the_files(tmp_path: Path, at: int) -> None:
    output = lines(1000)
    whole = written(folder(tmp_path / "once"), [output])
    log = tmp_path / "run.log"
    with BoundedLog(log, LIMIT) as out:  # the first owner, gone after `at` bytes
        out.write(output[:at])
    with BoundedLog(log, LIMIT) as out:
        out.write(output[at:])
    settle(log, LIMIT)
    head, _, dropped, tail = pieces(log.read_bytes(), output)
    assert len(head) + dropped + len(tail) == len(output)
    assert output.startswith(head) and output.endswith(tail)
    assert tail == pieces(whole, output)[3]


def test_a_long_line_of_wide_characters_is_cut_between_characters(tmp_path: Path) -> None:
    output = "é€😀".encode() * 5000  # 9 bytes each, no newline
    text = written(tmp_path / "run.log", [output[i : i + 1000] for i in range(0, len(output), 1000)])
    head, _, dropped, tail = pieces(text, output)
    head.decode() and tail.decode()  # neither splits a character
    assert output.startswith(head) and output.endswith(tail)
    assert len(head) + dropped + len(tail) == len(output)
    assert 2048 - 4 < len(tail) <= 2048 and 2048 - 4 < len(head) <= 2048


def test_no_limit_keeps_everything(tmp_path: Path) -> None:
    output = lines(1000)
    assert written(tmp_path / "run.log", [output], None) == output


def test_an_engines_output_read_again_by_the_next_owner_goes_on_where_the_log_is(tmp_path: Path) -> None:
    from runner.backends.logpump import LogPump
    from runner.harness.shim import Scrubber
    from runner.runs.rundir import RunDir

    run = RunDir(tmp_path)
    run.state.write_text('{"log_limit": 4096}')
    output = lines(1000)
    chunks = [output[i : i + 300] for i in range(0, len(output), 300)]
    first = LogPump(run, Scrubber([]))
    with first.open() as out:
        first.stream(chunks[:40], out)  # its owner is lost here
    assert run.log_offset.read_text() == f"{40 * 300:020d}"
    again = LogPump(run, Scrubber([]))
    with again.open() as out:
        again.stream(chunks, out)  # the engine's output from its start
        again.end(out)
    settle(run.log, 4096)
    assert run.log.read_bytes() == written(folder(tmp_path / "once"), chunks)


def test_a_run_started_before_the_setting_has_the_default(tmp_path: Path) -> None:
    assert limit_in(tmp_path) == DEFAULT_LIMIT == 1024**3  # no state at all
    (tmp_path / "state.json").write_text('{"run_id": "abc", "max_attempts": 1}')
    assert limit_in(tmp_path) == DEFAULT_LIMIT
    (tmp_path / "state.json").write_text('{"run_id": "abc", "log_limit": null}')
    assert limit_in(tmp_path) is None


def test_a_tail_a_run_made_a_link_is_never_followed(tmp_path: Path) -> None:
    """A local run can reach its folder: a link in place of the tail's folder, or of a segment, to a host file,
    never brings that file into the log (nor is written through)."""
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "0"
    secret.write_bytes(b"HOST SECRET\n")
    run = tmp_path / "run"
    run.mkdir()
    log = run / "run.log"
    (run / TAIL).symlink_to(host)
    with BoundedLog(log, 1024) as out:
        out.write(b"x" * 100 + b"\n")
    settle(log, 1024)
    assert b"HOST SECRET" not in log.read_bytes() and secret.read_bytes() == b"HOST SECRET\n"

    with BoundedLog(log, 1024) as out:  # past half: a tail of its own, one of whose segments the run links
        for i in range(40):
            out.write(f"line {i:03d} ".encode() + b"y" * 40 + b"\n")
    segments = sorted((run / TAIL).iterdir())
    segments[0].unlink()
    segments[0].symlink_to(secret)
    settle(log, 1024)
    text = log.read_bytes()
    assert b"HOST SECRET" not in text and b"line 039" in text
    assert not (run / TAIL).exists() and secret.read_bytes() == b"HOST SECRET\n"
