// Assets: latest price, forecast per horizon, model, staleness and observed coverage.

import * as data from "../data.js";
import { clear, h, keepFocus } from "../dom.js";
import * as fmt from "../format.js";

const SHOWN_HORIZONS = { "1h": [1, 6, 12, 24], "1d": [1, 3, 7] };

export class AssetsView {
  constructor(root, { interval = "1h" } = {}) {
    this.root = root;
    this.interval = interval;
    this.rows = new Map();
    this.table = null;
  }

  channels() {
    return [...this.rows.keys()].map((s) => `predictions:${s}:${this.interval}`);
  }

  async mount() {
    clear(this.root);
    const group = h(
      "fieldset",
      { class: "segmented" },
      h("legend", {}, "Forecast interval"),
      ["1h", "1d"].map((iv) =>
        h(
          "label",
          {},
          h("input", {
            type: "radio",
            name: "assets-interval",
            value: iv,
            checked: iv === this.interval,
            onchange: () => this.switchInterval(iv),
          }),
          iv,
        ),
      ),
    );
    this.table = h(
      "table",
      { class: "assets", id: "assets-table" },
      h("caption", {}, "Assets and their latest forecasts"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Asset", "Latest price", "Forecast per horizon", "Model", "Staleness", "Observed coverage"].map(
            (t) => h("th", { scope: "col" }, t),
          ),
        ),
      ),
      h("tbody"),
    );
    this.root.append(
      h("section", { "aria-labelledby": "assets-title" }, h("h2", { id: "assets-title" }, "Assets"), group, h("div", { class: "table-wrap" }, this.table)),
    );
    await this.refresh();
  }

  async switchInterval(interval) {
    this.interval = interval;
    await this.refresh();
    this.onChannels?.();
  }

  async refresh() {
    const list = await data.assets();
    const body = this.table.tBodies[0];
    const rows = await Promise.all(list.map((a) => this.load(a)));
    keepFocus(body, () => {
      clear(body);
      this.rows.clear();
      for (const row of rows) {
        this.rows.set(row.symbol, row);
        body.append(this.render(row));
      }
    });
  }

  async load(asset) {
    const iv = this.interval;
    const [first, run, last, acc] = await Promise.all([
      data.latest(asset.symbol, iv, 1),
      data.latestRun(asset.symbol, iv),
      data.lastPrice(asset.symbol),
      data.accuracy(asset.symbol, iv),
    ]);
    const byHorizon = new Map(run.map((r) => [r.horizon, r]));
    if (first.ok) byHorizon.set(1, first.value);
    return {
      symbol: asset.symbol,
      name: asset.name,
      first,
      byHorizon,
      last,
      coverage: acc.ok ? data.coverageByLevel(acc.value) : [],
    };
  }

  onPredictions(records) {
    for (const record of records) {
      const row = this.rows.get(record.symbol);
      if (!row || record.interval !== this.interval) continue;
      row.byHorizon.set(record.horizon, record);
      if (record.horizon === 1) row.first = { ok: true, value: record };
    }
    for (const symbol of new Set(records.map((r) => r.symbol))) {
      const row = this.rows.get(symbol);
      const old = this.table.querySelector(`tr[data-symbol="${CSS.escape(symbol)}"]`);
      if (row && old) keepFocus(this.table, () => old.replaceWith(this.render(row)));
    }
  }

  render(row) {
    const link = h("a", { href: `#/asset/${encodeURIComponent(row.symbol)}` }, row.symbol);
    const cells = [h("th", { scope: "row" }, link, h("span", { class: "muted name" }, row.name))];
    cells.push(h("td", { class: "num" }, row.last ? fmt.price(row.last.close) : "–"));
    if (!row.first.ok) {
      const needs = fmt.needsMoreHistory(row.first.error);
      const code = row.first.error.code;
      const text = needs
        ? `Needs ${needs.more} more day${needs.more === 1 ? "" : "s"} of history`
        : code === "ERR_PRED_003"
          ? `No ${this.interval} forecast yet`
          : row.first.error.message;
      const cls = needs ? "needs-history" : code === "ERR_PRED_003" ? "muted" : "error";
      cells.push(h("td", { colspan: 4, class: cls }, text));
      return h("tr", { "data-symbol": row.symbol }, cells);
    }
    const rec = row.first.value;
    const horizons = SHOWN_HORIZONS[this.interval].filter((n) => row.byHorizon.has(n));
    cells.push(
      h(
        "td",
        {},
        h(
          "ul",
          { class: "horizons" },
          horizons.map((n) => {
            const r = row.byHorizon.get(n);
            return h("li", {}, h("span", { class: "muted" }, `+${n}${this.interval.slice(1)} `), fmt.price(r.predicted_price));
          }),
        ),
      ),
    );
    cells.push(h("td", {}, `${rec.model} `, h("span", { class: "muted" }, rec.model_version), rec.fallback_reason ? h("div", { class: "muted" }, `fallback: ${rec.fallback_reason}`) : null));
    const st = data.staleness(rec);
    const stale = st.stale ?? st.age > 3 * fmt.INTERVAL_SECONDS[rec.interval];
    const ageText = `as-of bar ${fmt.age(st.age)} old`;
    cells.push(h("td", { class: stale ? "stale" : "" }, stale ? `Stale: ${ageText}` : `Fresh: ${ageText}`));
    cells.push(
      h("td", {}, row.coverage.length ? row.coverage.map((c) => h("div", {}, h("span", { class: "muted" }, `${fmt.levelLabel(c.level)} `), fmt.pct(c.observed))) : h("span", { class: "muted" }, "not scored yet")),
    );
    return h("tr", { "data-symbol": row.symbol }, cells);
  }

  destroy() {}
}
