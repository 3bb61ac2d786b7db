// The signed-in session: access and refresh tokens in sessionStorage (never localStorage), a
// token taken from the URL fragment (/ui/#token=...; the fragment never reaches a server and is
// cleared at once), refresh rotation before the access token expires, and sign-out (revoke).

const KEY = "pricecast.session";
const REFRESH_AT = 0.8; // of the access token's lifetime
const listeners = new Set();
let current = load();
let refreshTimer = null;
let refreshing = null;

function load() {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function save(session) {
  current = session;
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
  schedule();
  for (const fn of listeners) fn(session);
}

function jwtExpiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

function fromTokenResponse(body) {
  const now = Date.now();
  return {
    access: body.access_token,
    refresh: body.refresh_token ?? null,
    expiresAt: jwtExpiry(body.access_token) ?? now + body.expires_in * 1000,
    issuedAt: now,
    scope: body.scope ?? "",
  };
}

function schedule() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (!current?.refresh) return;
  const life = current.expiresAt - (current.issuedAt ?? Date.now());
  const due = (current.issuedAt ?? Date.now()) + life * REFRESH_AT - Date.now();
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(1000, due));
}

async function postForm(path, fields, token) {
  const headers = { "Content-Type": "application/x-www-form-urlencoded" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method: "POST",
    headers,
    body: new URLSearchParams(fields).toString(),
    credentials: "omit",
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error ?? { code: `HTTP_${response.status}`, message: response.statusText };
    throw Object.assign(new Error(error.message), { code: error.code, status: response.status });
  }
  return body;
}

export function session() {
  return current;
}

export function accessToken() {
  return current?.access ?? null;
}

export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// `/ui/#token=...`: keep the token, clear the fragment (the address bar and history forget it).
export function takeFragmentToken() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return false;
  const token = decodeURIComponent(match[1]);
  history.replaceState(null, "", `${location.pathname}${location.search}#/assets`);
  const expiresAt = jwtExpiry(token);
  if (!expiresAt || expiresAt <= Date.now()) return false;
  save({ access: token, refresh: null, expiresAt, issuedAt: Date.now(), scope: "" });
  return true;
}

export async function signIn(clientId, clientSecret) {
  const body = await postForm("/api/v1/auth/token", {
    grant_type: "client_credentials",
    client_id: clientId,
    client_secret: clientSecret,
  });
  save(fromTokenResponse(body));
}

// One rotation at a time: concurrent callers share it (a second use of the same refresh
// token would revoke the whole family).
export function refresh() {
  if (refreshing) return refreshing;
  const token = current?.refresh;
  if (!token) return Promise.reject(new Error("no refresh token"));
  refreshing = postForm("/api/v1/auth/refresh", { grant_type: "refresh_token", refresh_token: token })
    .then((body) => save(fromTokenResponse(body)))
    .catch((error) => {
      if (error.status === 401) save(null);
      throw error;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

export async function signOut() {
  const was = current;
  save(null);
  if (!was?.access) return;
  const fields = was.refresh ? { refresh_token: was.refresh } : {};
  await postForm("/api/v1/auth/revoke", fields, was.access).catch(() => {});
}

export function expire() {
  save(null);
}

schedule();
