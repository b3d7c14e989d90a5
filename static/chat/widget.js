/*
 * Support Bot launcher for other websites:
 *
 *   <script src="https://SUPPORT_BOT_HOST/static/chat/widget.js" data-support-bot async></script>
 *
 * Adds a round "Open chat" button in the bottom-right corner that shows and hides the chat
 * page (https://SUPPORT_BOT_HOST/chat/?embed=1&site=<this page's origin>) in an iframe. The
 * site must be allowed to embed the widget (admin, or WIDGET_ALLOWED_ORIGINS; docs/widget.md).
 * The visitor's signed token is kept in this page's localStorage (the chat frame posts it here)
 * and handed to the frame in its URL's fragment: a browser that blocks third-party cookies
 * gives the frame neither cookies nor storage. No dependencies; its globals are
 * window.SupportBotWidget (open/close/toggle) and window.SupportBot, Intercom-style commands
 * queued before this file loads (docs/widget.md):
 *
 *   window.SupportBot = window.SupportBot || function () {
 *     (window.SupportBot.q = window.SupportBot.q || []).push(arguments); };
 *   SupportBot("identify", { id, name, email, user_hash, attributes });  // a signed-in user
 *   SupportBot("shutdown");                                  // on logout
 *
 * The frame also asks this page to close the widget (Esc) and says when a team or bot message
 * arrives, which the button counts as unread while the widget is closed (docs/widget.md).
 *
 * The button and iframe live in a shadow root so that the host page's CSS cannot restyle
 * them, and they are styled through the CSSOM (element.style), which a host page's
 * Content-Security-Policy does not block the way it blocks <style> elements.
 */
"use strict";

(() => {
  const NAMESPACE = "SupportBotWidget";
  if (window[NAMESPACE]) return; // the snippet was pasted twice

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICON_CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z";
  const ICON_CLOSE = "M6 6l12 12M18 6L6 18";

  function findOwnScript() {
    // currentScript is set for classic scripts, async ones included, while they run.
    const current = document.currentScript;
    if (current && current.src) return current;
    return document.querySelector("script[data-support-bot][src]");
  }

  function appOrigin(script) {
    return new URL(script.src, window.location.href).origin;
  }

  // The visitor's signed token, kept for the chat frame in this (first-party) page's storage:
  // a browser that blocks third-party cookies gives the frame no storage of its own.
  const TOKEN_KEY = "support-bot.visitor";
  const TOKEN_MESSAGE = "support-bot:visitor-token";
  const CLOSE_MESSAGE = "support-bot:close";
  const NEW_MESSAGE = "support-bot:new-message";
  const WIDGET_MESSAGE = "support-bot:widget";

  function storedToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY) || "";
    } catch (_error) {
      return "";
    }
  }

  function keepToken(token) {
    try {
      if (token) window.localStorage.setItem(TOKEN_KEY, token);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (_error) {
      // Storage blocked: the conversation lasts as long as the page.
    }
  }

  // --- Identify (SupportBot("identify" | "shutdown")) -----------------------------------------
  // The signed-in user the host page named, for the frame's socket to present (docs/widget.md).
  // Kept in memory only: the page names its user on every load. The user id last identified on
  // this browser is kept so that someone else signing in never gets the previous user's token.
  const USER_KEY = "support-bot.user";
  let identity = null;

  function storedUser() {
    try {
      return window.localStorage.getItem(USER_KEY);
    } catch (_error) {
      return null;
    }
  }

  function keepUser(id) {
    try {
      if (id === null) window.localStorage.removeItem(USER_KEY);
      else window.localStorage.setItem(USER_KEY, id);
    } catch (_error) {
      // Storage blocked: the token is not kept either.
    }
  }

  /** Returns whether the frame must start over with this identity. */
  function identify(user) {
    if (!user || typeof user !== "object") {
      console.warn("SupportBot('identify'): give an object { id, name, email, user_hash }.");
      return false;
    }
    // Types are checked by the server, which explains a refusal; an id that is not a string
    // is sent as it is and refused there.
    const next = { id: user.id, name: user.name, email: user.email, user_hash: user.user_hash };
    // Optional: a flat object of what the team sees in its context panel (plan, signup date…).
    if (user.attributes !== undefined) next.attributes = user.attributes;
    const id = JSON.stringify(next.id === undefined ? null : next.id);
    if (storedUser() !== null && storedUser() !== id) keepToken(""); // another user: start over
    keepUser(id);
    const same = identity && JSON.stringify(identity) === JSON.stringify(next);
    identity = next;
    return !same;
  }

  function shutdown() {
    // Logout: the next person on this browser starts as a new anonymous visitor.
    identity = null;
    keepToken("");
    keepUser(null);
  }

  function chatUrl(script) {
    // The host page's origin: Support Bot checks it against the sites allowed to embed the
    // widget (the browser enforces the same list through frame-ancestors). The token and the
    // identity go in the fragment, which no request carries; `sb-token` is always there (empty
    // for none), so that the frame does not fall back on a token of its own storage.
    const query = new URLSearchParams({ embed: "1", site: window.location.origin });
    const fragment = new URLSearchParams({ "sb-token": storedToken() });
    if (identity) fragment.set("sb-identity", JSON.stringify(identity));
    // Where the chat starts, for the team's context panel: this page and its referrer (the
    // server keeps only http(s) URLs without credentials; docs/widget.md).
    fragment.set("sb-page", window.location.href);
    if (document.referrer) fragment.set("sb-referrer", document.referrer);
    return `${appOrigin(script)}/chat/?${query.toString()}#${fragment.toString()}`;
  }

  function style(node, rules) {
    Object.assign(node.style, rules);
    return node;
  }

  function icon(path, { filled }) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "26");
    svg.setAttribute("height", "26");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const shape = document.createElementNS(SVG_NS, "path");
    shape.setAttribute("d", path);
    shape.setAttribute("fill", filled ? "currentColor" : "none");
    shape.setAttribute("stroke", "currentColor");
    shape.setAttribute("stroke-width", filled ? "0" : "2.5");
    shape.setAttribute("stroke-linecap", "round");
    svg.append(shape);
    return svg;
  }

  function buildButton() {
    const button = document.createElement("button");
    button.type = "button";
    // "Open chat", or "Close chat" while open (on a phone it is the full-screen chat's close
    // button); aria-expanded says the same to screen readers.
    button.setAttribute("aria-label", "Open chat");
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-controls", "support-bot-frame");
    style(button, {
      position: "fixed",
      right: "20px",
      bottom: "20px",
      width: "56px",
      height: "56px",
      margin: "0",
      padding: "0",
      border: "0",
      borderRadius: "50%",
      background: "#1f5fd6",
      color: "#ffffff",
      boxShadow: "0 4px 14px rgba(0, 0, 0, 0.25)",
      cursor: "pointer",
      display: "flex",
      alignItems: "center",
      justifyContent: "center",
      zIndex: "2147483001",
      outlineOffset: "3px",
    });
    return button;
  }

  /** The unread count on the button; the button's name says it (aria-label), so it is hidden. */
  function buildBadge() {
    const badge = document.createElement("span");
    badge.setAttribute("aria-hidden", "true");
    badge.setAttribute("data-unread", "");
    badge.hidden = true;
    style(badge, {
      position: "absolute",
      top: "-4px",
      right: "-4px",
      minWidth: "20px",
      height: "20px",
      padding: "0 5px",
      boxSizing: "border-box",
      borderRadius: "10px",
      background: "#c62828",
      color: "#ffffff",
      border: "2px solid #ffffff",
      font: "bold 11px/16px system-ui, sans-serif",
      textAlign: "center",
      display: "none",
    });
    return badge;
  }

  function buildFrame(src) {
    const frame = document.createElement("iframe");
    frame.id = "support-bot-frame";
    frame.title = "Customer support chat";
    frame.src = src;
    style(frame, {
      position: "fixed",
      ...PANEL,
      border: "0",
      background: "#ffffff",
      boxShadow: "0 10px 40px rgba(0, 0, 0, 0.25)",
      zIndex: "2147483000",
    });
    return frame;
  }

  const PANEL = {
    top: "auto", left: "auto", right: "20px", bottom: "88px", borderRadius: "14px",
    width: "min(380px, calc(100vw - 24px))", height: "min(600px, calc(100vh - 112px))",
  };
  // Phones (a11y, issue 16 point 9): the chat covers the whole viewport, like a native app.
  const FULL_SCREEN = {
    top: "0", left: "0", right: "0", bottom: "0", borderRadius: "0", width: "100%", height: "100%",
  };
  const LAUNCHER = { top: "auto", right: "20px", bottom: "20px", width: "56px", height: "56px" };
  // Open on a phone, the button becomes a close button in the top-right corner of the chat's
  // header (the chat page leaves room for it there).
  const CORNER = { top: "6px", right: "8px", bottom: "auto", width: "44px", height: "44px" };

  function fitToViewport(frame, button, narrow, open) {
    if (frame) style(frame, narrow ? FULL_SCREEN : PANEL);
    style(button, narrow && open ? CORNER : LAUNCHER);
  }

  function mount(script) {
    const origin = appOrigin(script);
    const host = document.createElement("div");
    host.setAttribute("data-support-bot-widget", "");
    const root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    const button = buildButton();
    const chatIcon = icon(ICON_CHAT, { filled: true });
    const closeIcon = icon(ICON_CLOSE, { filled: false });
    const badge = buildBadge();
    button.append(chatIcon, badge);
    root.append(button);
    document.body.append(host);

    let frame = null; // created on first open: no chat traffic until someone asks for it
    let unread = 0; // team and bot messages that arrived while the widget was closed
    const narrowQuery = window.matchMedia("(max-width: 480px)");

    function isOpen() {
      return button.getAttribute("aria-expanded") === "true";
    }

    /** Tell the frame whether anyone sees it: a closed widget checks its connection less often. */
    function tellFrame(open) {
      if (frame && frame.contentWindow) frame.contentWindow.postMessage({ type: WIDGET_MESSAGE, open }, origin);
    }

    function setUnread(count) {
      unread = count;
      const plural = count === 1 ? "message" : "messages";
      let label = count > 0 ? `Open chat, ${count} unread ${plural}` : "Open chat";
      if (isOpen()) label = "Close chat";
      button.setAttribute("aria-label", label);
      badge.textContent = count > 99 ? "99+" : String(count);
      badge.hidden = count === 0;
      style(badge, { display: count > 0 ? "block" : "none" });
    }

    function open() {
      if (!frame) {
        frame = buildFrame(chatUrl(script));
        root.append(frame);
      }
      frame.hidden = false;
      style(frame, { display: "block" });
      button.setAttribute("aria-expanded", "true");
      button.replaceChildren(closeIcon, badge);
      setUnread(0); // names the button "Close chat"
      fitToViewport(frame, button, narrowQuery.matches, true);
      tellFrame(true);
      try {
        frame.focus();
      } catch (_error) {
        // Focusing a frame is best effort.
      }
    }

    function close() {
      if (frame) {
        // Hidden, not removed: the conversation and its connection survive closing.
        frame.hidden = true;
        style(frame, { display: "none" });
      }
      button.setAttribute("aria-expanded", "false");
      button.replaceChildren(chatIcon, badge);
      setUnread(unread); // names the button "Open chat", with the unread count
      fitToViewport(frame, button, narrowQuery.matches, false);
      tellFrame(false);
    }

    /** Esc: close, and give focus back to the button (it may have been inside the frame). */
    function dismiss() {
      if (!isOpen()) return;
      close();
      button.focus();
    }

    function toggle() {
      if (isOpen()) close();
      else open();
    }

    /** Identify or shutdown: the frame, if any, starts over as the new visitor. */
    function restart() {
      if (!frame) return;
      const wasOpen = isOpen();
      frame.remove();
      frame = null;
      setUnread(0); // another visitor: the count was the previous one's
      if (wasOpen) open();
    }

    window.addEventListener("message", (event) => {
      // Only the chat frame, from Support Bot's origin, talks to this page.
      if (!frame || event.source !== frame.contentWindow || event.origin !== origin) return;
      const data = event.data;
      if (!data || typeof data !== "object") return;
      if (data.type === TOKEN_MESSAGE && typeof data.token === "string") {
        keepToken(data.token);
      } else if (data.type === CLOSE_MESSAGE) {
        dismiss();
      } else if (data.type === NEW_MESSAGE && !isOpen()) {
        setUnread(unread + 1);
      }
    });

    button.addEventListener("click", toggle);
    button.addEventListener("keydown", (event) => {
      if (event.key === "Escape") dismiss();
    });
    const onViewportChange = (event) => fitToViewport(frame, button, event.matches, isOpen());
    if (narrowQuery.addEventListener) narrowQuery.addEventListener("change", onViewportChange);

    return { open, close, toggle, isOpen, restart };
  }

  let api = null; // mounted once the DOM is ready
  const pending = [];

  function run(command, options) {
    if (!api) {
      pending.push([command, options]);
      return;
    }
    if (command === "identify") {
      if (identify(options)) api.restart();
    } else if (command === "shutdown") {
      shutdown();
      api.close();
      api.restart();
    } else if (command === "open" || command === "close" || command === "toggle") {
      api[command]();
    } else {
      console.warn(`SupportBot: unknown command ${JSON.stringify(String(command))}.`);
    }
  }

  function installCommands() {
    // Commands the page queued before this file loaded (the snippet's stub), then live ones.
    const stub = window.SupportBot;
    const queued = stub && Array.isArray(stub.q) ? stub.q : [];
    window.SupportBot = (command, options) => run(command, options);
    for (const args of queued) run(args[0], args[1]);
  }

  function init(script) {
    api = mount(script);
    window[NAMESPACE].open = api.open;
    window[NAMESPACE].close = api.close;
    window[NAMESPACE].toggle = api.toggle;
    window[NAMESPACE].isOpen = api.isOpen;
    for (const [command, options] of pending.splice(0)) run(command, options);
  }

  // Claim the namespace synchronously so a second copy stops above, even before the DOM is ready.
  const script = findOwnScript();
  window[NAMESPACE] = { version: 1, open() {}, close() {}, toggle() {}, isOpen: () => false };
  if (!script) return;
  installCommands();
  // Found now: currentScript is only set while this file runs.
  if (document.body) {
    init(script);
  } else {
    document.addEventListener("DOMContentLoaded", () => init(script), { once: true });
  }
})();
