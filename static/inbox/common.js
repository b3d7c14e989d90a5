/*
 * Agent workspace helpers shared by the inbox and the conversation page: plain ES2020, no
 * build step. Everything from the server or the user goes into the page as text.
 */
"use strict";

window.AgentCommon = (() => {
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const PING_INTERVAL_MS = 25000;
  const FINAL_CLOSE_CODES = new Set([4401, 4403]);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function asText(value) {
    return typeof value === "string" ? value : "";
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /** "just now", "4 min", "2 h 5 min", "3 d" since an ISO time. */
  function formatWaiting(iso, now = Date.now()) {
    const then = new Date(iso).getTime();
    if (Number.isNaN(then)) return "";
    const seconds = Math.max(0, Math.floor((now - then) / 1000));
    if (seconds < 60) return "just now";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return `${hours} h ${minutes % 60} min`;
    return `${Math.floor(hours / 24)} d`;
  }

  /**
   * One websocket at a time to the agents' endpoint, reconnecting with backoff. `onOpen` runs
   * after every (re)connect (list or watch again there); `onFrame` gets each parsed frame.
   */
  function connect({ path, statusNode, onOpen, onFrame }) {
    let socket = null;
    let attempt = 0;
    let pingTimer = null;
    let stopped = false;

    function setStatus(state, text) {
      if (!statusNode) return;
      statusNode.dataset.state = state;
      statusNode.textContent = text;
    }

    function open() {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(`${scheme}//${window.location.host}${path}`);
      setStatus("connecting", "Connecting…");
      socket.addEventListener("open", () => {
        attempt = 0;
        setStatus("connected", "Live");
        pingTimer = setInterval(() => send({ type: "ping" }), PING_INTERVAL_MS);
        onOpen();
      });
      socket.addEventListener("message", (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (_error) {
          return;
        }
        if (frame && typeof frame.type === "string") onFrame(frame);
      });
      socket.addEventListener("close", (event) => {
        clearInterval(pingTimer);
        if (FINAL_CLOSE_CODES.has(event.code)) {
          stopped = true;
          setStatus("refused", event.code === 4401 ? "Please log in again." : "You don't have access to the inbox.");
          return;
        }
        if (stopped) return;
        setStatus("reconnecting", "Reconnecting…");
        const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** attempt++);
        setTimeout(open, Math.round(delay * (1 + Math.random() * 0.5)));
      });
    }

    function send(frame) {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(frame));
        return true;
      }
      return false;
    }

    open();
    return { send };
  }

  /** POST JSON to an endpoint; resolves to {ok, status, data}. */
  async function post(url, body, csrfToken) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify(body || {}),
      });
    } catch (_error) {
      return { ok: false, status: 0, data: { error: "The server can't be reached. Try again." } };
    }
    let data = {};
    try {
      data = await response.json();
    } catch (_error) {
      data = { error: `The server answered ${response.status}.` };
    }
    return { ok: response.ok, status: response.status, data };
  }

  return { el, asText, formatTime, formatWaiting, connect, post };
})();
