"""Run the benchmarks: `python -m bench [NAME ...]` (default: all of them, in order)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )
    chosen = argv or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; found: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "main"):
            print(f"\n== bench/{name}.py ==", flush=True)
            module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
