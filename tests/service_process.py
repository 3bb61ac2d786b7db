"""Helpers for tests that run a service as its own process."""

from __future__ import annotations

import asyncio
import subprocess

import httpx


async def wait_serving(
    port: int, proc: subprocess.Popen[bytes], what: str, limit_s: float = 60.0
) -> None:
    """Until the process answers ``/health`` on ``port``: past start-up, its signal handlers
    installed. Fails at once if it exits."""
    deadline = asyncio.get_running_loop().time() + limit_s
    async with httpx.AsyncClient(timeout=1.0) as client:
        while asyncio.get_running_loop().time() < deadline:
            assert proc.poll() is None, f"{what} exited ({proc.returncode})"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not answer /health")
