"""`runner compare`: the params that differ and the final metrics of several runs, best first."""

from __future__ import annotations

import math
from typing import Any

HIDDEN_PARAMS = ("hydra.",)
KEY_METRICS = ("test_accuracy", "test_loss", "val_accuracy", "accuracy", "loss")  # shown first, in this order


def load_runs(uri: str, run_ids: list[str]) -> list[Any]:
    from runner.tracking.record import get_run

    return [get_run(uri, run_id) for run_id in run_ids]


def default_objective(runs: list[Any]) -> str | None:
    present = set().union(*(r.data.metrics for r in runs)) if runs else set()
    return next((m for m in KEY_METRICS if m in present), None)


def ended_as(run: Any) -> str:
    """A run's status as a sweep says it: PRUNED for a member its sweep's pruner stopped."""
    status = str(run.info.status)
    return "PRUNED" if status == "KILLED" and run.data.tags.get("runner.reason") == "pruned" else status


def compare(runs: list[Any], objective: str | None, direction: str) -> dict[str, Any]:
    """{'objective', 'params': [differing keys], 'metrics': [keys], 'rows': [...]} sorted best first."""
    keys = sorted(set().union(*(r.data.params for r in runs))) if runs else []
    differing = [
        k for k in keys if not k.startswith(HIDDEN_PARAMS) and len({r.data.params.get(k) for r in runs}) > 1
    ]
    metrics = sorted(set().union(*(r.data.metrics for r in runs))) if runs else []
    sign = -1.0 if direction == "maximize" else 1.0

    def rank(run: Any) -> tuple[bool, float]:
        """Best first; a pruned member's last value (not its end) after every member that ran to its end."""
        value = run.data.metrics.get(objective) if objective else None
        return ended_as(run) == "PRUNED", math.inf if value is None or math.isnan(value) else sign * value

    rows = [
        {
            "id": r.info.run_id,
            "status": ended_as(r),
            "params": {k: r.data.params.get(k) for k in differing},
            "metrics": {k: r.data.metrics.get(k) for k in metrics},
        }
        for r in sorted(runs, key=rank)
    ]
    return {
        "objective": objective,
        "direction": direction,
        "params": differing,
        "metrics": metrics,
        "rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    head = ["RUN", "STATUS", *result["params"], *result["metrics"]]
    body = [
        [
            row["id"][:12],
            row["status"],
            *(str(row["params"][k]) for k in result["params"]),
            *("-" if row["metrics"][k] is None else f"{row['metrics'][k]:.4g}" for k in result["metrics"]),
        ]
        for row in result["rows"]
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *body]
    ]
    sort = f"sorted by {result['objective']} ({result['direction']})" if result["objective"] else "unsorted"
    return "\n".join([*lines, f"({len(body)} runs, {sort})"])
