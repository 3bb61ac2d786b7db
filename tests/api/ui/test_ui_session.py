"""Refresh rotation by the page: with 8-second access tokens the page rotates before expiry
(at 80% of the lifetime), goes on reading with the new tokens, and renews the stream's token
in-band (no new socket) when the stream is up; the rotated-away refresh token is spent."""

from __future__ import annotations

import httpx
import pytest
from _ui_browser import WAIT_MS, Dashboard, assert_clean, sign_in
from playwright.sync_api import Page, expect

from services.common.config import Settings

TTL_S = 8
SESSION = "JSON.parse(sessionStorage.getItem('pricecast.session'))"
# A function, not a string: the page's CSP forbids evaluating strings (no 'unsafe-eval').
ROTATED = f"(before) => {SESSION}.access !== before"
SETTLED = "() => ['live', 'polling'].includes(document.body.dataset.live)"


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(update={"access_token_ttl_s": TTL_S})


def test_page_rotates_tokens_before_they_expire(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    first = page.evaluate(SESSION)
    page.wait_for_function(SETTLED, timeout=WAIT_MS)  # the stream is up, or polling is
    live_before = page.evaluate("[document.body.dataset.live, document.body.dataset.streamOpened]")
    # Two rotations, the second after the first access token has expired.
    page.wait_for_function(ROTATED, arg=first["access"], timeout=WAIT_MS)
    second = page.evaluate(SESSION)
    assert second["refresh"] != first["refresh"]
    page.wait_for_function(ROTATED, arg=second["access"], timeout=WAIT_MS)
    # The page reads with what it holds now: a new view loads.
    page.get_by_role("link", name="BTC-USD").click()
    expect(page.locator("body")).to_have_attribute("data-chart", "drawn", timeout=WAIT_MS)
    current = page.evaluate(SESSION)["access"]
    headers = {"Authorization": f"Bearer {current}"}
    assert httpx.get(f"{dashboard.base}/api/v1/assets", headers=headers).status_code == 200
    if live_before[0] == "live":  # the stream was up: renewed in-band, never reopened
        assert page.evaluate("document.body.dataset.streamOpened") == live_before[1]
        assert page.evaluate("document.body.dataset.live") == "live"
    # A spent refresh token is refused (and, by design, revokes its family).
    reuse = httpx.post(
        f"{dashboard.base}/api/v1/auth/refresh",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh"]},
    )
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "ERR_AUTH_003"
    assert_clean(page)
