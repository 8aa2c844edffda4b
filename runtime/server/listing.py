"""``mlfn list``: a readable table of function specs (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.spec import FunctionSpec

__all__ = ["spec_table"]


def _trigger(spec: FunctionSpec) -> str:
    if spec.kind in ("inference", "http"):
        return "http"
    parts = [f"kafka:{','.join(s.topics)}" for s in spec.sources]
    parts += [f"broker:{s.broker}" for s in spec.subscriptions]
    return " ".join(parts) or "cloudevents"


def spec_table(specs: Sequence[FunctionSpec]) -> str:
    """One line per function: name, kind, trigger, model, batching, scaling, resources.

    Example:
        >>> print(spec_table([]))
        no functions found
    """
    if not specs:
        return "no functions found"
    header = ("NAME", "KIND", "TRIGGER", "MODEL", "BATCH", "CONCURRENCY", "SCALE", "RESOURCES")
    rows = [header]
    for s in specs:
        batch = f"{s.batching.max_batch_size}/{s.batching.max_wait_ms:g}ms" if s.batching else "-"
        cc = s.scaling.container_concurrency or "unlimited"
        scale = f"{s.scaling.min_scale}..{s.scaling.max_scale or 'inf'}"
        res = f"cpu={s.resources.cpu} mem={s.resources.memory}"
        if s.resources.gpus:
            res += f" gpu={s.resources.gpus}"
        rows.append(
            (
                s.name,
                s.kind,
                _trigger(s),
                s.model.name if s.model else "-",
                batch,
                str(cc),
                scale,
                res,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
