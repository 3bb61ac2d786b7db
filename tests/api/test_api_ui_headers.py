"""/ui/ carries the dashboard's CSP and security headers; nothing else changes: the API's own
answers keep theirs, and a hostile Host header never reaches the policy."""

from __future__ import annotations

import httpx

from services.api.ui import content_security_policy


def test_policy_reflects_only_a_plain_host() -> None:
    assert content_security_policy(b"127.0.0.1:8000").endswith(
        b"connect-src 'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000"
    )
    assert b"ws://[::1]:8000" in content_security_policy(b"[::1]:8000")
    for hostile in (b"evil.test; script-src *", b"a b", b"x'y", b"", None):
        policy = content_security_policy(hostile)
        assert policy.endswith(b"connect-src 'self'") and b"*" not in policy


async def test_ui_headers_and_api_headers_apart(client: httpx.AsyncClient) -> None:
    ui = await client.get("/ui/", headers={"Host": "dash.example:8443"})
    assert ui.status_code == 200
    csp = ui.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "wss://dash.example:8443" in csp
    assert ui.headers["x-frame-options"] == "DENY"
    assert ui.headers["cache-control"] == "no-cache"
    assert "x-request-id" in ui.headers and "x-process-time" in ui.headers
    module = await client.get("/ui/js/main.js")
    assert "javascript" in module.headers["content-type"]
    assert module.headers["x-content-type-options"] == "nosniff"
    missing = await client.get("/ui/nope.js")  # the API's error shape, as JSON
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ERR_NOT_FOUND"
    metrics = (await client.get("/metrics")).text
    assert 'pricecast_http_requests_total{method="GET",route="/ui",status="200"}' in metrics
    for path in ("/health", "/.well-known/jwks.json", "/api/v1/assets"):
        r = await client.get(path)
        assert "content-security-policy" not in r.headers, path
        assert "x-frame-options" not in r.headers, path
