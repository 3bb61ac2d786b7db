"""The fault suite's stack: one per session, started once, broken one fault at a time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultkit.report import write_faults_result
from faultkit.scenario import FaultStack, format_table
from faultkit.suite import FULL, fault_config


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    with FaultStack(fault_config()) as stack:
        yield stack
        if stack.reports:
            totals = stack.totals()
            print("\n" + format_table(stack.reports), flush=True)
            print(f"totals: {totals}", flush=True)
            if FULL:
                print(f"wrote {write_faults_result(stack, totals)}", flush=True)
