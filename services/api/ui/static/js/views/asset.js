// One asset: candles (1m/1h/1d) with the forecast fan, provenance, accuracy over time,
// calibration and model versions. "Needs N more days" (ERR_PRED_001) is a message, not an error.

import * as data from "../data.js";
import { byId, clear, h } from "../dom.js";
import * as fmt from "../format.js";
import { accuracySeries, accuracyTable, calibrationTable, forecastPanel, modelsTable } from "./panels.js";

const ALL = "all";

export class AssetView {
  constructor(root, symbol, charts) {
    this.root = root;
    this.symbol = symbol;
    this.chartsLoading = charts; // a promise of the chart module (js/chart.js)
    this.charts = null;
    this.barInterval = "1h";
    this.level = 0.8;
    this.records = [];
    this.error = null;
    this.chart = null;
    this.accChart = null;
  }

  get interval() {
    return data.forecastInterval(this.barInterval);
  }

  channels() {
    return [`predictions:${this.symbol}:${this.interval}`, `bars:${this.symbol}:${this.barInterval}`];
  }

  async mount() {
    clear(this.root);
    const s = this.symbol;
    this.root.append(
      h(
        "section",
        { "aria-labelledby": "asset-title", class: "asset" },
        h("p", {}, h("a", { href: "#/assets" }, "← All assets")),
        h("h2", { id: "asset-title" }, s),
        h(
          "div",
          { class: "controls" },
          h(
            "fieldset",
            { class: "segmented", id: "interval-control" },
            h("legend", {}, "Bar interval"),
            ["1m", "1h", "1d"].map((iv) =>
              h(
                "label",
                {},
                h("input", { type: "radio", name: "bar-interval", value: iv, checked: iv === this.barInterval, onchange: () => this.switchInterval(iv) }),
                iv,
              ),
            ),
          ),
          h(
            "label",
            { class: "level-control" },
            "Interval level ",
            h("select", { id: "level", onchange: (e) => this.switchLevel(e.target.value) }),
          ),
        ),
        h("p", { id: "history-message", class: "needs-history", role: "status", hidden: true }),
        h("div", { id: "chart", class: "chart", role: "img", "aria-label": `Candlestick chart of ${s} with its forecast bands` }),
        h("p", { id: "chart-summary", class: "sr-only", "aria-live": "polite" }),
        h("section", { "aria-labelledby": "forecast-title" }, h("h3", { id: "forecast-title" }, "Forecast"), h("div", { id: "forecast" })),
        h(
          "section",
          { "aria-labelledby": "accuracy-title" },
          h("h3", { id: "accuracy-title" }, "Accuracy over time"),
          h("div", { id: "accuracy-chart", class: "chart small", role: "img", "aria-label": `Daily MAPE and MASE of ${s}'s one-step forecasts` }),
          h("div", { id: "accuracy", class: "table-wrap" }),
          h("h3", { id: "calibration-title" }, "Calibration"),
          h("div", { id: "calibration", class: "table-wrap" }),
        ),
        h("section", { "aria-labelledby": "models-title" }, h("h3", { id: "models-title" }, "Model versions"), h("div", { id: "models", class: "table-wrap" })),
      ),
    );
    const fetched = this.fetchMain(); // at once: the chart library loads meanwhile
    try {
      this.charts = await this.chartsLoading;
    } catch {
      fetched.catch(() => {});
      const note = "The chart library is not built on this server (run make ui).";
      clear(byId("chart")).append(h("p", { class: "error", role: "alert" }, note));
      return;
    }
    if (this.destroyed) return;
    this.chart = new this.charts.PriceChart(byId("chart"));
    const main = await fetched;
    if (this.destroyed) return;
    this.showMain(main);
    performance.mark("pc:data-ready");
    await this.chart.drawn();
    if (this.destroyed) return;
    performance.mark("pc:chart-drawn");
    document.body.dataset.chart = "drawn";
    this.ready = true;
    this.loadSecondary(); // accuracy, calibration, models: after the chart, not before it
  }

  fetchMain() {
    return Promise.all([data.bars(this.symbol, this.barInterval), data.forecast(this.symbol, this.interval)]);
  }

  showMain([bars, fc]) {
    this.bars = bars.bars;
    this.applyForecast(fc);
    this.chart.setBars(this.bars);
    this.summarize();
  }

  applyForecast(fc) {
    this.records = fc.records;
    this.error = fc.error;
    const msg = byId("history-message");
    const needs = fmt.needsMoreHistory(fc.error);
    msg.hidden = !fc.error;
    const none = fc.error?.code === "ERR_PRED_003";
    msg.className = needs || none ? "needs-history" : "error";
    msg.textContent = needs
      ? `${this.symbol} ${needs.text}: forecasts start once it has enough.`
      : none
        ? `No ${this.interval} forecast for ${this.symbol} yet.`
        : fc.error
          ? fc.error.message
          : "";
    this.fillLevels();
    this.chart.setForecast(this.records, this.level === ALL ? null : this.level);
    const target = byId("forecast");
    clear(target).append(forecastPanel(this.records, this.level === ALL ? 0.8 : this.level));
  }

  // The levels offered: every record's (a record read from the database rather than the
  // cache may carry its one interval only); the reader's choice stays while it is offered.
  fillLevels() {
    const select = byId("level");
    const levels = [...new Set(this.records.flatMap((r) => data.bandsOf(r).map((b) => b.level)))];
    levels.sort((a, b) => a - b);
    this.levels = levels;
    if (this.level !== ALL && levels.length && !levels.includes(this.level)) {
      this.level = levels.includes(0.8) ? 0.8 : levels[levels.length - 1];
    }
    clear(select).append(
      h("option", { value: ALL, selected: this.level === ALL }, "All levels (fan)"),
      ...levels.map((l) => h("option", { value: String(l), selected: l === this.level }, fmt.levelLabel(l))),
    );
  }

  async loadSecondary() {
    const s = this.symbol;
    const iv = this.interval;
    const [w7, w30, w90, hist, mods] = await Promise.all([
      data.accuracy(s, iv, 7),
      data.accuracy(s, iv, 30),
      data.accuracy(s, iv, 90),
      data.history(s, iv),
      data.models(s),
    ]);
    if (this.destroyed || iv !== this.interval) return; // left or switched meanwhile
    const windows = [7, 30, 90].map((days, i) => ({ days, acc: [w7, w30, w90][i].ok ? [w7, w30, w90][i].value : null }));
    clear(byId("accuracy")).append(accuracyTable(windows));
    const items = hist.ok ? hist.value.items : [];
    const fromApi = w30.ok ? data.coverageByLevel(w30.value) : [];
    clear(byId("calibration")).append(calibrationTable(fromApi, items, this.levels.length ? this.levels : [0.8]));
    clear(byId("models")).append(
      mods.ok ? modelsTable(mods.value.items) : h("p", { class: "muted" }, refused(mods.error, "models:read")),
    );
    const series = accuracySeries(items);
    this.accChart?.remove();
    this.accChart = new this.charts.LineChart(byId("accuracy-chart"), [
      { title: "MAPE %", color: "#2962ff", points: series.mape, scale: "right" },
      { title: "MASE", color: "#e07b00", points: series.mase, scale: "left" },
    ]);
  }

  summarize() {
    const last = this.bars[this.bars.length - 1];
    const rec = this.records[0];
    const text = [
      `${this.bars.length} ${this.barInterval} bars`,
      last ? `last close ${fmt.price(last.close)} at ${fmt.time(last.bucket)}` : "no bars",
      rec ? `next forecast ${fmt.price(rec.predicted_price)} for ${fmt.time(rec.target_time)} by ${rec.model}` : "",
    ];
    byId("chart-summary").textContent = text.filter(Boolean).join("; ");
    document.body.dataset.lastBar = last ? last.bucket : "";
  }

  async switchInterval(iv) {
    const before = this.interval;
    this.barInterval = iv;
    const [bars, fc] = await Promise.all([
      data.bars(this.symbol, iv),
      before === this.interval ? null : data.forecast(this.symbol, this.interval),
    ]);
    if (this.destroyed || iv !== this.barInterval) return; // a later switch wins
    this.bars = bars.bars;
    this.chart.setBars(this.bars);
    if (fc) this.applyForecast(fc);
    this.summarize();
    document.body.dataset.barInterval = iv;
    this.onChannels?.();
    if (fc) this.loadSecondary();
  }

  switchLevel(value) {
    this.level = value === ALL ? ALL : Number(value);
    this.chart.setLevel(this.level === ALL ? null : this.level);
    clear(byId("forecast")).append(forecastPanel(this.records, this.level === ALL ? 0.8 : this.level));
  }

  // Polling (while the stream is not live): new bars, and the forecast when a newer one exists.
  async refresh() {
    if (!this.ready) return;
    const iv = this.barInterval;
    const [recent, first] = await Promise.all([data.bars(this.symbol, iv, 3), data.latest(this.symbol, this.interval, 1)]);
    if (this.destroyed || iv !== this.barInterval) return;
    for (const bar of recent.bars) this.chart.updateBar(bar);
    if (recent.bars.length) this.bars = mergeBars(this.bars, recent.bars);
    const known = this.records[0];
    const changed = first.ok ? !known || first.value.generated_at !== known.generated_at : !this.error || first.error.code !== this.error.code;
    if (changed) {
      const fc = await data.forecast(this.symbol, this.interval);
      if (this.destroyed || iv !== this.barInterval) return;
      this.applyForecast(fc);
    }
    this.summarize();
  }

  // Records from the stream (a snapshot, or one new forecast): the newest run wins.
  onPredictions(records) {
    const mine = records.filter((r) => r.symbol === this.symbol && r.interval === this.interval);
    if (!mine.length || !this.ready) return;
    const byHorizon = new Map(this.records.map((r) => [r.horizon, r]));
    for (const r of mine) {
      const known = byHorizon.get(r.horizon);
      if (!known || Date.parse(r.generated_at) >= Date.parse(known.generated_at)) byHorizon.set(r.horizon, r);
    }
    const newest = Math.max(...[...byHorizon.values()].map((r) => Date.parse(r.as_of)));
    const run = [...byHorizon.values()].filter((r) => Date.parse(r.as_of) === newest);
    this.applyForecast({ records: run.sort((a, b) => a.horizon - b.horizon), error: null });
    this.summarize();
  }

  onBar(channel, bar) {
    if (channel !== `bars:${this.symbol}:${this.barInterval}`) return;
    this.chart.updateBar(bar);
    this.bars = mergeBars(this.bars, [bar]);
    this.summarize();
  }

  destroy() {
    this.destroyed = true;
    this.chart?.remove();
    this.accChart?.remove();
    this.chart = null;
    this.accChart = null;
  }
}

function refused(error, scope) {
  return error.code === "ERR_AUTH_002" ? `Not shown: this sign-in lacks the ${scope} scope.` : error.message;
}

function mergeBars(bars, recent) {
  const out = bars.slice();
  for (const bar of recent) {
    const last = out[out.length - 1];
    if (last && last.bucket === bar.bucket) out[out.length - 1] = bar;
    else if (!last || Date.parse(bar.bucket) > Date.parse(last.bucket)) out.push(bar);
  }
  return out;
}
