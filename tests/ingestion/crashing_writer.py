"""``python crashing_writer.py POINT:N ARGS...``: the ``pricecast`` CLI (``ARGS``) with a
fault injected into the writer: SIGKILL at the ``N``-th batch reaching ``POINT``.

Points: ``before_db_commit`` (the batch's database write is about to start),
``after_db_commit`` (the write is committed, its offsets are not) and ``after_offset_commit``
(the batch's offsets were offered for commit). The hook wraps the writer's sink
and commit step in this process only; production code knows nothing of it.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any

from services import cli
from services.ingestion.writer import TickWriter

POINTS = ("before_db_commit", "after_db_commit", "after_offset_commit")


class CrashHook:
    """Kills the process hard when ``point`` is reached for the ``nth`` time."""

    def __init__(self, spec: str) -> None:
        point, _, nth = spec.partition(":")
        if point not in POINTS:
            raise SystemExit(f"unknown crash point {point!r}; known: {', '.join(POINTS)}")
        self.point, self.nth, self.seen = point, int(nth or 1), 0

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.nth:
            print(f"crash hook: SIGKILL at {point} of batch {self.nth}", file=sys.stderr)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        """Wrap the database write of every writer's sink, and the writer's commit step."""
        init, commit = TickWriter.__init__, TickWriter.commit

        @functools.wraps(init)
        def hooked_init(writer: TickWriter, *args: Any, **kwargs: Any) -> None:
            init(writer, *args, **kwargs)
            write_rows = writer.sink.write_rows

            def hooked_write_rows(*rows_args: Any, **rows_kwargs: Any) -> int:
                self.reached("before_db_commit")
                stored = write_rows(*rows_args, **rows_kwargs)
                self.reached("after_db_commit")
                return stored

            writer.sink.write_rows = hooked_write_rows  # type: ignore[method-assign]

        @functools.wraps(commit)
        async def hooked_commit(writer: TickWriter, *args: Any, **kwargs: Any) -> None:
            await commit(writer, *args, **kwargs)
            self.reached("after_offset_commit")

        TickWriter.__init__ = hooked_init  # type: ignore[method-assign]
        TickWriter.commit = hooked_commit  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    CrashHook(argv[0]).install()
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
