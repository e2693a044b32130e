"""`runner ARGS`, the console script: a thin client (standard library only) that hands the command to the agent
(runner.agent.server) and stands for it in the terminal: its signals go to the command, its exit code is the
command's."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from runner.agent.wire import FORWARDED, IN_PROCESS, AgentError, Reader, connect, send


def client_main(argv: list[str] | None = None) -> None:
    """`runner ARGS`: run the command in a child of the agent, as if here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in IN_PROCESS:
        from runner.cli.main import main

        main(argv)
        return
    try:
        sock = connect()
    except AgentError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        sys.exit(1)
    mask = os.umask(0)
    os.umask(mask)
    forwarded = [s for s in FORWARDED if signal.getsignal(getattr(signal, s)) != signal.SIG_IGN]
    request = {
        "op": "command",
        "argv": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": mask,
        # A signal ignored here (as a background job's SIGINT is) is ignored in the command's process too.
        "ignored": sorted(set(FORWARDED) - set(forwarded)),
    }
    send(sock, request, [0, 1, 2])
    reader = Reader(sock)
    first = reader.read() or {}
    if "exit" in first:  # a command that ended at once can say so before the agent has told its pid
        leave(int(first["exit"]))
    child = first.get("pid")
    if not child:
        print("runner: the agent refused the command: see its log", file=sys.stderr)
        sys.exit(1)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for name in forwarded:
        signal.signal(getattr(signal, name), forward)
    while True:
        try:
            reply = reader.read()
            break
        except InterruptedError:
            continue
    if reply is None or "exit" not in reply:  # the agent died under the command: it must not run on alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        print("runner: the agent ended during the command: run it again", file=sys.stderr)
        sys.exit(1)
    leave(int(reply["exit"]))


def leave(code: int) -> None:
    """Exit with the command's code at once: nothing here needs Python's own shutdown (tens of milliseconds)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
