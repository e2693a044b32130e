"""Run by Python at the start of every process of a run (this folder is first on the run's PYTHONPATH).

The runner's in-run pieces (the harness and its own packages: hydra-core, omegaconf, mlflow-skinny) go on the
path after the run's own packages, so the project's versions always win. Where the run asked for autologging
(RUNNER_AUTOLOG), MLflow's autologging is switched on once the run first imports a framework it covers, or
MLflow itself (so that the runner's settings come first, and a script's own `mlflow.autolog()` adds nothing).
Standard library only, and nothing imported before then: a plain Python process starts as fast as without it.
"""

import importlib.machinery
import os
import sys

for _entry in os.environ.get("RUNNER_HARNESS_PATH", "").split(os.pathsep):
    if _entry and _entry not in sys.path:
        sys.path.append(_entry)

# The top-level modules whose import switches autologging on (MLflow's own integrations hook the frameworks).
TRIGGERS = {
    "keras",
    "tensorflow",
    "sklearn",
    "lightning",
    "pytorch_lightning",
    "xgboost",
    "lightgbm",
    "mlflow",
}


class _Trigger:
    """Finds nothing itself: it wraps a trigger's loader so that, once the outermost such import has finished
    (tensorflow imports keras, say), autologging starts. A finder by its `find_spec` alone: importlib.abc, its
    base class, imports importlib.resources and pathlib, tens of milliseconds at every Python start."""

    def __init__(self) -> None:
        self.depth = 0
        self.looking = False

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name not in TRIGGERS or self.looking:
            return None
        self.looking = True
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        finally:
            self.looking = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            self.depth += 1
            try:
                run(module)
            finally:
                self.depth -= 1
            if self.depth == 0 and self in sys.meta_path:
                sys.meta_path.remove(self)
                _start()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _start() -> None:
    from importlib.util import module_from_spec, spec_from_file_location

    where = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "autolog.py")
    try:
        spec = spec_from_file_location("_runner_autolog", where)
        assert spec is not None and spec.loader is not None
        module = module_from_spec(spec)
        spec.loader.exec_module(module)
        module.start()
    except Exception as exc:  # autologging is a help, never a reason for the run to fail
        print(f"[runner] autologging is off: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def _chain() -> None:
    """The sitecustomize this one hides (a distribution's own, say), run as Python would have."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        from importlib.util import module_from_spec

        module = module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get("RUNNER_AUTOLOG"):
    sys.meta_path.insert(0, _Trigger())
_chain()
