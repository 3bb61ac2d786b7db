// Formatting of prices, times, ages and the API's errors for people.

const priceFormats = new Map();

export function price(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const digits = Math.abs(value) >= 1000 ? 2 : Math.abs(value) >= 1 ? 4 : 6;
  if (!priceFormats.has(digits)) {
    priceFormats.set(
      digits,
      new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits }),
    );
  }
  return priceFormats.get(digits).format(value);
}

export function pct(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return `${(value * 100).toFixed(digits)}%`;
}

export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

export function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function age(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

export function secondsSince(iso) {
  return (Date.now() - new Date(iso).getTime()) / 1000;
}

export const INTERVAL_SECONDS = { "1m": 60, "1h": 3600, "1d": 86400 };

// ERR_PRED_001 is not a failure: the asset needs more history. Returns the sentence, or null.
export function needsMoreHistory(error) {
  if (!error || error.code !== "ERR_PRED_001") return null;
  const required = Number(error.details?.required_days ?? 0);
  const available = Number(error.details?.available_days ?? 0);
  const more = Math.max(1, required - available);
  return {
    more,
    text: `needs ${more} more day${more === 1 ? "" : "s"} of history (has ${available} of ${required})`,
  };
}

export function levelLabel(level) {
  return `${Math.round(level * 100)}%`;
}
