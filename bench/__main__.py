"""Run every benchmark (``python -m bench``) or one (``python -m bench NAME``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

SKIP = {"common", "__main__", "real_series"}


def names() -> list[str]:
    here = Path(__file__).parent
    modules = pkgutil.iter_modules([str(here)])
    # ``_name`` modules are helpers of a benchmark, not benchmarks.
    return sorted(m.name for m in modules if m.name not in SKIP and not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    wanted = argv or names()
    failed = []
    for name in wanted:
        if name not in names():
            print(f"unknown benchmark {name!r}; known: {', '.join(names())}", file=sys.stderr)
            return 2
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        try:
            module.main()
        except Exception as exc:  # noqa: BLE001 - report every failing benchmark, run the rest
            print(f"benchmark {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
