// Live updates through the WebSocket stream /api/v1/stream: the token goes in the first
// message (never in the URL) and again whenever it is renewed; reconnects with exponential
// backoff and jitter. While the stream is not delivering, the dashboard polls instead.

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;

export class LiveStream {
  constructor({ token, refresh, onMessage, onState }) {
    this.token = token;
    this.refresh = refresh;
    this.onMessage = onMessage;
    this.onState = onState;
    this.channels = new Set();
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.state = "offline";
    this.opened = 0; // sockets opened so far (a renewal in-band needs no new one)
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "signed out");
    this.ws = null;
    this.setState("offline");
  }

  get live() {
    return this.state === "live";
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  // The channels the current view wants; the stream follows.
  want(channels) {
    const next = new Set(channels);
    const gone = [...this.channels].filter((c) => !next.has(c));
    const added = [...next].filter((c) => !this.channels.has(c));
    this.channels = next;
    if (this.ws?.readyState === WebSocket.OPEN && this.authed) {
      if (gone.length) this.send({ type: "unsubscribe", channels: gone });
      if (added.length) this.send({ type: "subscribe", channels: added });
    }
  }

  // A renewed access token goes in-band: the same auth message again.
  renew() {
    if (this.ws?.readyState === WebSocket.OPEN) this.send({ type: "auth", token: this.token() });
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  connect() {
    if (this.stopped) return;
    const token = this.token();
    if (!token) return;
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/v1/stream`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.authed = false;
    this.setState("connecting");
    // The server waits 5 s for the auth message: it goes out as soon as the socket opens.
    ws.addEventListener("open", () => {
      this.opened += 1;
      document.body.dataset.streamOpened = String(this.opened);
      this.send({ type: "auth", token });
      this.authed = true;
      if (this.channels.size) this.send({ type: "subscribe", channels: [...this.channels] });
    });
    ws.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "ping") return;
      if (message.type === "error") {
        this.onMessage(message);
        return;
      }
      this.attempt = 0;
      this.setState("live");
      this.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.setState("polling");
      if (event.code === 4401) {
        // Token missing, invalid or expired: renew it, then reconnect.
        this.refresh().then(
          () => this.retry(),
          () => this.retry(),
        );
        return;
      }
      this.retry();
    });
  }

  retry() {
    if (this.stopped) return;
    this.setState("polling");
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
