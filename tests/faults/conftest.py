"""The fault suite's stack: one per session, started once, broken one fault at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit.report import write_faults_result
from faultkit.scenario import FaultStack, format_table
from faultkit.suite import FULL, fault_config


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    # PRICECAST_FAULTS_WORK_DIR keeps the run's service and broker logs (diagnosis).
    keep = os.environ.get("PRICECAST_FAULTS_WORK_DIR")
    work_dir = Path(keep) if keep else None
    with FaultStack(fault_config(), work_dir=work_dir) as stack:
        yield stack
        if stack.reports:
            totals = stack.totals()
            print("\n" + format_table(stack.reports), flush=True)
            print(f"totals: {totals}", flush=True)
            if FULL:
                print(f"wrote {write_faults_result(stack, totals)}", flush=True)
