"""Command line: `runner [OVERRIDES...]` runs a config through Hydra; `runner VERB ...` manages runs."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from runner.cli import verbs
from runner.cli.run import run_with_hydra, split_command
from runner.errors import ConfigError, RunnerError


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not MLflow's notes on creating a store
    # The store's failures are raised to us as well, and said once (a full disk, say): not logged with a traceback.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    try:
        _reconcile()
        if argv and argv[0] == "run":
            overrides, command = split_command(argv[1:])
            run_with_hydra(overrides, command=command)
            return
        if argv and argv[0] in verbs.VERBS:
            code = verbs.dispatch(argv)
            sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
            sys.exit(code)
        run_with_hydra(argv)
    except BrokenPipeError:
        # The reader went away (`runner ls | head`): end quietly, as a Unix tool killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except Exception as exc:
        error = exc if isinstance(exc, RunnerError) else said_as_one_line(exc)
        if error is None or os.environ.get("RUNNER_TRACEBACK"):
            raise
        print(f"runner: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def config_value_error(exc: BaseException) -> ConfigError | None:
    """OmegaConf's errors (an unset variable in `${oc.env:...}`, a value of the wrong type met while a value
    is read) as one line naming the key; None for any other error."""
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, OmegaConfBaseException):
        return None
    key = getattr(exc, "full_key", None)
    what = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    unset = re.search(r"Environment variable '([^']+)' not found", what)
    if unset:
        what = (
            f"the environment variable {unset[1]} is not set. Export it, or give a default: "
            f"${{oc.env:{unset[1]},default}}"
        )
    return ConfigError(f"{key + ': ' if key else ''}{what}.")


def said_as_one_line(exc: BaseException) -> RunnerError | None:
    """An error from below that the user can act on, as one line: None for a bug (its traceback, then)."""
    return config_value_error(exc) or disk_full(exc) or server_refusal(exc)


def disk_full(exc: BaseException) -> RunnerError | None:
    """A full filesystem met anywhere (the store, a run's folder, the image cache): one line saying which."""
    from runner.runs import space

    if not space.is_full(exc):
        return None
    project = project_here()

    def store() -> Path | None:
        from runner.tracking.store import store_uri

        uri = store_uri(project) if project is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
        return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None

    return space.as_error(exc, project, store)


def project_here() -> Path | None:
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / ".runner").is_dir()), None)


def server_refusal(exc: BaseException) -> RunnerError | None:
    """A tracking server's refusal of this shell's account (MLflow's basic auth: 401, or 403 for what its
    permissions do not allow) as one line naming the user, never the password; None for any other error."""
    from mlflow.exceptions import MlflowException

    from runner.tracking.store import USERNAME

    code = getattr(exc, "error_code", None) if isinstance(exc, MlflowException) else None
    if code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return None
    user = os.environ.get(USERNAME)
    endpoint = re.search(r"endpoint (\S+)", str(exc))
    on = f" (on {endpoint[1]})" if endpoint else ""
    if code == "PERMISSION_DENIED":
        return RunnerError(
            f"the tracking server does not let user '{user}' change this{on}: its permissions give you only "
            "what you made, and reading. Record into an experiment of your own (tracking.experiment=NAME), or "
            "ask the experiment's owner for EDIT permission."
        )
    if not user:
        return RunnerError(
            f"the tracking server asks for an account{on}: export MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (your lab's admin creates accounts)."
        )
    return RunnerError(
        f"the tracking server refused user '{user}'{on}: wrong user name or password. Export the right "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (your lab's admin creates accounts and resets "
        "passwords)."
    )


def _reconcile() -> None:
    """Every command first gives the runs of this project that lost their owner a new one (runner.runs.owner)."""
    project = project_here()
    if project is not None and (project / ".runner" / "live").is_dir():
        from runner.launch import sweep_owner
        from runner.runs.owner import reconcile

        reconcile(project)
        sweep_owner.reconcile(project)
