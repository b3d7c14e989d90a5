/*
 * One conversation for an agent: the live transcript (the bot's replies stream in by seq),
 * internal notes, the reply box with canned responses, actions and AI assist. Actions are
 * JSON POSTs; live updates come over /ws/inbox/ after a "watch". The bot's and the team's
 * messages and the notes are Markdown, rendered by static/common/markdown.js (loaded first).
 */
"use strict";

(() => {
  const { el, asText, formatTime, connect, post } = window.AgentCommon;
  const root = document.getElementById("agent-conversation");
  if (!root) return;

  const conversationId = root.dataset.conversationId;
  const meId = Number(root.dataset.meId);
  const csrf = root.dataset.csrfToken;
  const maxChars = Number(root.dataset.maxChars) || 4000;
  const companyName = root.dataset.companyName || "Support";
  const api = (action) => `/agent/api/conversations/${encodeURIComponent(conversationId)}/${action}/`;

  const log = root.querySelector('.transcript [role="log"]');
  const typingNode = root.querySelector(".typing-indicator");
  const stateNode = root.querySelector(".conversation-state");
  const titleNode = root.querySelector(".conversation-title");
  const actionError = root.querySelector(".action-error");
  const composer = root.querySelector(".composer");
  const input = root.querySelector(".composer__input");
  const composerError = root.querySelector(".composer-error");
  const picker = root.querySelector(".canned");
  const summaryNode = root.querySelector(".assist__summary");
  const assistStatus = root.querySelector(".assist__status");
  const noteForm = root.querySelector(".note-form");
  const noteInput = root.querySelector(".note-form__input");

  const ACTIVE = new Set(["queued", "streaming"]);
  const MARKDOWN_AUTHORS = new Set(["bot", "agent", "note"]);
  const GAP_WAIT_MS = 1000;
  const STALL_WAIT_MS = 5000;
  const TYPING_REPEAT_MS = 3000;
  const TYPING_IDLE_MS = 4000;

  let row = null;
  const nodes = new Map(); // "turn:<id>" | "note:<id>" -> { root, text, ... }
  const replies = new Map(); // reply id -> { lastSeq, buffer, finished, gapTimer, stallTimer }

  // --- Transcript -------------------------------------------------------------------------------

  function authorLabel(author, name) {
    if (author === "customer") return row ? asText(row.customer) || "Customer" : "Customer";
    if (author === "bot") return `${companyName} assistant`;
    if (author === "agent") return name || "Agent";
    if (author === "note") return name ? `Note by ${name}` : "Note";
    return "";
  }

  function place(node, created) {
    node.dataset.created = created;
    const time = new Date(created).getTime() || Date.now();
    let before = null;
    for (let child = log.lastElementChild; child; child = child.previousElementSibling) {
      if (child === node) continue;
      const other = new Date(child.dataset.created).getTime();
      if (other > time) before = child;
      else break;
    }
    if (node.parentElement !== log || node.nextElementSibling !== before) log.insertBefore(node, before);
  }

  function entry(key, author, created) {
    let parts = nodes.get(key);
    if (!parts) {
      const node = el("div", `message message--${author}`);
      node.setAttribute("data-author", author);
      parts = { root: node, author: null, text: el("div", "text"), time: null, raw: "", markdown: null };
      if (MARKDOWN_AUTHORS.has(author)) {
        parts.markdown = window.ReplyMarkdown.live(parts.text, { onRender: scrollDown });
      }
      if (author !== "system") {
        parts.author = el("p", "message__author");
        node.append(parts.author);
      }
      node.append(parts.text);
      if (author !== "system") {
        parts.time = el("time", "message__time");
        node.append(parts.time);
      }
      nodes.set(key, parts);
      place(node, created || new Date().toISOString());
    }
    return parts;
  }

  function fillTime(parts, created) {
    if (!parts.time || !created) return;
    parts.time.dateTime = created;
    parts.time.textContent = formatTime(created);
  }

  /** A withdrawn reply (the conversation went to a person before the bot started it) was
   * never written: finish it and drop its entry, if one was made. */
  function withdraw(id) {
    const reply = replyState(id);
    reply.finished = true;
    clearTimers(reply);
    const parts = nodes.get(`turn:${id}`);
    if (parts) {
      parts.root.remove();
      nodes.delete(`turn:${id}`);
    }
  }

  function applyTurn(turn) {
    if (!turn || !Number.isInteger(turn.id) || typeof turn.author !== "string") return;
    if (turn.author === "bot" && turn.status === "withdrawn") {
      withdraw(turn.id);
      return;
    }
    const author = ["customer", "bot", "agent", "system"].includes(turn.author) ? turn.author : "system";
    const parts = entry(`turn:${turn.id}`, author, turn.created);
    parts.root.dataset.turnId = String(turn.id);
    if (parts.author) parts.author.textContent = authorLabel(author, asText(turn.author_name));
    fillTime(parts, turn.created);
    if (author === "bot") {
      const reply = replyState(turn.id);
      const status = turn.status || "done";
      if (!ACTIVE.has(status)) {
        reply.finished = true;
        clearTimers(reply);
        setText(parts, asText(turn.text), status);
      } else if (reply.lastSeq === 0) {
        setText(parts, asText(turn.text), status);
        watchStall(turn.id);
      }
    } else {
      setText(parts, asText(turn.text), null);
    }
    window.SupportBotAttachments.showUnder(parts, turn.attachments);
    if (author === "customer") markReadSoon();
  }

  /** A message's text: Markdown, rendered safely (static/common/markdown.js), for the bot, the
   * team and notes, at most once per animation frame while a reply streams; the customer's
   * words as plain text, exactly as written. */
  function setText(parts, text, status) {
    parts.raw = text;
    if (parts.markdown) parts.markdown.show(text, { streaming: Boolean(status && ACTIVE.has(status)) });
    else if (parts.text.textContent !== text) parts.text.textContent = text;
    if (status) parts.root.dataset.status = status;
    else delete parts.root.dataset.status;
    if (status && ACTIVE.has(status)) parts.root.setAttribute("aria-busy", "true");
    else parts.root.removeAttribute("aria-busy");
    scrollDown();
  }

  function applyNote(note) {
    if (!note || !Number.isInteger(note.id)) return;
    const parts = entry(`note:${note.id}`, "note", note.created);
    parts.author.textContent = authorLabel("note", asText(note.author_name));
    fillTime(parts, note.created);
    setText(parts, asText(note.text), null);
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  // --- Bot reply streams (same rules as the chat page: apply by seq, resume on gaps) --------

  function replyState(id) {
    let reply = replies.get(id);
    if (!reply) {
      reply = { id, lastSeq: 0, buffer: new Map(), finished: false, gapTimer: null, stallTimer: null };
      replies.set(id, reply);
    }
    return reply;
  }

  function clearTimers(reply) {
    clearTimeout(reply.gapTimer);
    clearTimeout(reply.stallTimer);
    reply.gapTimer = reply.stallTimer = null;
  }

  function resume(id) {
    socket.send({ type: "resume", reply_id: id, after: replyState(id).lastSeq });
  }

  function watchStall(id) {
    const reply = replyState(id);
    clearTimeout(reply.stallTimer);
    if (reply.finished) return;
    reply.stallTimer = setTimeout(() => {
      if (!reply.finished) {
        resume(id);
        watchStall(id);
      }
    }, STALL_WAIT_MS);
  }

  function applyReplyFrame(frame) {
    if (!Number.isInteger(frame.reply_id) || !Number.isInteger(frame.seq)) return;
    const reply = replyState(frame.reply_id);
    if (frame.seq <= reply.lastSeq) return;
    // A done frame carries the whole text and a start begins it anew: either may jump a gap.
    if (frame.type === "reply.done" || frame.type === "reply.start" || frame.seq === reply.lastSeq + 1) {
      applyInOrder(reply, frame);
      for (const seq of reply.buffer.keys()) if (seq <= reply.lastSeq) reply.buffer.delete(seq);
    } else {
      reply.buffer.set(frame.seq, frame);
    }
    let next;
    while ((next = reply.buffer.get(reply.lastSeq + 1))) {
      reply.buffer.delete(next.seq);
      applyInOrder(reply, next);
    }
    clearTimeout(reply.gapTimer);
    reply.gapTimer = reply.buffer.size > 0 ? setTimeout(() => resume(reply.id), GAP_WAIT_MS) : null;
  }

  function applyInOrder(reply, frame) {
    reply.lastSeq = frame.seq;
    if (frame.type === "reply.done" && frame.status === "withdrawn") {
      withdraw(reply.id);
      return;
    }
    const parts = entry(`turn:${reply.id}`, "bot", null);
    parts.root.dataset.turnId = String(reply.id);
    if (parts.author) parts.author.textContent = authorLabel("bot");
    if (frame.type !== "reply.waiting") delete parts.text.dataset.waiting;
    if (frame.type === "reply.start") {
      reply.finished = false;
      setText(parts, "", "queued");
    } else if (frame.type === "reply.waiting") {
      // The reply waits for its turn with the model: its "one moment" line, until text comes.
      if (!reply.finished && parts.raw === "") parts.text.dataset.waiting = asText(frame.text);
    } else if (frame.type === "reply.delta") {
      if (reply.finished) return;
      setText(parts, parts.raw + asText(frame.text), "streaming");
    } else if (frame.type === "reply.done") {
      reply.finished = true;
      setText(parts, asText(frame.text), frame.status === "failed" ? "failed" : "done");
    }
    if (reply.finished) clearTimers(reply);
    else watchStall(reply.id);
  }

  // --- State and actions ------------------------------------------------------------------------

  const STATUS_TEXT = {
    open: "With the bot",
    pending: "Waiting for a person",
    snoozed: "Snoozed",
    resolved: "Resolved",
  };

  function applyRow(next) {
    if (!next || next.id !== conversationId) return;
    row = next;
    titleNode.textContent = `Conversation with ${asText(row.customer)}`;
    let text = STATUS_TEXT[row.status] || row.status;
    if (row.status === "pending" && row.assignee) {
      text = row.assignee.id === meId ? "You have this conversation" : `With ${asText(row.assignee.name)}`;
    }
    if (row.status === "snoozed" && row.snoozed_until) text += ` until ${new Date(row.snoozed_until).toLocaleString()}`;
    if (Number.isInteger(row.rating)) text += ` · rated ${row.rating}/5`;
    stateNode.textContent = text;
    root.dataset.status = row.status;
    const mine = row.assignee && row.assignee.id === meId;
    const others = row.assignee && !mine;
    const resolved = row.status === "resolved";
    setEnabled("take-over", !resolved && !mine);
    setEnabled("assign-me", !resolved && !mine);
    setEnabled("assign", !resolved && !others);
    setEnabled("snooze", !others && (row.status === "open" || row.status === "pending"));
    setEnabled("resolve", !resolved && !others);
    setEnabled("reopen", resolved);
    setEnabled("hand-back", !others && (row.status === "pending" || row.status === "snoozed"));
  }

  function setEnabled(action, enabled) {
    const button = root.querySelector(`[data-action="${action}"]`);
    if (!button) return;
    if (action === "snooze" || action === "resolve" || action === "reopen") {
      enabled = enabled && root.dataset.canResolve === "true";
    }
    button.disabled = !enabled;
    if (action === "snooze") {
      root.querySelectorAll("[data-snooze-preset]").forEach((preset) => { preset.disabled = !enabled; });
    }
  }

  function showActionError(text) {
    actionError.textContent = text || "";
    actionError.hidden = !text;
  }

  async function act(action, body) {
    showActionError("");
    const result = await post(api(action), body, csrf);
    if (!result.ok) {
      showActionError(asText(result.data.error) || "That didn't work.");
      return null;
    }
    if (result.data.row) applyRow(result.data.row);
    return result.data;
  }

  root.querySelector(".actions").addEventListener("click", async (event) => {
    const preset = event.target.closest("button[data-snooze-preset]");
    if (preset) {
      await snoozePreset(preset);
      return;
    }
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "take-over" || action === "assign-me") {
      await act("take-over");
    } else if (action === "assign") {
      const select = root.querySelector(".assign-to__select");
      await act("assign", { user_id: Number(select.value) });
    } else if (action === "snooze") {
      const value = root.querySelector(".snooze__until").value;
      if (!value) {
        showActionError("Choose when the conversation should come back.");
        return;
      }
      await act("snooze", { until: new Date(value).toISOString() });
    } else {
      await act(action);
    }
  });

  // Snooze presets (1 hour, tomorrow 9:00, next Monday 9:00, in the browser's time zone), or
  // "Custom…" to show the date-time picker.
  async function snoozePreset(button) {
    const custom = root.querySelector(".snooze__custom");
    if (button.dataset.snoozePreset === "custom") {
      custom.hidden = !custom.hidden;
      button.setAttribute("aria-expanded", String(!custom.hidden));
      if (!custom.hidden) custom.querySelector(".snooze__until").focus();
      return;
    }
    const until = window.SnoozePresets.until(button.dataset.snoozePreset);
    if (until) await act("snooze", { until: until.toISOString() });
  }

  // --- Marking read -----------------------------------------------------------------------------

  let readTimer = null;
  function markReadSoon() {
    if (document.hidden || readTimer) return;
    readTimer = setTimeout(() => {
      readTimer = null;
      post(api("read"), {}, csrf);
    }, 500);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && row && row.unread > 0) markReadSoon();
  });

  // --- Typing -----------------------------------------------------------------------------------

  let typingSentAt = 0;
  let typingIdle = null;
  function typing(active) {
    if (active) {
      const now = Date.now();
      if (now - typingSentAt > TYPING_REPEAT_MS) {
        typingSentAt = now;
        socket.send({ type: "typing", conversation_id: conversationId, active: true });
      }
      clearTimeout(typingIdle);
      typingIdle = setTimeout(() => typing(false), TYPING_IDLE_MS);
    } else if (typingSentAt) {
      typingSentAt = 0;
      clearTimeout(typingIdle);
      socket.send({ type: "typing", conversation_id: conversationId, active: false });
    }
  }

  let othersTypingTimer = null;
  function showTyping(frame) {
    if (frame.author === "agent") return; // the team's typing: collision.js (agent.typing)
    const who = frame.author === "customer" ? "The customer" : frame.author === "agent" ? asText(frame.name) || "An agent" : "";
    if (!who) return;
    clearTimeout(othersTypingTimer);
    typingNode.textContent = frame.active ? `${who} is typing…` : "";
    typingNode.hidden = !frame.active;
    if (frame.active) othersTypingTimer = setTimeout(() => { typingNode.hidden = true; }, 8000);
  }

  // --- Reply box and canned responses -------------------------------------------------------

  let canned = [];
  try {
    canned = JSON.parse(document.getElementById("canned-responses").textContent) || [];
  } catch (_error) {
    canned = [];
  }
  let pickerIndex = 0;

  function cannedToken() {
    const before = input.value.slice(0, input.selectionStart);
    const match = before.match(/(^|\s)\/([A-Za-z0-9_-]*)$/);
    return match ? { query: match[2].toLowerCase(), start: before.length - match[2].length - 1 } : null;
  }

  function matches() {
    const token = cannedToken();
    if (!token) return [];
    return canned.filter((c) => c.shortcut.toLowerCase().startsWith(token.query));
  }

  function renderPicker() {
    const found = matches();
    picker.textContent = "";
    picker.hidden = found.length === 0;
    if (pickerIndex >= found.length) pickerIndex = 0;
    found.forEach((c, i) => {
      const option = el("div", "canned__option");
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", i === pickerIndex ? "true" : "false");
      option.dataset.shortcut = c.shortcut;
      option.append(el("strong", "canned__shortcut", `/${c.shortcut}`), " ", el("span", "canned__title", asText(c.title)));
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();
        insertCanned(c);
      });
      picker.append(option);
    });
  }

  function insertCanned(choice) {
    const token = cannedToken();
    if (!token) return;
    const end = input.selectionStart;
    input.value = input.value.slice(0, token.start) + choice.text + input.value.slice(end);
    const caret = token.start + choice.text.length;
    input.setSelectionRange(caret, caret);
    picker.hidden = true;
    input.focus();
  }

  input.addEventListener("input", () => {
    composerError.hidden = true;
    renderPicker();
    if (input.value.trim()) typing(true);
  });

  input.addEventListener("keydown", (event) => {
    const found = picker.hidden ? [] : matches();
    if (found.length > 0) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        pickerIndex = (pickerIndex + (event.key === "ArrowDown" ? 1 : found.length - 1)) % found.length;
        renderPicker();
        return;
      }
      if (event.key === "Tab" || event.key === "Enter") {
        event.preventDefault();
        insertCanned(found[pickerIndex] || found[0]);
        return;
      }
      if (event.key === "Escape") {
        picker.hidden = true;
        return;
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  // Attachments: chosen files go with the reply, as one multipart POST (docs/attachments.md).
  const files = new window.SupportBotAttachments.Picker(composer, {
    maxFiles: Number(root.dataset.attachmentMaxFiles) || 5,
    maxBytes: Number(root.dataset.attachmentMaxBytes) || 10 * 1024 * 1024,
    onProblem: (problem) => {
      composerError.textContent = problem;
      composerError.hidden = false;
    },
  });

  async function sendWithFiles(text) {
    const form = new FormData();
    form.append("text", text);
    for (const file of files.files()) form.append("file", file, file.name);
    files.setProgress(0);
    const result = await window.SupportBotAttachments.upload(api("attachments"), form, {
      headers: { "X-CSRFToken": csrf },
      onProgress: (fraction) => files.setProgress(fraction),
    });
    files.setProgress(null);
    if (result.status === 0) result.data = { error: "The server can't be reached. Try again." };
    if (result.ok) files.clear();
    return result;
  }

  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    const withFiles = files.files().length > 0;
    if (!text && !withFiles) return;
    if (Array.from(text).length > maxChars) {
      composerError.textContent = `That reply is too long (the limit is ${maxChars} characters).`;
      composerError.hidden = false;
      return;
    }
    const button = composer.querySelector(".composer__send");
    if (button.disabled) return;
    button.disabled = true;
    composerError.hidden = true;
    const result = withFiles ? await sendWithFiles(text) : await post(api("reply"), { text }, csrf);
    button.disabled = false;
    if (!result.ok) {
      composerError.textContent = asText(result.data.error) || "The reply was not sent.";
      composerError.hidden = false;
      return;
    }
    input.value = "";
    typing(false);
    applyTurn(result.data.turn);
  });
  composer.querySelector(".composer__send").disabled = false; // sent by script from here on

  // --- Notes ------------------------------------------------------------------------------------

  if (root.dataset.canNote !== "true") noteForm.hidden = true;
  noteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = noteInput.value.trim();
    if (!text) return;
    const result = await post(api("notes"), { text }, csrf);
    if (!result.ok) {
      showActionError(asText(result.data.error) || "The note was not saved.");
      return;
    }
    noteInput.value = "";
    applyNote(result.data.note);
  });
  noteForm.querySelector("button[type=submit]").disabled = false;

  // --- AI assist --------------------------------------------------------------------------------

  root.querySelector(".assist").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const kind = button.dataset.action === "summary" ? "summary" : "suggest";
    assistStatus.textContent = kind === "summary" ? "Summarising…" : "Drafting a reply…";
    const result = await post(api("assist"), { kind }, csrf);
    if (!result.ok) assistStatus.textContent = asText(result.data.error) || "The assistant is unavailable.";
  });

  // The articles a suggested reply cites ("[1]" in its text), as links for the agent to check.
  function showAssistSources(sources) {
    let list = root.querySelector(".assist__sources");
    if (!list) {
      list = document.createElement("ol");
      list.className = "assist__sources";
      list.setAttribute("aria-label", "Sources of the suggested reply");
      assistStatus.after(list);
    }
    list.replaceChildren();
    for (const source of Array.isArray(sources) ? sources : []) {
      const url = asText(source && source.url);
      const title = asText(source && source.title) || url;
      if (!title) continue;
      const item = document.createElement("li");
      if (Number.isInteger(source.n)) item.value = source.n;
      if (/^https?:\/\//i.test(url)) {
        const link = document.createElement("a");
        link.href = url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.textContent = title;
        item.append(link);
      } else {
        item.textContent = title;
      }
      list.append(item);
    }
    list.hidden = list.children.length === 0;
  }

  function applyAssist(frame) {
    if (frame.conversation_id !== conversationId) return;
    if (frame.kind === "suggest") showAssistSources([]);
    if (frame.error) {
      assistStatus.textContent = asText(frame.error);
      return;
    }
    if (frame.kind === "summary") {
      summaryNode.textContent = asText(frame.text);
      summaryNode.hidden = false;
      assistStatus.textContent = "Summary ready.";
    } else if (frame.kind === "suggest") {
      if (frame.text) {
        // A draft for the agent to edit; nothing is sent until they press Send.
        input.value = asText(frame.text);
        input.focus();
        assistStatus.textContent = "Suggested reply is in the reply box: edit it, then Send.";
        showAssistSources(frame.sources);
      } else {
        assistStatus.textContent = asText(frame.notice) || "No suggestion this time.";
      }
    }
  }

  // --- Socket -----------------------------------------------------------------------------------

  const socket = connect({
    path: root.dataset.wsPath,
    statusNode: root.querySelector(".connection-status"),
    onOpen: () => socket.send({ type: "watch", conversation_id: conversationId }),
    onFrame: (frame) => {
      document.dispatchEvent(new CustomEvent("agent:frame", { detail: frame })); // notify.js, collision.js
      switch (frame.type) {
        case "conversation":
          if (frame.id !== conversationId) return;
          applyRow(frame.row);
          (frame.turns || []).forEach(applyTurn);
          (frame.notes || []).forEach(applyNote);
          for (const turn of frame.turns || []) {
            if (turn.author === "bot" && ACTIVE.has(turn.status)) resume(turn.id);
          }
          markReadSoon();
          break;
        case "turn":
          applyTurn(frame.turn);
          break;
        case "reply.start":
        case "reply.waiting":
        case "reply.delta":
        case "reply.done":
          applyReplyFrame(frame);
          break;
        case "note":
          if (frame.conversation_id === conversationId) applyNote(frame.note);
          break;
        case "inbox.row":
          applyRow(frame.row);
          break;
        case "typing":
          showTyping(frame);
          break;
        case "assist":
          applyAssist(frame);
          break;
        case "error":
          if (frame.code !== "unknown_reply") showActionError(asText(frame.message));
          break;
        default:
          break;
      }
    },
  });
  document.addEventListener("agent:send", (event) => socket.send(event.detail)); // collision.js
})();
