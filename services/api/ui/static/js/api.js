// GETs against the API with the session's token; one refresh-and-retry on ERR_AUTH_001.

import { accessToken, expire, refresh, session } from "./session.js";

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error?.code ?? `HTTP_${status}`;
    this.details = error?.details ?? {};
  }
}

// A read js/main.js already started for this path and token, taken once.
function prefetched(path, token) {
  const early = window.pricecastPrefetch;
  if (!early || early.token !== token || !early.started.has(path)) return null;
  const response = early.started.get(path);
  early.started.delete(path);
  return response;
}

async function once(path) {
  const token = accessToken();
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const early = prefetched(path, token);
  const response = (early && (await early.catch(() => null))) || (await fetch(path, { headers, credentials: "omit", cache: "no-store" }));
  if (response.ok) return response.json();
  const body = await response.json().catch(() => ({}));
  throw new ApiError(response.status, body.error);
}

export async function get(path) {
  try {
    return await once(path);
  } catch (error) {
    if (!(error instanceof ApiError) || error.code !== "ERR_AUTH_001") throw error;
    if (!session()?.refresh) {
      expire();
      throw error;
    }
    await refresh();
    return once(path);
  }
}

// A GET whose failure is data (ERR_PRED_001 and friends), not an exception.
export async function attempt(path) {
  try {
    return { ok: true, value: await get(path) };
  } catch (error) {
    if (error instanceof ApiError) return { ok: false, error };
    throw error;
  }
}

export async function health() {
  const response = await fetch("/health/detailed", { cache: "no-store", credentials: "omit" });
  return response.json();
}

export const enc = encodeURIComponent;
