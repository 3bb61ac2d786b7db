// The asset view's panels: forecast provenance, accuracy, calibration and model versions.

import { bandsOf } from "../data.js";
import { h } from "../dom.js";
import * as fmt from "../format.js";

export function forecastPanel(records, level) {
  if (!records.length) return h("p", { class: "muted" }, "No forecast yet.");
  const first = records[0];
  const show = (rec) => {
    const bands = bandsOf(rec);
    const band = bands.find((b) => b.level === level) ?? bands[bands.length - 1];
    return band;
  };
  return h(
    "div",
    {},
    h(
      "dl",
      { class: "facts", id: "provenance" },
      fact("As of", fmt.time(first.as_of)),
      fact("Model", first.model),
      fact("Version", first.model_version),
      fact("Fallback reason", first.fallback_reason ?? "none"),
      fact("Generated", fmt.time(first.generated_at)),
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "forecast-table" },
        h("caption", {}, `Forecast path with the ${fmt.levelLabel(show(first).level)} interval`),
        h(
          "thead",
          {},
          h("tr", {}, ["Horizon", "Target time", "Predicted", "Lower", "Upper", "Level"].map((t) => h("th", { scope: "col" }, t))),
        ),
        h(
          "tbody",
          {},
          records.map((rec) => {
            const band = show(rec);
            return h(
              "tr",
              {},
              h("th", { scope: "row" }, `+${rec.horizon}`),
              h("td", {}, fmt.time(rec.target_time)),
              h("td", { class: "num" }, fmt.price(rec.predicted_price)),
              h("td", { class: "num" }, fmt.price(band.lower)),
              h("td", { class: "num" }, fmt.price(band.upper)),
              h("td", { class: "num" }, fmt.levelLabel(band.level)),
            );
          }),
        ),
      ),
    ),
  );
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

export function accuracyTable(windows) {
  return h(
    "table",
    { id: "accuracy-table" },
    h("caption", {}, "Accuracy of served forecasts by window"),
    h("thead", {}, h("tr", {}, ["Window", "Scored", "MAPE", "MASE", "80% coverage"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      windows.map(({ days, acc }) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, `${days} days`),
          h("td", { class: "num" }, acc ? acc.overall.evaluated : "–"),
          h("td", { class: "num" }, acc?.overall.mape != null ? `${fmt.num(acc.overall.mape, 2)}%` : "–"),
          h("td", { class: "num" }, fmt.num(acc?.overall.mase)),
          h("td", { class: "num" }, fmt.pct(acc?.overall.coverage)),
        ),
      ),
    ),
  );
}

// MAPE and MASE per day of target, from the scored history (horizon 1).
export function accuracySeries(items) {
  const days = new Map();
  for (const it of items) {
    if (it.actual_price == null || it.abs_error == null) continue;
    const day = Math.floor(Date.parse(it.target_time) / 86400000) * 86400;
    const d = days.get(day) ?? { ape: 0, n: 0, err: 0, naive: 0, nn: 0 };
    d.ape += (Math.abs(it.abs_error) / Math.abs(it.actual_price)) * 100;
    d.n += 1;
    if (it.naive_abs_error != null) {
      d.err += it.abs_error;
      d.naive += it.naive_abs_error;
      d.nn += 1;
    }
    days.set(day, d);
  }
  const sorted = [...days.entries()].sort((a, b) => a[0] - b[0]);
  return {
    mape: sorted.map(([time, d]) => ({ time, value: d.ape / d.n })),
    mase: sorted.filter(([, d]) => d.nn && d.naive > 0).map(([time, d]) => ({ time, value: d.err / d.naive })),
  };
}

// Nominal against observed coverage: the API's per-level rows, else counted from the scored
// history's intervals (the 80% figure alone when neither has more).
export function calibrationTable(fromApi, items, levels) {
  let rows = fromApi;
  if (rows.length < levels.length) {
    const counted = levels.map((level) => {
      let n = 0;
      let inside = 0;
      for (const it of items) {
        if (it.actual_price == null) continue;
        const band = bandsOf(it).find((b) => b.level === level);
        if (!band || (band.level !== Number(it.confidence_level ?? 0.8) && !it.intervals?.length)) continue;
        n += 1;
        if (it.actual_price >= band.lower && it.actual_price <= band.upper) inside += 1;
      }
      return { level, observed: n ? inside / n : null, n };
    });
    if (counted.filter((r) => r.n).length > rows.length) rows = counted.filter((r) => r.n);
  }
  const cell = (v) => h("td", { class: "num" }, v);
  return h(
    "table",
    { id: "calibration-table" },
    h("caption", {}, "Calibration: nominal against observed interval coverage"),
    h("thead", {}, h("tr", {}, ["Level (nominal)", "Observed coverage", "Gap", "Scored", "Interval score"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.length
        ? rows.map((r) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, fmt.levelLabel(r.level)),
              cell(fmt.pct(r.observed)),
              cell(r.observed == null ? "–" : `${((r.observed - r.level) * 100).toFixed(1)} pts`),
              cell(r.n ?? "–"),
              cell(r.score == null ? "–" : fmt.price(r.score)),
            ),
          )
        : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No scored forecasts yet.")),
    ),
  );
}

export function modelsTable(versions) {
  const metricText = (m) =>
    Object.entries(m ?? {})
      .filter(([, v]) => typeof v === "number" || typeof v === "string")
      .slice(0, 6)
      .map(([k, v]) => `${k} ${typeof v === "number" ? fmt.num(v) : v}`)
      .join(", ") || "–";
  return h(
    "table",
    { id: "models-table" },
    h("caption", {}, "Model versions"),
    h(
      "thead",
      {},
      h("tr", {}, ["Model", "Interval", "Version", "Status", "Promoted", "Retired", "Validation metrics"].map((t) => h("th", { scope: "col" }, t))),
    ),
    h(
      "tbody",
      {},
      versions.length
        ? versions.map((v) =>
            h(
              "tr",
              { class: `status-${v.status}` },
              h("th", { scope: "row" }, v.model),
              h("td", {}, v.interval),
              h("td", { class: "num" }, `v${v.version}`),
              h("td", {}, h("span", { class: `pill ${v.status}` }, v.status)),
              h("td", {}, v.promoted_at ? fmt.time(v.promoted_at) : "–"),
              h("td", {}, v.retired_at ? fmt.time(v.retired_at) : "–"),
              h("td", {}, metricText(v.metrics)),
            ),
          )
        : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No model versions for this asset.")),
    ),
  );
}
