// The dashboard (loaded by js/main.js): session, routes (#/assets, #/asset/SYMBOL), the
// health banner, live updates from the stream and polling while the stream is not live.

import { health } from "./api.js";
import { byId, clear, h } from "./dom.js";
import { LiveStream } from "./live.js";
import * as session from "./session.js";
import { AssetView } from "./views/asset.js";
import { AssetsView } from "./views/assets.js";

const POLL_MS = 5000;
const LIVE_POLL_EVERY = 6; // while the stream is live, still poll every 6th round (a safety net)
const HEALTH_MS = 30000;
let view = null;
let charts = null;
let pollTimer = null;
let healthTimer = null;
let polling = false;
let rounds = 0;

const live = new LiveStream({
  token: session.accessToken,
  refresh: () => session.refresh(),
  onMessage: dispatch,
  onState: showLiveState,
});

// The words change only when what the reader gets changes: reconnect attempts while polling
// stay "Polling" (a live region that flapped would keep a screen reader talking).
function showLiveState(state) {
  const labels = { live: "Live", connecting: "Polling", polling: "Polling", offline: "Offline" };
  const el = byId("live-state");
  if (el.textContent !== labels[state]) el.textContent = labels[state] ?? state;
  el.dataset.state = state;
  document.body.dataset.live = state;
}

function dispatch(message) {
  if (!view) return;
  const { type, channel, data } = message;
  if (!data || !channel) return;
  if (type === "prediction") view.onPredictions?.([data]);
  else if (type === "bar") view.onBar?.(channel, data);
  else if (type === "snapshot" && channel.startsWith("predictions:")) {
    view.onPredictions?.(Array.isArray(data) ? data : data.predictions ?? []);
  } else if (type === "snapshot" && channel.startsWith("bars:")) {
    (data.bars ?? []).forEach((b) => view.onBar?.(channel, b));
  }
}

async function chartsModule() {
  if (!charts) charts = await import("./chart.js");
  return charts;
}

async function route() {
  view?.destroy();
  view = null;
  delete document.body.dataset.chart; // set again once this view's chart is painted
  const root = byId("view");
  if (!session.accessToken()) {
    clear(root);
    return;
  }
  const match = /^#\/asset\/([^/?]+)/.exec(location.hash);
  try {
    if (match) {
      // The chart library loads while the data is fetched (see AssetView.mount).
      view = new AssetView(root, decodeURIComponent(match[1]).toUpperCase(), chartsModule());
    } else {
      view = new AssetsView(root);
    }
    view.onChannels = () => live.want(view.channels());
    await view.mount();
    live.want(view.channels());
    byId("main").focus({ preventScroll: true });
  } catch (error) {
    clear(root).append(h("p", { class: "error", role: "alert" }, `Could not load: ${error.message}`));
  }
}

async function poll() {
  rounds += 1;
  if (!view || polling || document.hidden) return;
  if (live.live && rounds % LIVE_POLL_EVERY !== 0) return;
  polling = true;
  try {
    await view.refresh();
    document.body.dataset.polled = String(Date.now());
  } catch {
    // the next round tries again
  } finally {
    polling = false;
  }
}

async function checkHealth() {
  const banner = byId("banner");
  try {
    const report = await health();
    const problems = [];
    if (report.status && report.status !== "healthy") problems.push(`API is ${report.status}`);
    for (const [name, check] of Object.entries(report.checks ?? {})) {
      const status = check?.status;
      if (status && !["healthy", "ok", "pass"].includes(status)) {
        problems.push(`${name}: ${check.detail ?? status}`);
      }
    }
    banner.hidden = problems.length === 0;
    banner.textContent = problems.length ? `Data may be degraded or stale. ${problems.join("; ")}.` : "";
  } catch {
    banner.hidden = false;
    banner.textContent = "The API is not answering its health check.";
  }
}

function showSignedIn(signedIn) {
  byId("sign-in").hidden = signedIn;
  byId("sign-out").hidden = !signedIn;
  byId("boot-message").hidden = true;
  clearInterval(pollTimer);
  clearInterval(healthTimer);
  if (signedIn) {
    pollTimer = setInterval(poll, POLL_MS);
    healthTimer = setInterval(checkHealth, HEALTH_MS);
    setTimeout(checkHealth, 1500); // after the first view's own reads: it checks every dependency
    live.start();
  } else {
    live.stop();
    clear(byId("view"));
    view?.destroy();
    view = null;
    byId("client-id").focus();
  }
}

function boot() {
  session.takeFragmentToken();
  let signedIn = Boolean(session.accessToken());
  session.onChange((s) => {
    const now = Boolean(s?.access);
    if (now && signedIn) live.renew(); // rotated: renew the stream's token in-band
    if (now !== signedIn) {
      signedIn = now;
      showSignedIn(now);
      if (now) route();
    }
  });
  byId("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = byId("sign-in-error");
    error.textContent = "";
    const button = byId("sign-in-button");
    button.disabled = true;
    try {
      await session.signIn(byId("client-id").value.trim(), byId("client-secret").value);
      byId("client-secret").value = "";
    } catch (e) {
      error.textContent = e.code === "ERR_AUTH_001" ? "Unknown client or wrong secret." : e.message;
    } finally {
      button.disabled = false;
    }
  });
  byId("sign-out").addEventListener("click", async () => {
    await session.signOut();
    document.body.dataset.signedOut = "true";
  });
  window.addEventListener("hashchange", () => {
    const wasSignedIn = signedIn;
    if (session.takeFragmentToken() && !wasSignedIn) return; // onChange routes
    route();
  });
  showSignedIn(signedIn);
  if (signedIn) route();
}

boot();
