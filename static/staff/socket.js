/*
 * The staff pages' websocket (agent inbox, prompt studio): one socket at a time to `path`,
 * reconnecting with jittered backoff, pinging to stay open, and stopping for good on 4401/4403
 * (logged out, not allowed). Plain ES2020, no build step; text from the server goes into the
 * page as text only (`el`).
 */
"use strict";

window.StaffSocket = (() => {
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const PING_INTERVAL_MS = 25000;
  const FINAL_CLOSE_CODES = new Set([4401, 4403]);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /**
   * `onOpen` runs after every (re)connect (subscribe again there); `onFrame` gets each parsed
   * frame; `refusedText` is shown when the server refuses for good ("Please log in again." on
   * 4401). Returns {send}, which is false while the socket is down.
   */
  function connect({ path, statusNode, onOpen, onFrame, refusedText = "Not allowed" }) {
    let socket = null;
    let attempt = 0;
    let pingTimer = null;
    let stopped = false;

    function setStatus(state, text) {
      if (!statusNode) return;
      statusNode.dataset.state = state;
      statusNode.textContent = text;
    }

    function send(frame) {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(frame));
        return true;
      }
      return false;
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
          setStatus("refused", event.code === 4401 ? "Please log in again." : refusedText);
          return;
        }
        if (stopped) return;
        setStatus("reconnecting", "Reconnecting…");
        const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** attempt++);
        setTimeout(open, Math.round(delay * (1 + Math.random() * 0.5)));
      });
    }

    open();
    return { send };
  }

  return { el, connect };
})();
