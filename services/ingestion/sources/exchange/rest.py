"""GET a venue's REST endpoint and return its JSON (errors raise; the caller retries)."""

from __future__ import annotations

from typing import Any

import httpx


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    response = await client.get(url, params=params, headers=headers)
    if response.status_code >= 400:
        raise httpx.HTTPStatusError(
            f"HTTP {response.status_code} from {url.split('?', 1)[0]}",
            request=response.request,
            response=response,
        )
    return response.json()
