"""The dashboard in a real browser against the real stack: sign in with client credentials,
BTC-USD with its forecast fan, interval and level switches, NEW-USD's "needs more history",
a live update without a reload, sign-out revoking the token; the CSP holds throughout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from _ui_browser import CLIENT_ID, LIVE_WAIT_MS, SECRET, WAIT_MS, Dashboard, assert_clean, sign_in
from _ui_seed import cache_records, forecast_records, publish_records
from playwright.sync_api import Page, expect


def test_sign_in_assets_and_needs_more_history(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    btc = page.locator('#assets-table tr[data-symbol="BTC-USD"]')
    expect(btc).to_contain_text("lstm", timeout=WAIT_MS)
    expect(btc).to_contain_text("+24h")
    expect(btc).to_contain_text("Fresh")
    new = page.locator('#assets-table tr[data-symbol="NEW-USD"]')
    expect(new).to_contain_text("Needs 20 more days of history")
    # The session lives in sessionStorage only.
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('pricecast.session'))")
    assert stored["access"] and stored["refresh"]
    page.get_by_role("link", name="NEW-USD").click()
    expect(page.locator("#history-message")).to_contain_text(
        "NEW-USD needs 20 more days of history (has 10 of 30)", timeout=WAIT_MS
    )
    assert_clean(page)


def test_asset_chart_bands_interval_and_level(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    page.get_by_role("link", name="BTC-USD").click()
    expect(page.locator("body")).to_have_attribute("data-chart", "drawn", timeout=WAIT_MS)
    expect(page.locator("#chart canvas").first).to_be_visible()
    expect(page.locator("#provenance")).to_contain_text("lstm-v3")
    expect(page.locator("#forecast-table tbody tr")).to_have_count(24)
    level = page.get_by_label("Interval level")
    assert level.locator("option").all_inner_texts() == ["All levels (fan)", "50%", "80%", "95%"]
    first = forecast_records("BTC-USD", dashboard.as_of, dashboard.last_price)[0]
    row = page.locator("#forecast-table tbody tr").first
    expect(row).to_contain_text("80%")
    level.select_option("0.95")
    band = next(b for b in first["intervals"] if b["level"] == 0.95)
    expect(row).to_contain_text("95%")
    expect(row).to_contain_text(f"{band['upper']:,.2f}")
    expect(page.locator("#chart-summary")).to_contain_text("1440 1h bars")
    page.get_by_text("1d", exact=True).click()
    expect(page.locator("body")).to_have_attribute("data-bar-interval", "1d", timeout=WAIT_MS)
    expect(page.locator("#chart-summary")).to_contain_text("1d bars")
    page.get_by_text("1m", exact=True).click()
    expect(page.locator("#chart-summary")).to_contain_text("1m bars", timeout=WAIT_MS)
    expect(page.locator("#models-table")).to_contain_text("champion", timeout=WAIT_MS)
    expect(page.locator("#models-table")).to_contain_text("retired")
    expect(page.locator("#calibration-table")).to_contain_text("80%")
    expect(page.locator("#accuracy-table")).to_contain_text("30 days")
    assert_clean(page)


def test_live_update_without_reload(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    page.get_by_role("link", name="BTC-USD").click()
    expect(page.locator("#provenance")).to_contain_text("lstm-v3", timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = true")
    newer = forecast_records(
        "BTC-USD",
        dashboard.as_of,
        dashboard.last_price,
        version="lstm-v4",
        generated_at=datetime.now(UTC) + timedelta(seconds=5),
    )
    # As the prediction service does: cached and published (the stream's feed).
    cache_records(dashboard.redis, newer)
    publish_records(dashboard.server.settings, newer)
    expect(page.locator("#provenance")).to_contain_text("lstm-v4", timeout=LIVE_WAIT_MS)
    assert page.evaluate("window.__sameDocument") is True
    assert_clean(page)


def test_token_in_fragment_is_taken_and_cleared(page: Page, dashboard: Dashboard) -> None:
    r = httpx.post(
        f"{dashboard.base}/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET},
    )
    token = r.json()["access_token"]
    page.goto(f"{dashboard.url}#token={token}")
    expect(page.locator("#assets-table tbody tr")).to_have_count(2, timeout=WAIT_MS)
    assert token not in page.url
    assert page.evaluate("location.hash") == "#/assets"
    assert_clean(page)


def test_sign_out_revokes_the_token(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    token = page.evaluate("JSON.parse(sessionStorage.getItem('pricecast.session')).access")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{dashboard.base}/api/v1/assets", headers=headers).status_code == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("body")).to_have_attribute("data-signed-out", "true", timeout=WAIT_MS)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('pricecast.session')") is None
    answer = httpx.get(f"{dashboard.base}/api/v1/assets", headers=headers)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "ERR_AUTH_001"
    assert_clean(page)


def test_security_headers(dashboard: Dashboard) -> None:
    ui = httpx.get(dashboard.url)
    assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
    csp = ui.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "ws://127.0.0.1:" in csp
    assert ui.headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" in ui.headers  # the API's middleware still stamps it
    js = httpx.get(f"{dashboard.url}vendor/lightweight-charts.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    api = httpx.get(f"{dashboard.base}/health")
    assert "content-security-policy" not in api.headers  # the API's own headers: unchanged
    assert httpx.get(f"{dashboard.base}/ui", follow_redirects=False).status_code in (307, 308)
