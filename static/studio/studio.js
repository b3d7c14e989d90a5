/*
 * Prompt studio helpers: one websocket to /ws/studio/, reconnecting with backoff (not after
 * 4401/4403). Plain ES2020; everything from the server goes into the page as text.
 */
"use strict";

window.Studio = (() => {
  const FINAL_CLOSE_CODES = new Set([4401, 4403]);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function connect({ path, statusNode, onOpen, onFrame }) {
    let socket = null;
    let attempt = 0;
    let pingTimer = null;

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
        pingTimer = setInterval(() => send({ type: "ping" }), 25000);
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
          setStatus("refused", "Not allowed");
          return;
        }
        attempt += 1;
        const delay = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
        setStatus("reconnecting", "Reconnecting…");
        setTimeout(open, delay);
      });
    }

    open();
    return { send };
  }

  return { el, connect };
})();
