// The dashboard's reads, one function per thing shown; failures that are data come back as
// {ok: false, error} (see api.attempt).

import { attempt, enc, get } from "./api.js";

export const HORIZONS = { "1h": 24, "1d": 7 }; // the API's defaults; a smaller limit answers 422
export const BAR_LIMITS = { "1m": 1440, "1h": 8760, "1d": 3650 };

export const forecastInterval = (barInterval) => (barInterval === "1d" ? "1d" : "1h");

// The bands of a record (a fan chart's): every offered level (`intervals`), or its one interval.
export function bandsOf(record) {
  if (Array.isArray(record.intervals) && record.intervals.length) {
    return record.intervals.map((b) => ({ level: Number(b.level), lower: b.lower, upper: b.upper }));
  }
  return [{ level: Number(record.confidence_level ?? 0.8), lower: record.lower_bound, upper: record.upper_bound }];
}

export async function assets() {
  const page = await get("/api/v1/assets?limit=200&active=true");
  return page.items;
}

export function latest(symbol, interval, horizon = 1) {
  return attempt(`/api/v1/predictions/${enc(symbol)}?interval=${interval}&horizon=${horizon}`);
}

// The latest forecast for every horizon (the cached path): ERR_PRED_001 and the like come
// back as `error` (from horizon 1); horizons the server does not offer are left out.
export async function forecast(symbol, interval) {
  // Every horizon at once (one round trip, not two): horizon 1's error is the answer's.
  const all = await Promise.all(Array.from({ length: HORIZONS[interval] }, (_, i) => latest(symbol, interval, i + 1)));
  const [first] = all;
  if (!first.ok) return { records: [], error: first.error };
  const asOf = first.value.as_of;
  const records = all.filter((r) => r.ok).map((r) => r.value);
  return { records: records.filter((r) => r.as_of === asOf), error: null };
}

// The newest forecast run's horizons from the stored history (one request per asset).
export async function latestRun(symbol, interval) {
  const result = await attempt(
    `/api/v1/predictions/${enc(symbol)}/history?interval=${interval}&limit=${HORIZONS[interval]}`,
  );
  if (!result.ok || !result.value.items.length) return [];
  const asOf = result.value.items[0].as_of;
  return result.value.items.filter((r) => r.as_of === asOf);
}

export function bars(symbol, interval, limit = BAR_LIMITS[interval]) {
  return get(`/api/v1/assets/${enc(symbol)}/bars?interval=${interval}&limit=${limit}`);
}

export async function lastPrice(symbol) {
  for (const interval of ["1m", "1h", "1d"]) {
    const result = await attempt(`/api/v1/assets/${enc(symbol)}/bars?interval=${interval}&limit=1`);
    if (result.ok && result.value.bars.length) return result.value.bars[0];
  }
  return null;
}

export function accuracy(symbol, interval, windowDays = 30) {
  return attempt(
    `/api/v1/predictions/${enc(symbol)}/accuracy?interval=${interval}&window_days=${windowDays}`,
  );
}

export function history(symbol, interval, limit = 1000) {
  return attempt(
    `/api/v1/predictions/${enc(symbol)}/history?interval=${interval}&horizon=1&limit=${limit}`,
  );
}

export function models(symbol) {
  return attempt(`/api/v1/models?symbol=${enc(symbol)}&limit=50`);
}

// Observed coverage per level: the accuracy answer's calibration rows (`by_level`) when the
// API gives them, else the one 80% figure.
export function coverageByLevel(acc) {
  const overall = acc?.overall ?? {};
  if (Array.isArray(overall.by_level) && overall.by_level.length) {
    return overall.by_level
      .map((r) => ({ level: Number(r.level), observed: r.coverage, n: r.evaluated, score: r.interval_score }))
      .sort((a, b) => a.level - b.level);
  }
  if (overall.coverage !== null && overall.coverage !== undefined) {
    return [{ level: 0.8, observed: overall.coverage, n: overall.evaluated }];
  }
  return [];
}

// A record's staleness: the server's `stale` (and `as_of_age_s`) when it sends them, else
// the age of its as-of bar (null: the server does not say).
export function staleness(record) {
  const barEnd = Date.parse(record.as_of) / 1000 + (record.interval === "1d" ? 86400 : 3600);
  const age = typeof record.as_of_age_s === "number" ? record.as_of_age_s : Date.now() / 1000 - barEnd;
  if (!("stale" in record)) return { stale: null, age };
  return { stale: Boolean(record.stale), age };
}
