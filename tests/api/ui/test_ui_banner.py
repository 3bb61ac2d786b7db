"""The banner from /health/detailed: with Redis unreachable the API answers "degraded" (it
serves from PostgreSQL) and the page says so above every view, while still working."""

from __future__ import annotations

import pytest
from _ui_browser import WAIT_MS, Dashboard, assert_clean, sign_in
from playwright.sync_api import Page, expect

from services.common.config import Settings


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})


def test_degraded_banner(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    banner = page.get_by_role("alert").filter(has_text="degraded")
    expect(banner).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_contain_text("redis")
    page.get_by_role("link", name="BTC-USD").click()  # the views still load (from PostgreSQL)
    expect(page.locator("body")).to_have_attribute("data-chart", "drawn", timeout=WAIT_MS)
    expect(page.locator("#provenance")).to_contain_text("lstm-v3")
    assert_clean(page)
