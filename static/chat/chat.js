/*
 * Support Bot chat page: plain ES2020, no build step; needs static/common/markdown.js (and the
 * two vendored libraries it uses) loaded before it.
 *
 * Pieces, top to bottom:
 *   - small helpers (ids, URL checks, lengths)
 *   - Conversation: what the page knows (messages keyed by turn id / client id, reply
 *     streams with their last applied seq and out-of-order buffer, the outbox)
 *   - LogView: turns messages into DOM, keeps the log ordered and scrolled
 *   - Socket: one websocket at a time, heartbeats, reconnects with backoff
 *   - Composer and start(): wire the page together
 *   - Handoff: "Talk to a person", who answers (conversation.state frames), an agent typing,
 *     the email form outside business hours, the rating form once the conversation is resolved
 *   - History: the customer's earlier conversations and "New conversation" (JSON endpoints)
 *
 * Everything that came from the server or the user is inserted as text (textContent /
 * createTextNode), never as HTML, except the bot's and the team's messages: those are Markdown,
 * turned into sanitised DOM by static/common/markdown.js (marked + DOMPurify, vendored).
 */
"use strict";

(() => {
  // Connection truth (docs/protocol.md#heartbeat): a ping every PING_INTERVAL_MS, and a socket
  // that has not said anything PONG_TIMEOUT_MS after one is presumed dead: mobile networks drop
  // packets without a close, and the browser may not notice for minutes. A silent network shows
  // as offline within 4 + 3 s; the server answers a ping without Redis or the database. Nobody
  // watches a background tab or a closed widget: those ping at the old, relaxed pace (about
  // 0.16 ms of web CPU a ping), and check at once when they are watched again.
  const PING_INTERVAL_MS = 4000;
  const RELAXED_PING_INTERVAL_MS = 25000;
  const PONG_TIMEOUT_MS = 3000;
  // A handshake that has not brought the conversation frame this long is given up and retried.
  const CONNECT_TIMEOUT_MS = 10000;
  // The close code of a socket the page gave up on (no pong, no handshake, the browser offline).
  const CLOSE_ABANDONED = 4000;
  // An ordinary close (a server restart) shows the offline banner only if it outlasts this.
  const OFFLINE_GRACE_MS = 1500;
  const GAP_WAIT_MS = 1000;
  const GAP_WAIT_MAX_MS = 8000;
  // Live frames travel over Redis pub/sub, which may drop one. A gap shows only when a later
  // frame arrives, so a reply that goes quiet this long asks for anything after its last seq.
  const STALL_WAIT_MS = 5000;
  const STALL_WAIT_MAX_MS = 30000;
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const STICKY_SCROLL_PX = 48;
  // How long a refusal's explanation waits for the close that normally follows it.
  const REFUSAL_GRACE_MS = 1500;
  // An agent's typing indicator goes away by itself when no typing frame refreshes it this long.
  const AGENT_TYPING_TIMEOUT_MS = 8000;

  const AUTHORS = new Set(["customer", "bot", "agent", "system"]);
  const ACTIVE_REPLY = new Set(["queued", "streaming"]);
  // "withdrawn": the conversation went to a person before the bot started; never shown.
  const FINAL_REPLY = new Set(["done", "failed", "withdrawn"]);
  const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404]);
  // Error codes the server sends just before a final close; the close explains them better.
  const REFUSAL_CODES = new Set(["unauthenticated", "forbidden", "not_found", "site_not_allowed"]);
  const STATUSES = new Set(["open", "pending", "snoozed", "resolved"]);
  // Errors about the email and rating forms, shown in those forms rather than in the log.
  const CONTACT_ERRORS = new Set(["bad_email"]);
  const RATING_ERRORS = new Set(["bad_score", "bad_comment", "comment_too_long", "not_resolved", "already_rated"]);
  const STATUS_LABELS = { open: "Open", pending: "Waiting for our team", snoozed: "Waiting for our team", resolved: "Resolved" };

  // --- Helpers ---------------------------------------------------------------------------------

  /** A client message id. crypto.randomUUID only exists in secure contexts (not plain http on a LAN). */
  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  /** Length as the server counts it (Python str: code points, so an emoji counts once). */
  function codePointLength(text) {
    return Array.from(text).length;
  }

  /** The URL to link to, or null when it is not an absolute http(s) URL (javascript:, data:, …). */
  function safeHref(url) {
    if (typeof url !== "string" || url === "") return null;
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_error) {
      return null;
    }
  }

  function isPositiveInt(value) {
    return Number.isInteger(value) && value > 0;
  }

  function asText(value) {
    return typeof value === "string" ? value : "";
  }

  /**
   * The sources of a bot answer: [{n, title, url}]. `n` is the number the answer's text cites
   * them by ("[2]"); when the server gives none, a source's position (from 1) stands in.
   */
  function cleanSources(sources) {
    if (!Array.isArray(sources)) return [];
    const cleaned = [];
    const taken = new Set();
    sources.forEach((s, index) => {
      if (!s || typeof s !== "object") return;
      const title = asText(s.title).trim();
      const url = asText(s.url).trim();
      if (!title && !url) return;
      let n = isPositiveInt(s.n) ? s.n : index + 1;
      if (taken.has(n)) n = null; // two sources claiming one number: neither marker is certain
      if (n !== null) taken.add(n);
      cleaned.push({ n, title, url });
    });
    return cleaned;
  }

  // "[1]", "[12]": a citation of source 1 or 12 in an answer's text.
  const CITATION = /\[(\d{1,3})\]/g;

  function isValidTurn(turn) {
    return Boolean(turn) && isPositiveInt(turn.id) && AUTHORS.has(turn.author);
  }

  function formatDate(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function reconnectDelay(attempt) {
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** attempt);
    // Jitter spreads out the reconnects of every open tab after a server restart.
    return Math.min(RECONNECT_MAX_MS, Math.round(base * (1 + Math.random() * 0.5)));
  }

  // --- Conversation state ---------------------------------------------------------------------

  let nextLocalKey = 1;

  function newMessage(author, fields = {}) {
    return {
      key: nextLocalKey++, // stable identity for messages that have no turn id yet
      author,
      turnId: null,
      clientId: null,
      text: "",
      status: null,
      sources: [],
      authorName: null,
      created: new Date().toISOString(),
      error: null, // a human-readable problem shown under the text
      attempt: 1,
      waiting: null, // a bot reply's "one moment" line while it waits for its turn (reply.waiting)
      offersHandoff: false, // a bot reply that offers a person: "Connect me" under it
      attachments: [], // files under the message (static/common/attachments.js)
      ...fields,
    };
  }

  function newReply(id) {
    // lastSeq: the highest seq applied; buffer: frames that arrived ahead of a gap, by seq;
    // finished: a done frame (or a finished stored turn) gave the final text.
    return {
      id, lastSeq: 0, buffer: new Map(), gapTimer: null, gapWaitMs: GAP_WAIT_MS, finished: false,
      stallTimer: null, stallWaitMs: STALL_WAIT_MS,
    };
  }

  /**
   * What the page knows about the conversation. It does not touch the DOM itself: it tells
   * `view` which messages changed, and sends resumes through `send` (false when offline).
   */
  class Conversation {
    constructor({ view, send }) {
      this.view = view;
      this.send = send;
      this.byTurnId = new Map();
      this.byClientId = new Map();
      this.replies = new Map();
      // Customer messages the server has not acknowledged, oldest first (Set keeps insertion order).
      this.outbox = new Set();
    }

    // Customer messages ------------------------------------------------------------------------

    /** status: "sending", or "queued" while the page is offline (sent once it is back). */
    addOutgoing(text, status = "sending") {
      const message = newMessage("customer", { clientId: newClientId(), text, status });
      this.byClientId.set(message.clientId, message);
      this.outbox.add(message);
      this.view.add(message);
      return message;
    }

    /** Put a failed message back in the outbox; the same client_id keeps the server's de-duplication. */
    retry(message, status = "sending") {
      if (message.status !== "failed") return;
      message.status = status;
      message.error = null;
      this.outbox.add(message);
      this.view.update(message);
    }

    unsent() {
      return Array.from(this.outbox);
    }

    /** The connection is lost: what was sending waits for it ("Will send when you're back"). */
    queueUnsent() {
      for (const message of this.outbox) this.setDelivery(message, "queued");
    }

    setDelivery(message, status) {
      if (message.status === status || (message.status !== "sending" && message.status !== "queued")) return;
      message.status = status;
      this.view.update(message);
    }

    applyAck(frame) {
      const message = this.byClientId.get(frame.client_id);
      if (!message) return;
      if (isPositiveInt(frame.turn_id)) this.setTurnId(message, frame.turn_id);
      this.markStored(message);
      if (!isPositiveInt(frame.reply_id)) return;
      const replyMessage = this.ensureBotMessage(frame.reply_id);
      // A duplicate ack means the message was stored earlier, maybe while we were away: its
      // reply may be half-written or finished already, and we missed those frames.
      if (frame.duplicate && ACTIVE_REPLY.has(replyMessage.status)) this.resume(frame.reply_id);
    }

    /** An error about one of our messages. Returns false when the error is not about one we know. */
    applyMessageError(frame) {
      const message = typeof frame.client_id === "string" && this.byClientId.get(frame.client_id);
      if (!message || message.author !== "customer") return false;
      // Already stored (a re-send after reconnecting can be rate limited): nothing was lost.
      if (message.turnId !== null) return true;
      message.status = "failed";
      message.error = asText(frame.message) || "This message could not be sent.";
      this.outbox.delete(message);
      this.view.update(message);
      return true;
    }

    markStored(message) {
      this.outbox.delete(message);
      if (message.status !== "sent" || message.error) {
        message.status = "sent";
        message.error = null;
        this.view.update(message);
      }
    }

    setTurnId(message, turnId) {
      if (message.turnId === turnId) return;
      const other = this.byTurnId.get(turnId);
      if (other && other !== message) {
        // Two bubbles for one turn (should not happen): keep the one with the client id.
        this.byTurnId.delete(turnId);
        this.view.remove(other);
      }
      message.turnId = turnId;
      this.byTurnId.set(turnId, message);
      this.view.place(message);
      this.view.update(message);
    }

    // Turns from the server --------------------------------------------------------------------

    /**
     * The history sent on every (re)connect. Merges it with what is shown and returns the
     * resume frames to send: one per reply the server still considers in progress.
     */
    applySnapshot(turns) {
      const resumes = [];
      for (const turn of Array.isArray(turns) ? turns : []) {
        if (!isValidTurn(turn)) continue;
        this.applyTurn(turn);
        if (turn.author === "bot" && ACTIVE_REPLY.has(turn.status)) {
          const reply = this.reply(turn.id);
          resumes.push({ type: "resume", reply_id: turn.id, after: reply.lastSeq });
          this.watchStall(reply);
        }
      }
      return resumes;
    }

    applyTurn(turn) {
      if (!isValidTurn(turn)) return;
      let message = this.byTurnId.get(turn.id);
      if (!message && turn.author === "customer" && typeof turn.client_id === "string") {
        message = this.byClientId.get(turn.client_id);
      }
      if (!message) {
        message = newMessage(turn.author, { turnId: turn.id });
        this.byTurnId.set(turn.id, message);
        if (turn.author === "customer" && typeof turn.client_id === "string") {
          message.clientId = turn.client_id;
          this.byClientId.set(turn.client_id, message);
        }
        this.mergeTurn(message, turn);
        this.view.add(message);
        return;
      }
      this.setTurnId(message, turn.id);
      this.mergeTurn(message, turn);
      this.view.update(message);
    }

    mergeTurn(message, turn) {
      if (typeof turn.created === "string" && turn.created) message.created = turn.created;
      message.attachments = Array.isArray(turn.attachments) ? turn.attachments : [];
      message.authorName = typeof turn.author_name === "string" ? turn.author_name : null;
      message.sources = cleanSources(turn.sources);
      message.offersHandoff = turn.author === "bot" && turn.offers_handoff === true;
      if (turn.author === "customer") {
        // The server has it, so it is stored; its text is what the server kept (trimmed).
        message.text = asText(turn.text);
        this.markStored(message);
        message.status = "sent";
        return;
      }
      if (turn.author !== "bot") {
        message.text = asText(turn.text);
        message.status = null;
        return;
      }
      this.mergeBotTurn(message, turn);
    }

    mergeBotTurn(message, turn) {
      const reply = this.reply(turn.id);
      const status = ACTIVE_REPLY.has(turn.status) || FINAL_REPLY.has(turn.status)
        ? turn.status
        : "done";
      if (FINAL_REPLY.has(status)) {
        // The stored turn is final and authoritative; nothing buffered can improve on it.
        this.clearGap(reply);
        reply.buffer.clear();
        reply.finished = true;
        message.text = asText(turn.text);
        message.status = status;
        message.error = null;
        return;
      }
      if (reply.lastSeq === 0) {
        // Never saw a frame of it: show what the server has until the replay starts over.
        message.text = asText(turn.text);
        message.status = status;
      }
      // Otherwise keep the streamed text and status: the resume continues from lastSeq.
    }

    ensureBotMessage(replyId) {
      let message = this.byTurnId.get(replyId);
      if (!message) {
        message = newMessage("bot", { turnId: replyId, status: "queued" });
        this.byTurnId.set(replyId, message);
        this.view.add(message);
      }
      const reply = this.reply(replyId);
      if (!reply.finished && reply.stallTimer === null) this.watchStall(reply);
      return message;
    }

    // Reply streams ----------------------------------------------------------------------------

    reply(replyId) {
      let reply = this.replies.get(replyId);
      if (!reply) {
        reply = newReply(replyId);
        this.replies.set(replyId, reply);
      }
      return reply;
    }

    /** Applies reply.start / reply.waiting / reply.delta / reply.done strictly in seq order. */
    applyReplyFrame(frame) {
      if (!isPositiveInt(frame.reply_id) || !isPositiveInt(frame.seq)) return;
      const reply = this.reply(frame.reply_id);
      if (frame.seq <= reply.lastSeq) return; // already applied: the server may replay
      if (frame.type === "reply.done" || frame.type === "reply.start") {
        // A done frame carries the whole text and a start begins it anew, so either may jump any
        // gap (the replay log may be gone; a reply taken over numbers its frames further on).
        this.applyInOrder(reply, frame);
        for (const seq of reply.buffer.keys()) if (seq <= frame.seq) reply.buffer.delete(seq);
      } else if (frame.seq === reply.lastSeq + 1) {
        this.applyInOrder(reply, frame);
      } else {
        reply.buffer.set(frame.seq, frame);
      }
      this.drain(reply);
    }

    drain(reply) {
      let next;
      while ((next = reply.buffer.get(reply.lastSeq + 1))) {
        reply.buffer.delete(next.seq);
        this.applyInOrder(reply, next);
      }
      if (reply.buffer.size === 0) {
        this.clearGap(reply);
      } else if (reply.gapTimer === null) {
        reply.gapTimer = setTimeout(() => this.onGapTimeout(reply), reply.gapWaitMs);
      }
    }

    onGapTimeout(reply) {
      reply.gapTimer = null;
      if (reply.buffer.size === 0) return;
      this.resume(reply.id);
      // Ask again later if the replay does not come either, but less and less often.
      reply.gapWaitMs = Math.min(GAP_WAIT_MAX_MS, reply.gapWaitMs * 2);
      reply.gapTimer = setTimeout(() => this.onGapTimeout(reply), reply.gapWaitMs);
    }

    clearGap(reply) {
      if (reply.gapTimer !== null) clearTimeout(reply.gapTimer);
      reply.gapTimer = null;
      reply.gapWaitMs = GAP_WAIT_MS;
    }

    resume(replyId) {
      this.send({ type: "resume", reply_id: replyId, after: this.reply(replyId).lastSeq });
    }

    watchStall(reply) {
      this.clearStall(reply);
      if (reply.finished) return;
      reply.stallTimer = setTimeout(() => {
        reply.stallTimer = null;
        if (reply.finished) return;
        this.resume(reply.id);
        reply.stallWaitMs = Math.min(STALL_WAIT_MAX_MS, reply.stallWaitMs * 2);
        this.watchStall(reply);
      }, reply.stallWaitMs);
    }

    clearStall(reply) {
      if (reply.stallTimer !== null) clearTimeout(reply.stallTimer);
      reply.stallTimer = null;
    }

    applyInOrder(reply, frame) {
      reply.lastSeq = frame.seq;
      const message = this.ensureBotMessage(reply.id);
      if (frame.type === "reply.start") {
        // A new attempt starts the text over; "queued" until its first token arrives.
        reply.finished = false;
        message.text = "";
        message.status = "queued";
        message.error = null;
        message.sources = [];
        message.waiting = null;
        message.offersHandoff = false;
        message.attempt = isPositiveInt(frame.attempt) ? frame.attempt : message.attempt;
      } else if (frame.type === "reply.waiting") {
        // The reply waits for its turn with the model (a busy moment): a short line in its
        // place until its text starts. Numbered like the rest, so a resume shows it again.
        if (reply.finished || message.text !== "") return;
        message.waiting = asText(frame.text) || null;
      } else if (frame.type === "reply.delta") {
        // A delta behind a done frame that jumped ahead (the server's fallback done on resume
        // can take a seq the live stream also uses) must not touch the final text.
        if (reply.finished) return;
        message.text += asText(frame.text);
        message.status = "streaming";
        message.waiting = null;
      } else if (frame.type === "reply.done") {
        reply.finished = true;
        message.waiting = null;
        message.text = asText(frame.text);
        message.status = FINAL_REPLY.has(frame.status) ? frame.status : "done";
        message.sources = cleanSources(frame.sources);
        message.offersHandoff = frame.offers_handoff === true;
        const problem = frame.error && asText(frame.error.message);
        // The failed text is usually the apology itself; only add the error when it says more.
        message.error = message.status === "failed" && problem && problem !== message.text ? problem : null;
      }
      reply.stallWaitMs = STALL_WAIT_MS;
      this.watchStall(reply);
      this.view.update(message);
    }

    /** Stop waiting for gaps while offline: the resumes after reconnecting replace these. */
    suspend() {
      for (const reply of this.replies.values()) {
        this.clearGap(reply);
        this.clearStall(reply);
      }
    }

    hasActiveReply() {
      for (const message of this.byTurnId.values()) {
        if (message.author === "bot" && ACTIVE_REPLY.has(message.status)) return true;
      }
      return false;
    }

    addNotice(text, code = null) {
      const message = newMessage("system", { text, code });
      this.view.add(message);
      return message;
    }
  }

  // --- Rendering ------------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined || value === "") node.removeAttribute(name);
    else if (node.getAttribute(name) !== String(value)) node.setAttribute(name, String(value));
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /** The id of a source's list item, which the answer's "[n]" markers link to. */
  function sourceItemId(message, n) {
    return `source-${message.key}-${n}`;
  }

  function turnIdOf(node) {
    const raw = node.getAttribute("data-turn-id");
    return raw === null ? null : Number(raw);
  }

  /**
   * The message log. Messages with a turn id stay in turn id order; messages without one
   * (unacknowledged messages, local notices) stay where they were added.
   */
  class LogView {
    constructor(log, { companyName, onRetry, onConnect, onNewContent, fileHeaders }) {
      this.log = log;
      this.fileHeaders = fileHeaders;
      this.companyName = companyName;
      this.onRetry = onRetry;
      this.onConnect = onConnect;
      this.onNewContent = onNewContent;
      this.parts = new Map(); // message.key -> { root, author, text, ... }
      this.messagesByNode = new WeakMap();
      log.addEventListener("click", (event) => this.handleClick(event));
    }

    add(message) {
      const parts = this.build(message);
      this.parts.set(message.key, parts);
      this.messagesByNode.set(parts.root, message);
      this.fill(message, parts);
      this.place(message);
      this.onNewContent();
    }

    update(message) {
      const parts = this.parts.get(message.key);
      if (!parts) return;
      this.fill(message, parts);
      this.onNewContent();
    }

    remove(message) {
      const parts = this.parts.get(message.key);
      if (!parts) return;
      parts.root.remove();
      this.parts.delete(message.key);
    }

    place(message) {
      const parts = this.parts.get(message.key);
      if (!parts) return;
      const node = parts.root;
      if (message.turnId === null) {
        if (!node.isConnected) this.log.append(node);
        return;
      }
      node.setAttribute("data-turn-id", String(message.turnId));
      if (node.isConnected && this.inOrder(node, message.turnId)) return;
      // Walk back from the end: new turns almost always belong last.
      let before = null;
      for (let child = this.log.lastElementChild; child; child = child.previousElementSibling) {
        if (child === node) continue;
        const id = turnIdOf(child);
        if (id === null) continue;
        if (id > message.turnId) before = child;
        else break;
      }
      this.log.insertBefore(node, before);
    }

    inOrder(node, turnId) {
      let prev = node.previousElementSibling;
      while (prev && turnIdOf(prev) === null) prev = prev.previousElementSibling;
      let next = node.nextElementSibling;
      while (next && turnIdOf(next) === null) next = next.nextElementSibling;
      return (!prev || turnIdOf(prev) < turnId) && (!next || turnIdOf(next) > turnId);
    }

    build(message) {
      const root = el("div", `message message--${message.author}`);
      root.setAttribute("data-author", message.author);
      const parts = { root, author: null, text: el("div", "text"), sources: null, error: null, retry: null, meta: null, waiting: null };
      if (message.author !== "system") {
        parts.author = el("p", "message__author");
        root.append(parts.author);
      }
      root.append(parts.text);
      if (message.author !== "system") {
        parts.meta = el("p", "message__meta");
        parts.time = el("time", "message__time");
        parts.delivery = el("span", "message__delivery");
        parts.meta.append(parts.time, parts.delivery);
        root.append(parts.meta);
      }
      return parts;
    }

    fill(message, parts) {
      const { root } = parts;
      setAttr(root, "data-turn-id", message.turnId);
      if (message.author === "customer") setAttr(root, "data-client-id", message.clientId);
      setAttr(root, "data-status", message.status);
      // A withdrawn reply was never written: nothing to show.
      root.hidden = message.author === "bot" && message.status === "withdrawn";
      setAttr(root, "data-code", message.code);
      setAttr(root, "data-attempt", message.attempt > 1 ? message.attempt : null);
      // Screen readers should read a streaming reply once it is complete, not token by token.
      setAttr(root, "aria-busy", message.author === "bot" && ACTIVE_REPLY.has(message.status) ? "true" : null);
      if (parts.author) setText(parts.author, this.authorLabel(message));
      this.fillText(message, parts);
      this.fillAttachments(message, parts);
      this.fillWaiting(message, parts);
      if (parts.meta) this.fillMeta(message, parts);
      this.fillSources(message, parts);
      this.fillOffer(message, parts);
      this.fillError(message, parts);
    }

    /** The message's files: thumbnails and links (static/common/attachments.js). */
    fillAttachments(message, parts) {
      window.SupportBotAttachments.showUnder(parts, message.attachments, { headers: this.fileHeaders });
    }

    /** A reply's "one moment" line while it waits for its turn with the model. */
    fillWaiting(message, parts) {
      const wanted = message.author === "bot" && ACTIVE_REPLY.has(message.status) && message.waiting
        ? message.waiting
        : "";
      if (wanted && !parts.waiting) {
        parts.waiting = el("p", "message__waiting");
        parts.waiting.setAttribute("role", "status");
        parts.text.after(parts.waiting);
      }
      if (parts.waiting) {
        setText(parts.waiting, wanted);
        parts.waiting.hidden = wanted === "";
      }
    }

    /**
     * "Connect me" under a bot reply that offers a person: it asks for one as "Talk to a
     * person" does. chat.css shows it only while the assistant answers (the conversation is
     * open) and nothing but the customer's own messages came after the offer.
     */
    fillOffer(message, parts) {
      const offers = message.author === "bot" && message.status === "done" && message.offersHandoff;
      setAttr(parts.root, "data-offers-handoff", offers ? "true" : null);
      if (offers && !parts.offer) {
        parts.offer = el("button", "offer-person", "Connect me");
        parts.offer.type = "button";
        parts.offer.setAttribute("aria-label", "Connect me with a person from our team");
        parts.root.insertBefore(parts.offer, parts.meta);
      }
      if (parts.offer) parts.offer.hidden = !offers;
    }

    authorLabel(message) {
      if (message.author === "customer") return "You";
      if (message.author === "bot") return `${this.companyName} assistant`;
      return message.authorName || `${this.companyName} support`;
    }

    fillMeta(message, parts) {
      setAttr(parts.time, "datetime", message.created);
      setText(parts.time, formatTime(message.created));
      let delivery = "";
      if (message.author === "customer") {
        delivery = { queued: "Will send when you're back", sending: "Sending…", failed: "Not sent" }[message.status] || "";
      } else if (message.author === "bot" && message.status === "failed") {
        delivery = "Could not answer";
      }
      setText(parts.delivery, delivery);
      parts.delivery.hidden = delivery === "";
    }

    /**
     * The message's text. The bot's and the team's messages are Markdown, rendered safely by
     * static/common/markdown.js (at most once per animation frame while a reply streams); the
     * customer's own messages and notices are plain text, shown exactly as written.
     */
    fillText(message, parts) {
      if (message.author !== "bot" && message.author !== "agent") {
        setText(parts.text, message.text);
        return;
      }
      if (!parts.markdown) {
        parts.markdown = window.ReplyMarkdown.live(parts.text, {
          decorate: (fragment) => this.linkCitations(fragment, parts.cited),
          onRender: () => this.onNewContent(),
        });
      }
      parts.cited = { message, bySource: this.citedSources(message) };
      parts.markdown.show(message.text, {
        streaming: message.author === "bot" && ACTIVE_REPLY.has(message.status),
        key: JSON.stringify([message.text, message.sources]),
      });
    }

    /** A bot answer's sources by the number its text cites them by ("[2]"). */
    citedSources(message) {
      const bySource = new Map();
      if (message.author === "bot") {
        for (const source of message.sources) if (source.n !== null) bySource.set(source.n, source);
      }
      return bySource;
    }

    /**
     * Citation markers ("[1]") that match one of the answer's sources become in-page links to
     * that source; the text keeps the same characters. Not inside links or code.
     */
    linkCitations(fragment, { message, bySource }) {
      if (bySource.size === 0) return;
      const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT);
      const texts = [];
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (!node.parentElement || !node.parentElement.closest("a, code, pre")) texts.push(node);
      }
      for (const node of texts) {
        const text = node.data;
        const nodes = [];
        let last = 0;
        for (const match of text.matchAll(CITATION)) {
          const source = bySource.get(Number(match[1]));
          if (!source) continue;
          if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
          const marker = el("a", "citation", match[0]);
          marker.href = `#${sourceItemId(message, source.n)}`;
          marker.title = source.title || source.url;
          nodes.push(marker);
          last = match.index + match[0].length;
        }
        if (nodes.length === 0) continue;
        if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
        node.replaceWith(...nodes);
      }
    }

    /**
     * The sources under a bot answer: a list named "Sources", each "[n] title". A source is a
     * link only to an absolute http(s) URL (see safeHref); anything else is plain text.
     */
    fillSources(message, parts) {
      const key = JSON.stringify(message.sources);
      if (parts.sourcesKey === key) return;
      parts.sourcesKey = key;
      if (parts.sources) parts.sources.remove();
      parts.sources = null;
      if (message.sources.length === 0) return;
      const box = el("div", "sources");
      const title = el("p", "sources__title", "Sources");
      title.id = `sources-${message.key}`;
      const list = el("ul", "sources__list");
      list.setAttribute("aria-labelledby", title.id);
      for (const source of message.sources) {
        const item = el("li", "sources__item");
        if (source.n !== null) {
          item.id = sourceItemId(message, source.n);
          item.tabIndex = -1; // a citation marker moves focus here
          item.append(el("span", "sources__n", `[${source.n}]`), " ");
        }
        const label = source.title || source.url;
        const href = safeHref(source.url);
        if (href) {
          const link = el("a", "sources__link", label);
          link.href = href;
          link.target = "_blank";
          link.rel = "noopener noreferrer nofollow";
          link.referrerPolicy = "no-referrer";
          item.append(link);
        } else {
          item.append(el("span", "sources__link sources__link--plain", label));
        }
        list.append(item);
      }
      box.append(title, list);
      parts.text.after(box);
      parts.sources = box;
    }

    fillError(message, parts) {
      const wanted = message.error || "";
      if (wanted && !parts.error) {
        parts.error = el("p", "message__error");
        (parts.sources || parts.text).after(parts.error);
      }
      if (parts.error) {
        setText(parts.error, wanted);
        parts.error.hidden = wanted === "";
      }
      const retryable = message.author === "customer" && message.status === "failed";
      if (retryable && !parts.retry) {
        parts.retry = el("button", "retry", "Retry");
        parts.retry.type = "button";
        (parts.error || parts.text).after(parts.retry);
      }
      if (parts.retry) parts.retry.hidden = !retryable;
    }

    handleClick(event) {
      const marker = event.target.closest("a.citation");
      if (marker && this.log.contains(marker)) {
        this.showSource(event, marker);
        return;
      }
      const connect = event.target.closest("button.offer-person");
      if (connect && this.log.contains(connect)) {
        if (this.onConnect()) connect.disabled = true;
        return;
      }
      const button = event.target.closest("button.retry");
      if (!button || !this.log.contains(button)) return;
      const message = this.messagesByNode.get(button.closest(".message"));
      if (message) this.onRetry(message);
    }

    /** A citation marker was clicked: bring its source into view without touching the URL. */
    showSource(event, marker) {
      const item = document.getElementById(marker.getAttribute("href").slice(1));
      if (!item || !this.log.contains(item)) return;
      event.preventDefault();
      item.scrollIntoView({ block: "nearest" });
      item.focus({ preventScroll: true });
      item.classList.remove("sources__item--cited");
      void item.offsetWidth; // restart the highlight when the same marker is clicked again
      item.classList.add("sources__item--cited");
    }
  }

  /** Keeps the newest message in view unless the reader scrolled up to read older ones. */
  class ScrollKeeper {
    constructor(log, jumpButton) {
      this.log = log;
      this.jumpButton = jumpButton;
      this.sticky = true;
      log.addEventListener("scroll", () => {
        this.sticky = this.distanceFromBottom() <= STICKY_SCROLL_PX;
        if (this.sticky) this.jumpButton.hidden = true;
      }, { passive: true });
      jumpButton.addEventListener("click", () => this.toBottom({ force: true }));
      if (typeof ResizeObserver === "function") {
        // The log shrinks when the composer grows or a phone keyboard opens.
        new ResizeObserver(() => { if (this.sticky) this.scroll(); }).observe(log);
      }
    }

    distanceFromBottom() {
      return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight;
    }

    scroll() {
      this.log.scrollTop = this.log.scrollHeight;
    }

    toBottom({ force = false } = {}) {
      if (force) this.sticky = true;
      if (this.sticky) {
        this.scroll();
        this.jumpButton.hidden = true;
      } else if (this.distanceFromBottom() > STICKY_SCROLL_PX) {
        this.jumpButton.hidden = false;
      }
    }
  }

  // --- Socket ---------------------------------------------------------------------------------

  /**
   * One websocket at a time. Reconnects after any close except the final ones, with
   * exponential backoff and jitter. Events from a replaced socket are ignored (generation).
   * While the browser says it is offline it does not try at all; back online, it tries at once.
   */
  class Socket {
    constructor(url, { onFrame, onClose, onOpen }) {
      this.url = url;
      this.handlers = { onFrame, onClose, onOpen };
      this.ws = null;
      this.generation = 0;
      this.attempt = 0;
      this.reconnectTimer = null;
      this.pingTimer = null;
      this.pongTimer = null;
      this.connectTimer = null;
      this.stopped = false;
      this.offline = navigator.onLine === false;
      this.relaxed = false; // nobody watches the page: ping at the relaxed pace
    }

    connect() {
      this.clearReconnect();
      if (this.stopped || this.offline) return;
      const generation = ++this.generation;
      // A handshake through a network that drops packets hangs: give it up and try again.
      this.connectTimer = setTimeout(() => this.abandon(), CONNECT_TIMEOUT_MS);
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (_error) {
        this.closed(generation, 1006);
        return;
      }
      this.ws = ws;
      // "Connected" waits for the conversation frame, not for the socket to open.
      ws.onopen = () => {
        if (generation !== this.generation) return;
        if (this.handlers.onOpen) this.handlers.onOpen();
        this.startHeartbeat();
      };
      ws.onmessage = (event) => {
        if (generation !== this.generation) return;
        this.heardFromServer();
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (_error) {
          return;
        }
        if (frame && typeof frame === "object" && typeof frame.type === "string") {
          this.handlers.onFrame(frame);
        }
      };
      ws.onclose = (event) => this.closed(generation, event.code);
      // An error is always followed by a close, which is where we react.
      ws.onerror = () => {};
    }

    send(frame) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }

    /** The connection proved useful (the server sent the conversation): reset the backoff. */
    markHealthy() {
      this.attempt = 0;
      this.clearConnectTimer();
    }

    /** Skip the backoff wait, e.g. when the page becomes visible again. */
    reconnectNow() {
      if (this.reconnectTimer !== null) {
        this.attempt = 0;
        this.connect();
      }
    }

    /**
     * The browser's `offline` and `online` events. Offline: drop the socket (it is no use) and
     * stop trying. Online: connect at once, skipping the backoff.
     */
    setOffline(offline) {
      if (this.offline === offline) return;
      this.offline = offline;
      if (offline) {
        this.clearReconnect();
        if (this.ws) this.abandon();
      } else if (!this.ws && !this.stopped) {
        this.attempt = 0;
        this.connect();
      }
    }

    closed(generation, code) {
      if (generation !== this.generation) return;
      this.generation += 1; // whatever the old socket still says is stale now
      this.stopHeartbeat();
      this.clearConnectTimer();
      this.ws = null;
      const final = FINAL_CLOSE_CODES.has(code);
      if (final) this.stopped = true;
      this.handlers.onClose(code, final);
      if (!final) this.scheduleReconnect();
    }

    scheduleReconnect() {
      if (this.stopped || this.offline || this.reconnectTimer !== null) return;
      const delay = reconnectDelay(this.attempt);
      this.attempt += 1;
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, delay);
    }

    clearReconnect() {
      if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }

    clearConnectTimer() {
      if (this.connectTimer !== null) clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }

    startHeartbeat() {
      this.stopHeartbeat();
      this.nextPing();
    }

    nextPing() {
      const interval = this.relaxed ? RELAXED_PING_INTERVAL_MS : PING_INTERVAL_MS;
      this.pingTimer = setTimeout(() => this.ping(), interval);
    }

    ping() {
      this.nextPing();
      if (!this.send({ type: "ping" })) return;
      if (this.pongTimer === null) {
        this.pongTimer = setTimeout(() => this.abandon(), PONG_TIMEOUT_MS);
      }
    }

    /** Watched again (relaxed false): check the connection now rather than at the next beat. */
    setRelaxed(relaxed) {
      if (this.relaxed === relaxed) return;
      this.relaxed = relaxed;
      if (this.pingTimer === null) return;
      clearTimeout(this.pingTimer);
      if (relaxed) this.nextPing();
      else this.ping();
    }

    heardFromServer() {
      if (this.pongTimer !== null) clearTimeout(this.pongTimer);
      this.pongTimer = null;
    }

    stopHeartbeat() {
      if (this.pingTimer !== null) clearTimeout(this.pingTimer);
      if (this.pongTimer !== null) clearTimeout(this.pongTimer);
      this.pingTimer = null;
      this.pongTimer = null;
    }

    /** Give up on a silent socket now; its close handshake may never finish. */
    abandon() {
      const ws = this.ws;
      const generation = this.generation;
      try {
        if (ws) ws.close(CLOSE_ABANDONED, "no answer");
      } catch (_error) {
        // Closing a broken socket may throw; we are leaving it anyway.
      }
      this.closed(generation, CLOSE_ABANDONED);
    }
  }

  // --- Composer -------------------------------------------------------------------------------

  class Composer {
    constructor(form, { maxChars, onSend, onAttach, maxFiles, maxBytes }) {
      this.form = form;
      this.onAttach = onAttach;
      this.sending = false; // files are uploading
      this.picker = new window.SupportBotAttachments.Picker(form, {
        maxFiles,
        maxBytes,
        onProblem: (problem) => {
          this.problem = problem;
          this.refresh();
        },
      });
      this.input = form.querySelector(".composer__input");
      this.button = form.querySelector(".composer__send");
      this.counter = form.querySelector(".char-counter");
      this.errorBox = form.querySelector(".composer-error");
      this.maxChars = maxChars;
      this.onSend = onSend;
      this.problem = ""; // why the last send was refused, until the text changes

      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.submit();
      });
      this.input.addEventListener("keydown", (event) => {
        // isComposing: Enter also confirms an IME composition (Japanese, Chinese…).
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
          event.preventDefault();
          this.submit();
        }
      });
      this.input.addEventListener("input", () => {
        this.problem = "";
        this.refresh();
      });
      // The page sends it disabled: a click before this script listens would submit natively.
      this.button.disabled = false;
      this.refresh();
    }

    submit() {
      if (this.input.disabled || this.sending) return;
      const text = this.input.value.trim();
      const files = this.picker.files();
      if (text === "" && files.length === 0) {
        this.input.focus();
        return;
      }
      const length = codePointLength(text);
      if (length > this.maxChars) {
        this.problem = this.tooLongMessage(length);
        this.refresh();
        this.input.focus();
        return;
      }
      if (files.length > 0) {
        this.sendFiles(text, files);
        return;
      }
      this.onSend(text);
      this.input.value = "";
      this.problem = "";
      this.refresh();
      this.input.focus();
    }

    /** Text with files goes over HTTP (onAttach resolves to "" or the problem to show). */
    async sendFiles(text, files) {
      this.sending = true;
      this.button.disabled = true;
      this.picker.setProgress(0);
      const problem = await this.onAttach(text, files, (fraction) => this.picker.setProgress(fraction));
      this.picker.setProgress(null);
      this.sending = false;
      this.button.disabled = this.input.disabled;
      this.problem = problem;
      if (!problem) {
        this.picker.clear();
        this.input.value = "";
      }
      this.refresh();
      this.input.focus();
    }

    tooLongMessage(length) {
      return `Your message is ${length.toLocaleString()} characters long; the limit is ${this.maxChars.toLocaleString()}. Please shorten it.`;
    }

    refresh() {
      const length = codePointLength(this.input.value.trim());
      const over = length > this.maxChars;
      const near = length >= Math.floor(this.maxChars * 0.9);
      this.counter.hidden = !near;
      setText(this.counter, `${length.toLocaleString()} / ${this.maxChars.toLocaleString()}`);
      this.counter.classList.toggle("char-counter--over", over);
      const problem = over ? this.tooLongMessage(length) : this.problem;
      setText(this.errorBox, problem);
      this.errorBox.hidden = problem === "";
      setAttr(this.input, "aria-invalid", over ? "true" : null);
      this.autosize();
    }

    autosize() {
      // CSSOM writes are allowed under a strict CSP (style attributes in markup are not).
      this.input.style.height = "auto";
      this.input.style.height = `${this.input.scrollHeight + 2}px`;
    }

    disable() {
      this.input.disabled = true;
      this.button.disabled = true;
      if (this.picker.button) this.picker.button.disabled = true;
      this.input.placeholder = "This chat is no longer available";
      this.problem = "";
      this.refresh();
    }
  }

  // --- The page -------------------------------------------------------------------------------

  function readConfig(root) {
    const maxChars = Number.parseInt(root.dataset.maxChars, 10);
    return {
      conversationId: root.dataset.conversationId || "",
      wsPath: root.dataset.wsPath || "",
      companyName: root.dataset.companyName || "Support",
      maxChars: Number.isInteger(maxChars) && maxChars > 0 ? maxChars : 4000,
      embedded: root.dataset.embedded === "true",
      site: root.dataset.site || "",
      csrfToken: root.dataset.csrfToken || "",
      conversationsUrl: root.dataset.conversationsUrl || "",
      newConversationUrl: root.dataset.newConversationUrl || "",
      availabilityUrl: root.dataset.availabilityUrl || "",
      attachmentUploadUrl: root.dataset.attachmentUploadUrl || "",
      attachmentMaxBytes: Number.parseInt(root.dataset.attachmentMaxBytes, 10) || 10 * 1024 * 1024,
      attachmentMaxFiles: Number.parseInt(root.dataset.attachmentMaxFiles, 10) || 5,
    };
  }

  /**
   * Where this chat starts, for the team's context panel (docs/protocol.md#context): the host
   * page and its referrer as widget.js hands them over in the fragment, or this page's own;
   * the browser's language and time zone. Read once, before the fragment is cleared.
   */
  const startContext = (() => {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const embedded = params.has("sb-token");
    let timeZone = "";
    try {
      timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (_error) {
      timeZone = "";
    }
    return {
      type: "context",
      page: embedded ? params.get("sb-page") || "" : window.location.origin + window.location.pathname,
      referrer: embedded ? params.get("sb-referrer") || "" : document.referrer,
      language: navigator.language || "",
      time_zone: timeZone,
    };
  })();

  /**
   * The widget's visitor token. A third-party iframe keeps no cookie, and a browser that blocks
   * third-party cookies denies it storage too, so the token the server gives (a `session`
   * frame) is kept twice: in this frame's storage where the browser allows it (partitioned by
   * the host site), and by the loader (widget.js) in the host page's storage, which hands it
   * back in this page's URL fragment (never sent to a server, so never in a log). It is sent
   * only in the socket's first frame and the widget's own requests.
   */
  const visitorToken = (() => {
    const KEY = "support-bot.visitor";
    const MESSAGE = "support-bot:visitor-token";
    let memory = "";
    const params = new URLSearchParams(window.location.hash.slice(1));
    const fragment = params.get("sb-token");
    // Identify: the host page's signed-in user, handed over by the loader (widget.js).
    let identity = null;
    try {
      identity = params.has("sb-identity") ? JSON.parse(params.get("sb-identity")) : null;
    } catch (_error) {
      identity = null;
    }
    // The loader always names the token, empty for none (a new or signed-out visitor): its
    // word wins over a token this frame's own storage may still hold.
    if (params.has("sb-token") && !fragment) {
      try {
        window.localStorage.removeItem(KEY);
      } catch (_error) {
        // No storage of its own to clear.
      }
    }
    if (params.has("sb-token") || identity) {
      memory = fragment || "";
      try {
        window.history.replaceState(null, "", window.location.pathname + window.location.search);
      } catch (_error) {
        // The fragment stays; it is never sent anywhere.
      }
    }
    function storage() {
      try {
        return window.localStorage;
      } catch (_error) {
        return null; // storage denied to a third-party frame
      }
    }
    function tellLoader(token, site) {
      if (!site || window.parent === window) return;
      try {
        // Only to the host page the server checked (and frame-ancestors let frame us).
        window.parent.postMessage({ type: MESSAGE, token }, site);
      } catch (_error) {
        // No loader to keep it: the token lives as long as this page.
      }
    }
    return {
      /** The identity to present once, in the next auth frame. */
      takeIdentity() {
        const taken = identity;
        identity = null;
        return taken;
      },
      get() {
        if (memory) return memory;
        try {
          const store = storage();
          return (store && store.getItem(KEY)) || "";
        } catch (_error) {
          return "";
        }
      },
      set(token, site) {
        memory = token;
        try {
          const store = storage();
          if (store) store.setItem(KEY, token);
        } catch (_error) {
          // Kept by the loader.
        }
        tellLoader(token, site);
      },
      clear(site) {
        memory = "";
        try {
          const store = storage();
          if (store) store.removeItem(KEY);
        } catch (_error) {
          // Nothing kept here.
        }
        tellLoader("", site);
      },
    };
  })();

  function identityField(identity) {
    return identity ? { identity } : {};
  }

  /** The conversation's state as the page shows it (a conversation.state frame, checked). */
  function cleanState(raw) {
    if (!raw || typeof raw !== "object" || !STATUSES.has(raw.status)) return null;
    const name = asText(raw.assignee_name).trim();
    return {
      status: raw.status,
      assigneeName: name || null,
      needsEmail: raw.needs_email === true,
      ratingRequested: raw.rating_requested === true,
      rated: raw.rated === true,
    };
  }

  /** What the status line says about who answers, or "" while the assistant does. */
  function handoffText(state) {
    if (state.status === "pending") {
      if (state.assigneeName) return `${state.assigneeName} from our team joined`;
      return state.needsEmail ? "Our team is away right now" : "Waiting for a person…";
    }
    if (state.status === "snoozed") {
      return state.assigneeName
        ? `${state.assigneeName} from our team will get back to you`
        : "Our team will get back to you";
    }
    if (state.status === "resolved") return "This conversation is resolved";
    return "";
  }

  /**
   * "Talk to a person", the status line, the email form and the rating form. They follow the
   * server's conversation.state; the forms send frames through `send` (false when offline).
   */
  class Handoff {
    constructor(root, { send, onNewContent }) {
      this.send = send;
      this.onNewContent = onNewContent;
      this.state = null;
      this.online = false;
      this.ratedHere = false;
      this.score = null;
      this.bar = root.querySelector(".handoff-bar");
      this.status = root.querySelector(".handoff-status");
      this.button = root.querySelector(".handoff-button");
      this.contact = root.querySelector(".contact-form");
      this.email = this.contact.querySelector(".contact-form__input");
      this.contactError = this.contact.querySelector(".form-error");
      this.rating = root.querySelector(".rating-form");
      this.scores = Array.from(this.rating.querySelectorAll(".rating-star__input"));
      this.comment = this.rating.querySelector(".rating-form__comment");
      this.ratingError = this.rating.querySelector(".form-error");
      this.thanks = root.querySelector(".rating-thanks");

      this.root = root;
      this.button.addEventListener("click", () => this.askForPerson());
      this.contact.addEventListener("submit", (event) => {
        event.preventDefault();
        this.submitEmail();
      });
      this.email.addEventListener("input", () => this.showError(this.contactError, ""));
      // The stars are native radios: clicks and arrow keys both end in a change.
      this.rating.addEventListener("change", (event) => {
        if (event.target.classList.contains("rating-star__input")) this.choose(Number(event.target.value));
      });
      this.rating.addEventListener("submit", (event) => {
        event.preventDefault();
        this.submitRating();
      });
      this.render();
    }

    /** "Talk to a person", or "Connect me" under the assistant's offer. Returns whether it was sent. */
    askForPerson() {
      if (!this.send({ type: "handoff" })) return false;
      this.button.disabled = true;
      return true;
    }

    setOnline(online) {
      this.online = online;
      this.render();
    }

    apply(raw) {
      const state = cleanState(raw);
      if (!state) return;
      if (state.rated && this.state && !this.state.rated && this.rating.dataset.sent === "true") {
        this.ratedHere = true;
      }
      this.state = state;
      this.render();
    }

    render() {
      const state = this.state;
      const status = state ? state.status : null;
      setAttr(this.bar, "data-status", status);
      // "Connect me" under the assistant's offer shows only while the conversation is open.
      setAttr(this.root, "data-conversation-status", status);
      setText(this.status, state ? handoffText(state) : "");
      this.status.hidden = this.status.textContent === "";
      // A resolved conversation can be taken up again with a person, too.
      this.button.hidden = !state || !(status === "open" || status === "resolved");
      this.button.disabled = !this.online;
      for (const connect of this.root.querySelectorAll(".offer-person")) connect.disabled = !this.online;
      const wasHidden = this.contact.hidden && this.rating.hidden && this.thanks.hidden;
      this.contact.hidden = !(state && state.needsEmail);
      this.rating.hidden = !(state && state.ratingRequested);
      this.thanks.hidden = !(state && state.rated && this.ratedHere);
      for (const button of [this.contact.querySelector("button"), this.rating.querySelector(".rating-form__submit")]) {
        button.disabled = !this.online;
      }
      if (wasHidden && !(this.contact.hidden && this.rating.hidden && this.thanks.hidden)) this.onNewContent();
    }

    submitEmail() {
      const email = this.email.value.trim();
      if (email === "" || !this.email.checkValidity()) {
        this.showError(this.contactError, "Please enter a valid email address.");
        this.email.focus();
        return;
      }
      this.send({ type: "contact", email });
    }

    choose(score) {
      if (!Number.isInteger(score) || score < 1 || score > 5) return;
      this.score = score;
      this.showError(this.ratingError, "");
    }

    submitRating() {
      if (this.score === null) {
        this.showError(this.ratingError, "Please choose a rating from 1 to 5 stars.");
        this.scores[0].focus();
        return;
      }
      const frame = { type: "rate", score: this.score, comment: this.comment.value.trim() };
      if (this.send(frame)) this.rating.dataset.sent = "true";
    }

    /** An error frame about the forms. Returns false when it is about something else. */
    applyError(frame) {
      const message = asText(frame.message) || "Something went wrong.";
      if (CONTACT_ERRORS.has(frame.code)) {
        this.showError(this.contactError, message);
        return true;
      }
      if (RATING_ERRORS.has(frame.code)) {
        this.rating.dataset.sent = "false";
        this.showError(this.ratingError, message);
        return true;
      }
      return false;
    }

    showError(box, message) {
      setText(box, message);
      box.hidden = message === "";
    }
  }

  /**
   * The customer's earlier conversations (GET, on demand) and "New conversation" (POST, CSRF
   * token from the page). Opening one loads the chat page for it.
   */
  class History {
    constructor(root, config) {
      this.config = config;
      this.toggle = root.querySelector(".history-toggle");
      this.panel = root.querySelector(".history");
      this.list = this.panel.querySelector(".history__list");
      this.empty = this.panel.querySelector(".history__empty");
      this.error = this.panel.querySelector(".history__error");
      this.newButton = root.querySelector(".new-conversation");
      this.toggle.addEventListener("click", () => this.setOpen(this.panel.hidden));
      this.newButton.addEventListener("click", () => this.startNew());
    }

    withEmbed(url) {
      if (!this.config.embedded) return url;
      const query = new URLSearchParams({ embed: "1", site: this.config.site });
      return url + (url.includes("?") ? "&" : "?") + query.toString();
    }

    /** A link to another conversation in the widget carries the token in its fragment:
     * the next page, like this one, may have no storage to find it in. */
    withToken(url) {
      if (!this.config.embedded) return url;
      const token = visitorToken.get();
      return token ? `${url}#${new URLSearchParams({ "sb-token": token }).toString()}` : url;
    }

    headers(extra) {
      // The widget names its visitor by its token: its iframe has no cookie.
      if (!this.config.embedded) return extra;
      return { ...extra, "X-Support-Bot-Visitor": visitorToken.get() };
    }

    setOpen(open) {
      this.panel.hidden = !open;
      this.toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) this.load();
    }

    async load() {
      this.showError("");
      try {
        const response = await fetch(this.withEmbed(this.config.conversationsUrl), {
          credentials: "same-origin",
          headers: this.headers({ Accept: "application/json" }),
        });
        const body = await response.json();
        if (!response.ok) throw new Error(asText(body && body.error && body.error.message));
        this.render(Array.isArray(body.conversations) ? body.conversations : []);
      } catch (error) {
        this.showError(asText(error && error.message) || "Your conversations could not be loaded.");
      }
    }

    render(conversations) {
      this.list.textContent = "";
      for (const item of conversations) {
        if (!item || typeof item !== "object" || typeof item.url !== "string" || !item.url.startsWith("/")) continue;
        const li = el("li", "history__item");
        const link = el("a", "history__link");
        link.href = this.withToken(item.url);
        if (item.id === this.config.conversationId) link.setAttribute("aria-current", "page");
        const meta = el("span", "history__meta");
        const status = STATUSES.has(item.status) ? item.status : "open";
        const badge = el("span", "history__status", STATUS_LABELS[status]);
        badge.dataset.status = status;
        const when = el("time", "history__date", formatDate(item.last_message_at));
        when.dateTime = asText(item.last_message_at);
        meta.append(badge, " · ", when);
        const last = item.last_message && typeof item.last_message === "object" ? item.last_message : {};
        const prefix = last.author === "customer" ? "You: " : "";
        link.append(meta, el("span", "history__preview", prefix + asText(last.text)));
        li.append(link);
        this.list.append(li);
      }
      this.empty.hidden = this.list.childElementCount > 0;
    }

    async startNew() {
      this.newButton.disabled = true;
      try {
        const response = await fetch(this.withEmbed(this.config.newConversationUrl), {
          method: "POST",
          credentials: "same-origin",
          headers: this.headers({ Accept: "application/json", "X-CSRFToken": this.config.csrfToken }),
        });
        const body = await response.json();
        if (!response.ok) throw new Error(asText(body && body.error && body.error.message));
        const url = asText(body.url);
        if (!url.startsWith("/")) throw new Error("");
        window.location.assign(this.withToken(url));
      } catch (error) {
        this.newButton.disabled = false;
        this.setOpen(true);
        this.showError(asText(error && error.message) || "A new conversation could not be started.");
      }
    }

    showError(message) {
      setText(this.error, message);
      this.error.hidden = message === "";
    }
  }

  // --- First screen (issue 16.3) ---------------------------------------------------------------

  // How often the page asks whether the team is online: the first agent to open the inbox shows
  // within this (docs/widget.md).
  const AVAILABILITY_POLL_MS = 20000;

  /**
   * The greeting and suggested questions the server rendered, shown only while the conversation
   * has no message. A suggestion goes out as the customer's own message (`onPick`), after which
   * the first screen stays gone.
   */
  class FirstScreen {
    constructor(root, { onPick }) {
      this.section = root.querySelector(".first-screen");
      this.dismissed = false;
      if (!this.section) return;
      this.section.addEventListener("click", (event) => {
        const button = event.target.closest(".first-screen__suggestion");
        if (!button || button.disabled) return;
        this.dismiss();
        onPick(button.textContent.trim());
      });
    }

    update(empty) {
      if (this.section) this.section.hidden = this.dismissed || !empty;
    }

    dismiss() {
      this.dismissed = true;
      this.update(false);
    }
  }

  /** Keeps "Our team is online / away" fresh: GET the availability URL while the page is visible. */
  class Availability {
    constructor(root, url) {
      this.url = url;
      this.lines = Array.from(root.querySelectorAll("[data-team-availability]"));
      if (!url || this.lines.length === 0) return;
      setInterval(() => this.refresh(), AVAILABILITY_POLL_MS);
      document.addEventListener("visibilitychange", () => this.refresh());
    }

    async refresh() {
      if (document.visibilityState !== "visible") return;
      try {
        const response = await fetch(this.url, { headers: { Accept: "application/json" } });
        if (!response.ok) return;
        this.apply(await response.json());
      } catch (_error) {
        // Offline: the line keeps its last known state until the next poll.
      }
    }

    apply(data) {
      const text = asText(data && data.text).trim();
      if (!text) return;
      for (const line of this.lines) {
        setText(line, text);
        line.dataset.online = String(data.online === true);
        line.dataset.away = String(data.away === true);
      }
    }
  }

  function socketUrl(path) {
    return (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + path;
  }

  const STATUS_TEXT = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    closed: "Chat unavailable",
  };
  const OFFLINE_TEXT = "You're offline — we'll send it when you're back";

  /**
   * Messages to the loader (widget.js) in the host page, only to the host's origin the server
   * checked: "support-bot:close" (Esc) and "support-bot:new-message" (for its unread badge).
   * The loader says "support-bot:widget" {open} back. docs/widget.md#the-frame-and-the-host-page.
   */
  function tellHost(site, message) {
    if (!site || window.parent === window) return;
    try {
      window.parent.postMessage(message, site);
    } catch (_error) {
      // No loader listening: nothing to tell.
    }
  }

  function finalCloseNotice(code, serverMessage) {
    if (code === 4401) return "Your session expired — reload the page";
    if (code === 4403) return serverMessage || "This conversation belongs to someone else.";
    return serverMessage || "This conversation does not exist.";
  }

  function start(root) {
    const config = readConfig(root);
    const statusBox = root.querySelector(".connection-status");
    const offlineBanner = root.querySelector(".offline-banner");
    const typing = root.querySelector(".typing-indicator");
    const log = root.querySelector(".log");
    setText(typing.querySelector(".typing-indicator__text"), `${config.companyName} assistant is typing…`);

    let ready = false; // the server sent the conversation on this socket: frames are welcome
    let typingSuppressed = false;
    let agentTyping = null; // { name, timer } while an agent types
    let refusal = null; // { code, message, timer } of an error that announces a final close
    let offline = false; // the offline banner shows: new messages wait ("queued")
    let offlineTimer = null;
    let snapshots = 0; // conversation frames so far: the first one is history, not news
    const announced = new Set(); // team and bot messages the host page was told about (or saw)

    const scroll = new ScrollKeeper(log, root.querySelector(".jump-latest"));
    const view = new LogView(log, {
      companyName: config.companyName,
      onRetry: (message) => {
        conversation.retry(message, offline ? "queued" : "sending");
        if (ready) sendMessage(message);
      },
      onConnect: () => handoff.askForPerson(),
      onNewContent: () => scroll.toBottom(),
      fileHeaders: config.embedded ? visitorHeaders : null,
    });
    const socket = new Socket(socketUrl(config.wsPath), {
      onFrame: handleFrame,
      onClose: handleClose,
      // The widget's socket (/ws/widget/) first says who the visitor is and which site
      // embeds it.
      onOpen: config.embedded
        ? () => {
          socket.send({
            type: "auth",
            token: visitorToken.get(),
            conversation: config.conversationId,
            site: config.site,
            ...identityField(visitorToken.takeIdentity()),
          });
          socket.send(startContext);
        }
        : () => socket.send(startContext),
    });
    const conversation = new Conversation({ view, send: (frame) => ready && socket.send(frame) });
    const handoff = new Handoff(root, {
      send: (frame) => ready && socket.send(frame),
      onNewContent: () => scroll.toBottom(),
    });
    new History(root, config);
    new Availability(root, config.availabilityUrl);
    const firstScreen = new FirstScreen(root, { onPick: sendText });
    const composer = new Composer(root.querySelector(".composer"), {
      maxChars: config.maxChars,
      maxFiles: config.attachmentMaxFiles,
      maxBytes: config.attachmentMaxBytes,
      onAttach: sendFiles,
      onSend: sendText,
    });

    function sendText(text) {
      const message = conversation.addOutgoing(text, offline ? "queued" : "sending");
      firstScreen.dismiss();
      scroll.toBottom({ force: true });
      // Offline, it waits in the outbox and goes out after the next conversation frame.
      if (ready) sendMessage(message);
    }

    function sendMessage(message) {
      if (socket.send({ type: "message", client_id: message.clientId, text: message.text })) {
        conversation.setDelivery(message, "sending");
      }
    }

    /** The offline banner and the status "Offline"; messages typed meanwhile wait. */
    function setOffline(shown) {
      if (offlineTimer !== null) clearTimeout(offlineTimer);
      offlineTimer = null;
      offline = shown;
      setText(offlineBanner, shown ? OFFLINE_TEXT : "");
      if (!shown) return;
      setStatus("offline");
      conversation.queueUnsent();
    }

    /** A team or bot message the host page's launcher may count as unread (widget only). */
    function announce(turnId, author) {
      if (!config.embedded || announced.has(turnId)) return;
      announced.add(turnId);
      if (ready || snapshots > 1) {
        tellHost(config.site, { type: "support-bot:new-message", author });
      }
    }

    // --- Attachments (docs/attachments.md): uploaded over HTTP, then shown like any turn. ---
    let uploadClientId = null; // kept while an upload's fate is unknown: a retry is stored once

    /** The widget fetches files with its visitor token (its iframe has no cookie). */
    function visitorHeaders() {
      return config.embedded ? { "X-Support-Bot-Visitor": visitorToken.get() } : {};
    }

    async function sendFiles(text, files, onProgress) {
      uploadClientId = uploadClientId || newClientId();
      const form = new FormData();
      form.append("conversation", config.conversationId);
      form.append("client_id", uploadClientId);
      form.append("text", text);
      for (const file of files) form.append("file", file, file.name);
      const result = await window.SupportBotAttachments.upload(config.attachmentUploadUrl, form, {
        headers: { "X-CSRFToken": config.csrfToken, ...visitorHeaders() },
        onProgress,
      });
      if (result.status !== 0) uploadClientId = null; // the server answered: stored or refused
      if (!result.ok) {
        const error = result.data && result.data.error;
        return asText(error && error.message) || "Your file could not be sent. Please try again.";
      }
      conversation.applyTurn(result.data.turn);
      firstScreen.dismiss();
      if (result.data.ack && typeof result.data.ack === "object") conversation.applyAck(result.data.ack);
      typingSuppressed = false;
      updateTyping();
      scroll.toBottom({ force: true });
      return "";
    }

    function setStatus(state) {
      statusBox.dataset.state = state;
      setText(statusBox, STATUS_TEXT[state]);
    }

    function updateTyping() {
      const botTyping = !typingSuppressed && conversation.hasActiveReply();
      const visible = ready && (botTyping || agentTyping !== null);
      const text = !botTyping && agentTyping
        ? `${agentTyping.name || "Someone from our team"} is typing…`
        : `${config.companyName} assistant is typing…`;
      setText(typing.querySelector(".typing-indicator__text"), text);
      setAttr(typing, "data-author", visible ? (botTyping ? "bot" : "agent") : null);
      if (typing.hidden === visible) {
        typing.hidden = !visible;
        if (visible) scroll.toBottom();
      }
    }

    function setAgentTyping(frame) {
      if (agentTyping) clearTimeout(agentTyping.timer);
      agentTyping = null;
      if (frame && frame.active === true) {
        const timer = setTimeout(() => {
          agentTyping = null;
          updateTyping();
        }, AGENT_TYPING_TIMEOUT_MS);
        agentTyping = { name: asText(frame.name).trim(), timer };
      }
    }

    function handleFrame(frame) {
      switch (frame.type) {
        case "session":
          // The widget's visitor token to keep, and the conversation this socket opened.
          if (config.embedded && typeof frame.token === "string") {
            visitorToken.set(frame.token, config.site);
          }
          if (typeof frame.conversation_id === "string") config.conversationId = frame.conversation_id;
          if (frame.identity_error) {
            // For the site's developer, not the customer (docs/widget.md, "Identify").
            console.warn("Support Bot: identify refused:", asText(frame.identity_error.code));
          }
          break;
        case "conversation":
          onConversation(frame);
          break;
        case "ack":
          conversation.applyAck(frame);
          if (isPositiveInt(frame.reply_id)) typingSuppressed = false;
          break;
        case "turn":
          conversation.applyTurn(frame.turn);
          if (isValidTurn(frame.turn) && frame.turn.author === "agent") announce(frame.turn.id, "agent");
          if (frame.turn && frame.turn.author === "agent") setAgentTyping(null);
          break;
        case "conversation.state":
          handoff.apply(frame);
          break;
        case "typing":
          if (frame.author === "agent") setAgentTyping(frame);
          break;
        case "reply.start":
        case "reply.waiting":
        case "reply.delta":
        case "reply.done":
          conversation.applyReplyFrame(frame);
          if (frame.type !== "reply.done") typingSuppressed = false;
          else if (frame.status === "done" && isPositiveInt(frame.reply_id)) announce(frame.reply_id, "bot");
          break;
        case "error":
          onError(frame);
          break;
        default:
          break; // pong, and frame types newer than this page
      }
      updateTyping();
      // The first screen shows once the server said the conversation is empty, until it isn't.
      if (ready) firstScreen.update(log.childElementCount === 0);
    }

    function onConversation(frame) {
      // What came while the page was away (a reconnect's snapshot) is news for the launcher.
      snapshots += 1;
      for (const turn of Array.isArray(frame.turns) ? frame.turns : []) {
        const finished = turn && (turn.author === "agent" || (turn.author === "bot" && turn.status === "done"));
        if (finished && isPositiveInt(turn.id)) announce(turn.id, turn.author);
      }
      ready = true;
      typingSuppressed = false;
      socket.markHealthy();
      setOffline(false);
      setStatus("connected");
      handoff.setOnline(true);
      if (frame.state && typeof frame.state === "object") handoff.apply(frame.state);
      for (const resume of conversation.applySnapshot(frame.turns)) socket.send(resume);
      // Anything not acknowledged yet goes (again): the server de-duplicates by client_id.
      for (const message of conversation.unsent()) sendMessage(message);
    }

    function onError(frame) {
      if (handoff.applyError(frame)) return;
      typingSuppressed = true;
      if (conversation.applyMessageError(frame)) return;
      const message = asText(frame.message) || "Something went wrong.";
      if (REFUSAL_CODES.has(frame.code)) {
        // The close right behind it says it better; show this one only if no close comes.
        if (refusal) clearTimeout(refusal.timer);
        refusal = {
          code: frame.code,
          message,
          timer: setTimeout(() => {
            conversation.addNotice(message, asText(frame.code) || null);
            refusal = null;
          }, REFUSAL_GRACE_MS),
        };
        return;
      }
      conversation.addNotice(message, asText(frame.code) || null);
    }

    function handleClose(code, final) {
      ready = false;
      handoff.setOnline(false);
      setAgentTyping(null);
      conversation.suspend();
      const pending = refusal;
      if (pending) clearTimeout(pending.timer);
      refusal = null;
      if (final) {
        // A widget token refused (forged, expired): the next load starts a fresh visitor.
        if (config.embedded && code === 4401) visitorToken.clear(config.site);
        setOffline(false);
        setStatus("closed");
        const notice = finalCloseNotice(code, pending && pending.message);
        conversation.addNotice(notice, `close_${code}`);
        // The notice in the log explains why; repeating it here would only say it twice.
        composer.disable();
        firstScreen.dismiss(); // nothing can be sent any more
      } else {
        if (pending) conversation.addNotice(pending.message, pending.code);
        setStatus("reconnecting");
        // Given up on (no pong, the browser offline): offline now. Otherwise (a server
        // restart) only if reconnecting takes a while.
        if (code === CLOSE_ABANDONED || socket.offline) setOffline(true);
        else if (!offline && offlineTimer === null) {
          offlineTimer = setTimeout(() => setOffline(true), OFFLINE_GRACE_MS);
        }
      }
      if (offline) setStatus("offline");
      updateTyping();
    }

    window.addEventListener("offline", () => {
      socket.setOffline(true);
      setOffline(true);
    });
    window.addEventListener("online", () => socket.setOffline(false));
    let widgetOpen = true; // the loader says when the widget is closed (support-bot:widget)
    const relax = () => socket.setRelaxed(document.visibilityState === "hidden" || !widgetOpen);
    document.addEventListener("visibilitychange", () => {
      relax();
      if (document.visibilityState === "visible") socket.reconnectNow();
    });
    relax();
    if (config.embedded) {
      // Esc anywhere in the widget closes it (the loader returns focus to its button).
      document.addEventListener("keydown", (event) => {
        if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
        tellHost(config.site, { type: "support-bot:close" });
      });
      window.addEventListener("message", (event) => {
        if (event.source !== window.parent || event.origin !== config.site) return;
        const data = event.data;
        if (data && data.type === "support-bot:widget" && typeof data.open === "boolean") {
          widgetOpen = data.open;
          relax();
        }
      });
    }

    setStatus("connecting");
    if (socket.offline) setOffline(true);
    socket.connect();
    return { conversation, socket, composer, handoff };
  }

  const root = document.getElementById("chat");
  if (root) start(root);
})();
