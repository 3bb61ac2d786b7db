"""Refresh rotation by the page: with 8-second access tokens the page rotates before expiry
(at 80% of the lifetime) and keeps reading; the rotated-away refresh token is spent."""

from __future__ import annotations

import httpx
import pytest
from _ui_browser import WAIT_MS, Dashboard, assert_clean, sign_in
from playwright.sync_api import Page

from services.common.config import Settings

TTL_S = 8
SESSION = "JSON.parse(sessionStorage.getItem('pricecast.session'))"
# Functions, not strings: the page's CSP forbids evaluating strings (no 'unsafe-eval').
ROTATED = f"(before) => {SESSION}.access !== before"
POLLED = "(before) => (document.body.dataset.polled ?? '0') !== before"


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(update={"access_token_ttl_s": TTL_S})


def test_page_rotates_tokens_before_they_expire(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    first = page.evaluate(SESSION)
    # Two rotations: each new pair works, and the page goes on polling past every expiry.
    page.wait_for_function(ROTATED, arg=first["access"], timeout=WAIT_MS)
    second = page.evaluate(SESSION)
    assert second["refresh"] != first["refresh"]
    page.wait_for_function(ROTATED, arg=second["access"], timeout=WAIT_MS)
    third = page.evaluate(SESSION)
    polled = page.evaluate("document.body.dataset.polled ?? '0'")
    page.wait_for_function(POLLED, arg=polled, timeout=WAIT_MS)
    headers = {"Authorization": f"Bearer {third['access']}"}
    assert httpx.get(f"{dashboard.base}/api/v1/assets", headers=headers).status_code == 200
    # A spent refresh token is refused (and, by design, revokes its family).
    reuse = httpx.post(
        f"{dashboard.base}/api/v1/auth/refresh",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh"]},
    )
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "ERR_AUTH_003"
    assert_clean(page)
