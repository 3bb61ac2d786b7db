"""Harness of the fault suite: TCP proxy, infrastructure control, services as processes,
synthetic load with exact acknowledgement accounting, API probe, per-fault report."""
