/*
 * The agent inbox: one list in the server's order (waiting longest first, then latest
 * activity), read a page at a time from /agent/api/inbox/ with the chosen view, filters and
 * search, and kept live from /ws/inbox/.
 *
 * Live rows: an `inbox.row` frame is the same for every agent, so it can't say whether the row
 * matches this agent's search or how many messages this agent hasn't read. The page asks the
 * API for that one conversation with its current filters (?id=…): a row back is inserted or
 * updated in place, none removes it. One small indexed query per change, coalesced per row.
 */
"use strict";

(() => {
  const { el, asText, formatWaiting, connect } = window.AgentCommon;
  const root = document.getElementById("inbox");
  if (!root) return;
  const api = root.dataset.api;
  const list = root.querySelector(".inbox-list");
  const more = root.querySelector(".inbox-more");
  const empty = root.querySelector(".inbox-empty");
  const errorNode = root.querySelector(".inbox-error");
  const form = root.querySelector(".inbox-filters");
  const rows = new Map(); // id -> row
  const items = new Map(); // id -> <li>
  let view = "all";
  let nextCursor = null;
  let generation = 0; // a newer listing makes older answers stale
  const REASONS = {
    customer_request: "asked for a person",
    abstained: "bot couldn't answer",
    angry: "customer upset",
    keyword: "keyword",
    agent: "taken over",
  };

  function params(extra) {
    const query = new URLSearchParams();
    query.set("view", view);
    for (const [name, value] of new FormData(form)) {
      if (typeof value === "string" && value.trim()) query.set(name, value.trim());
    }
    for (const [name, value] of Object.entries(extra || {})) query.set(name, value);
    return query;
  }

  async function fetchPage(extra) {
    const response = await fetch(`${api}?${params(extra)}`, { credentials: "same-origin" });
    let data = {};
    try {
      data = await response.json();
    } catch (_error) {
      data = { error: `The server answered ${response.status}.` };
    }
    if (!response.ok) throw new Error(asText(data.error) || "The inbox could not be read.");
    return data;
  }

  function showError(message) {
    errorNode.textContent = message || "";
    errorNode.hidden = !message;
  }

  // The server's order, for rows that arrive live: waiting (a person is expected) first,
  // longest first; then the latest activity first.
  function sortKey(row) {
    if (row.status === "pending" && row.waiting_since) return [0, new Date(row.waiting_since).getTime()];
    return [1, -(new Date(row.last_message_at || row.created || 0).getTime() || 0)];
  }

  function before(a, b) {
    const [ka, kb] = [sortKey(a), sortKey(b)];
    return ka[0] !== kb[0] ? ka[0] < kb[0] : ka[1] < kb[1];
  }

  function build() {
    const li = el("li", "inbox-row");
    const link = el("a", "inbox-row__link");
    const top = el("span", "inbox-row__top");
    top.append(
      el("span", "inbox-row__customer"),
      el("span", "inbox-row__unread"),
      el("span", "inbox-row__waiting"),
    );
    const meta = el("span", "inbox-row__meta");
    meta.append(
      el("span", "inbox-row__status"),
      el("span", "inbox-row__assignee"),
      el("span", "inbox-row__reason"),
      el("span", "inbox-row__rating"),
    );
    link.append(top, el("span", "inbox-row__preview"), meta, el("span", "inbox-row__labels"));
    li.append(link);
    return li;
  }

  const STATUS_TEXT = { pending: "Pending", open: "With the bot", snoozed: "Snoozed", resolved: "Resolved" };

  function fill(li, row) {
    li.dataset.conversationId = row.id;
    li.dataset.status = row.status;
    li.querySelector(".inbox-row__link").href = `/agent/conversations/${encodeURIComponent(row.id)}/`;
    li.querySelector(".inbox-row__customer").textContent = asText(row.customer);
    const unread = li.querySelector(".inbox-row__unread");
    unread.textContent = row.unread > 0 ? `${row.unread} unread` : "";
    unread.hidden = !(row.unread > 0);
    li.dataset.unread = String(row.unread || 0);
    const waiting = li.querySelector(".inbox-row__waiting");
    waiting.dataset.since = row.waiting_since || "";
    waiting.textContent = row.waiting_since ? `waiting ${formatWaiting(row.waiting_since)}` : "";
    const author = { bot: "Bot", agent: "Agent" }[row.preview_author];
    const preview = asText(row.preview);
    li.querySelector(".inbox-row__preview").textContent = author ? `${author}: ${preview}` : preview;
    li.querySelector(".inbox-row__status").textContent = `${STATUS_TEXT[row.status] || row.status} · `;
    li.querySelector(".inbox-row__assignee").textContent = row.assignee ? `With ${asText(row.assignee.name)}` : "Unassigned";
    li.querySelector(".inbox-row__reason").textContent = row.escalation_reason ? ` · ${REASONS[row.escalation_reason] || row.escalation_reason}` : "";
    li.querySelector(".inbox-row__rating").textContent = Number.isInteger(row.rating) ? ` · rated ${row.rating}/5` : "";
    const chips = li.querySelector(".inbox-row__labels");
    chips.replaceChildren(
      ...(Array.isArray(row.labels) ? row.labels : []).map((label) => {
        const chip = el("span", "label-chip");
        chip.textContent = asText(label.name);
        if (/^#[0-9a-fA-F]{6}$/.test(label.colour || "")) chip.style.setProperty("--label", label.colour);
        return chip;
      }),
    );
  }

  function showEmpty() {
    empty.hidden = items.size > 0;
    more.hidden = !nextCursor;
  }

  /** The row's element, built the first time and filled with the row. */
  function upsert(row) {
    let li = items.get(row.id);
    if (!li) {
      li = build();
      items.set(row.id, li);
    }
    rows.set(row.id, row);
    fill(li, row);
    return li;
  }

  function append(row) {
    list.append(upsert(row));
  }

  /** A live row that matches the view: update it where it belongs among the loaded ones. */
  function place(row) {
    const li = upsert(row);
    let next = null;
    for (const other of list.children) {
      if (other === li) continue;
      const otherRow = rows.get(other.dataset.conversationId);
      if (otherRow && before(row, otherRow)) {
        next = other;
        break;
      }
    }
    // Past the last loaded row while more pages exist: it will come with "Load more".
    if (!next && nextCursor) {
      remove(row.id);
      return;
    }
    if (li.parentElement !== list || li.nextElementSibling !== next) list.insertBefore(li, next);
  }

  function remove(id) {
    items.get(id)?.remove();
    items.delete(id);
    rows.delete(id);
  }

  async function load(reset) {
    const mine = reset ? ++generation : generation;
    more.disabled = true;
    try {
      const data = await fetchPage(reset || !nextCursor ? {} : { cursor: nextCursor });
      if (mine !== generation) return;
      if (reset) {
        list.replaceChildren();
        items.clear();
        rows.clear();
      }
      nextCursor = data.next_cursor || null;
      (data.rows || []).forEach(append);
      // The rows read, as the socket's "list" answer would be, for scripts that keep track of
      // what is known (notify.js: only changes after this are news).
      document.dispatchEvent(
        new CustomEvent("agent:frame", { detail: { type: "inbox", rows: data.rows || [], next_cursor: nextCursor } }),
      );
      showError("");
    } catch (error) {
      if (mine === generation) showError(error.message);
    } finally {
      more.disabled = false;
      showEmpty();
    }
  }

  // Live changes, coalesced: many frames for one conversation make one request.
  const due = new Set();
  let flushing = null;
  function refresh(id) {
    due.add(id);
    if (!flushing) flushing = setTimeout(flush, 150);
  }
  async function flush() {
    flushing = null;
    const ids = [...due];
    due.clear();
    const mine = generation;
    for (const id of ids) {
      try {
        const data = await fetchPage({ id, limit: "1" });
        if (mine !== generation) return;
        const row = (data.rows || [])[0];
        if (row) place(row);
        else remove(id);
      } catch (_error) {
        // Left as it was; the next change or listing corrects it.
      }
    }
    showEmpty();
  }

  for (const button of root.querySelectorAll(".inbox-view")) {
    button.addEventListener("click", () => {
      view = button.dataset.view;
      for (const other of root.querySelectorAll(".inbox-view")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      load(true);
    });
  }
  let typing = null;
  form.addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => load(true), event.target.name === "q" ? 300 : 0);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));

  connect({
    path: root.dataset.wsPath,
    statusNode: root.querySelector(".connection-status"),
    // Listed after the socket is open: no change falls between the list and the live rows.
    onOpen: () => load(true),
    onFrame: (frame) => {
      // Other parts of the workspace (notifications) listen to every frame.
      document.dispatchEvent(new CustomEvent("agent:frame", { detail: frame }));
      if (frame.type === "inbox.row" && frame.row && typeof frame.row.id === "string") {
        refresh(frame.row.id);
      }
    },
  });

  // Waiting times move on by themselves.
  setInterval(() => {
    for (const node of root.querySelectorAll(".inbox-row__waiting")) {
      if (node.dataset.since) node.textContent = `waiting ${formatWaiting(node.dataset.since)}`;
    }
  }, 15000);
})();
