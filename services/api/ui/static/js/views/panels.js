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

// A table: caption, column headers, body rows; without rows, `empty` (when given) is the text
// of one muted row across every column.
function dataTable(id, caption, columns, rows, empty) {
  const body = rows.length || empty == null ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty));
  return h(
    "table",
    { id },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, body),
  );
}

function numCell(value) {
  return h("td", { class: "num" }, value);
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

export function accuracyTable(windows) {
  return dataTable(
    "accuracy-table",
    "Accuracy of served forecasts by window",
    ["Window", "Scored", "MAPE", "MASE", "80% coverage"],
    windows.map(({ days, acc }) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, `${days} days`),
        numCell(acc ? acc.overall.evaluated : "–"),
        numCell(acc?.overall.mape != null ? `${fmt.num(acc.overall.mape, 2)}%` : "–"),
        numCell(fmt.num(acc?.overall.mase)),
        numCell(fmt.pct(acc?.overall.coverage)),
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
  return dataTable(
    "calibration-table",
    "Calibration: nominal against observed interval coverage",
    ["Level (nominal)", "Observed coverage", "Gap", "Scored", "Interval score"],
    rows.map((r) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, fmt.levelLabel(r.level)),
        numCell(fmt.pct(r.observed)),
        numCell(r.observed == null ? "–" : `${((r.observed - r.level) * 100).toFixed(1)} pts`),
        numCell(r.n ?? "–"),
        numCell(r.score == null ? "–" : fmt.price(r.score)),
      ),
    ),
    "No scored forecasts yet.",
  );
}

export function modelsTable(versions) {
  const metricText = (m) =>
    Object.entries(m ?? {})
      .filter(([, v]) => typeof v === "number" || typeof v === "string")
      .slice(0, 6)
      .map(([k, v]) => `${k} ${typeof v === "number" ? fmt.num(v) : v}`)
      .join(", ") || "–";
  return dataTable(
    "models-table",
    "Model versions",
    ["Model", "Interval", "Version", "Status", "Promoted", "Retired", "Validation metrics"],
    versions.map((v) =>
      h(
        "tr",
        { class: `status-${v.status}` },
        h("th", { scope: "row" }, v.model),
        h("td", {}, v.interval),
        numCell(`v${v.version}`),
        h("td", {}, h("span", { class: `pill ${v.status}` }, v.status)),
        h("td", {}, v.promoted_at ? fmt.time(v.promoted_at) : "–"),
        h("td", {}, v.retired_at ? fmt.time(v.retired_at) : "–"),
        h("td", {}, metricText(v.metrics)),
      ),
    ),
    "No model versions for this asset.",
  );
}
