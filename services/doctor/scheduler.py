"""Run the checks: each as soon as what it needs is done, concurrently, under a deadline.

Each check runs in a daemon thread joined with a timeout, so a dependency that hangs (a
half-open TCP connection, a stuck server) costs at most the check's timeout and can never
keep doctor from answering or from exiting.
"""

from __future__ import annotations

import fnmatch
import queue
import threading
import time
from collections.abc import Iterable, Sequence

from services.common.config import comma_items
from services.doctor.checks import ALL_CHECKS
from services.doctor.model import CheckSpec, Context, Finding, describe

PASSING = ("ok", "warn")


def select(only: Iterable[str] | None, checks: Sequence[CheckSpec] = ALL_CHECKS) -> list[CheckSpec]:
    """The checks named by ``only`` (exact names, dotted prefixes like ``kafka`` or globs like
    ``*.reachable``) plus everything they need; every check when ``only`` is empty."""
    tokens = [token for item in (only or []) for token in comma_items(item)]
    if not tokens:
        return list(checks)
    by_name = {check.name: check for check in checks}
    unknown = [
        token for token in tokens if not any(_names(check_name, token) for check_name in by_name)
    ]
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(by_name)}")
    wanted: set[str] = set()
    stack = [
        check_name for check_name in by_name if any(_names(check_name, token) for token in tokens)
    ]
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].needs)
    return [check for check in checks if check.name in wanted]


def _names(name: str, token: str) -> bool:
    """``token`` selects the check ``name``: exactly, as a dotted prefix or as a glob."""
    return name == token or name.startswith(token + ".") or fnmatch.fnmatch(name, token)


def _timed(spec: CheckSpec, ctx: Context) -> Finding:
    start = time.perf_counter()
    try:
        finding = spec.func(ctx)
    except Exception as exc:  # noqa: BLE001 - a crashing check reports, never aborts doctor
        finding = Finding(
            spec.name,
            "fail",
            f"check raised {describe(exc)}",
            "see the evidence; rerun with --log-level DEBUG",
        )
    finding.duration_ms = round((time.perf_counter() - start) * 1000, 1)
    return finding


def _timeout_finding(spec: CheckSpec, limit: float) -> Finding:
    return Finding(
        spec.name,
        "fail",
        f"no answer within {limit:g}s (timed out)",
        "the dependency accepts connections but does not answer: check its load and logs, "
        "and the network path (PRICECAST_DOCTOR_CHECK_TIMEOUT_S raises the limit)",
        duration_ms=round(limit * 1000, 1),
    )


def _ready(spec: CheckSpec, done: dict[str, Finding], names: set[str]) -> bool:
    return all(needed in done or needed not in names for needed in spec.needs)


def run(ctx: Context, specs: Sequence[CheckSpec] | None = None) -> list[Finding]:
    """Run ``specs`` (default: all), each as soon as the checks it needs are done and
    concurrently otherwise; report in registry order."""
    specs = list(ALL_CHECKS if specs is None else specs)
    names = {check.name for check in specs}
    done: dict[str, Finding] = {}
    pending = list(specs)
    running: dict[str, tuple[CheckSpec, float]] = {}  # name -> (spec, deadline)
    finished: queue.Queue[tuple[str, Finding]] = queue.Queue()

    def launch(spec: CheckSpec) -> None:
        def target() -> None:
            finished.put((spec.name, _timed(spec, ctx)))

        running[spec.name] = (spec, time.monotonic() + ctx.timeout_s * spec.timeout_factor)
        threading.Thread(target=target, name=f"doctor:{spec.name}", daemon=True).start()

    while pending or running:
        for spec in [check for check in pending if _ready(check, done, names)]:
            pending.remove(spec)
            failed = [
                needed
                for needed in spec.needs
                if needed in done and done[needed].status not in PASSING
            ]
            if failed:
                reason = f"skipped: {', '.join(failed)} did not pass"
                done[spec.name] = Finding(spec.name, "skip", reason, f"see {failed[0]}")
            else:
                launch(spec)
        if not running:
            if pending and not any(_ready(check, done, names) for check in pending):
                raise RuntimeError(
                    f"check dependency cycle among {[check.name for check in pending]}"
                )
            continue
        wait = max(0.0, min(deadline for _, deadline in running.values()) - time.monotonic())
        try:
            name, finding = finished.get(timeout=wait)
            if name in running:  # a check given up on may still finish later: ignored
                del running[name]
                done[name] = finding
        except queue.Empty:
            now = time.monotonic()
            for name, (spec, deadline) in list(running.items()):
                if deadline <= now:
                    del running[name]
                    done[name] = _timeout_finding(spec, ctx.timeout_s * spec.timeout_factor)
    return [done[check.name] for check in specs]


def overall(findings: Iterable[Finding]) -> str:
    statuses = {finding.status for finding in findings}
    if "fail" in statuses:
        return "fail"
    if "warn" in statuses:
        return "warn"
    return "ok"
