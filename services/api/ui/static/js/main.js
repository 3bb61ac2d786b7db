// The entry module: it imports nothing statically, so it runs as soon as it arrives. First it
// starts the asset view's first reads (js/api.js takes those responses when it asks for the
// same paths with the same token; the paths follow js/data.js: bars 1h x 8760, forecasts 1h,
// horizons 1..24), then it loads the dashboard itself (js/app.js), whose modules are already
// on their way (modulepreload in index.html).
(() => {
  const match = /^#\/asset\/([^/?]+)/.exec(location.hash);
  let session = null;
  try {
    session = JSON.parse(sessionStorage.getItem("pricecast.session"));
  } catch {
    return;
  }
  if (!match || !session?.access || !(session.expiresAt > Date.now())) return;
  const symbol = encodeURIComponent(decodeURIComponent(match[1]).toUpperCase());
  const headers = { Authorization: `Bearer ${session.access}`, Accept: "application/json" };
  const paths = [`/api/v1/assets/${symbol}/bars?interval=1h&limit=8760`];
  for (let h = 1; h <= 24; h += 1) paths.push(`/api/v1/predictions/${symbol}?interval=1h&horizon=${h}`);
  const started = new Map();
  for (const path of paths) {
    const response = fetch(path, { headers, credentials: "omit", cache: "no-store" });
    response.catch(() => {}); // a failure is the real request's to report
    started.set(path, response);
  }
  window.pricecastPrefetch = { token: session.access, started };
})();

import("./app.js");
