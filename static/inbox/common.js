/*
 * Agent workspace helpers shared by the inbox and the conversation page: plain ES2020, no
 * build step. Everything from the server or the user goes into the page as text.
 */
"use strict";

window.AgentCommon = (() => {
  const { el } = window.StaffSocket;

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

  /** The inbox's socket (static/staff/socket.js), refusing in the inbox's words. */
  function connect(options) {
    return window.StaffSocket.connect({
      refusedText: "You don't have access to the inbox.",
      ...options,
    });
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
