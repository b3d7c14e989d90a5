/* The agent inbox: conversations grouped by status, updated live from /ws/inbox/. */
"use strict";

(() => {
  const { el, asText, formatWaiting, connect } = window.AgentCommon;
  const root = document.getElementById("inbox");
  if (!root) return;
  const STATUSES = ["pending", "open", "snoozed", "resolved"];
  const rows = new Map(); // id -> row
  const items = new Map(); // id -> <li>
  const REASONS = {
    customer_request: "asked for a person",
    abstained: "bot couldn't answer",
    angry: "customer upset",
    keyword: "keyword",
    agent: "taken over",
  };

  function sortKey(row) {
    if (row.status === "resolved") return -(new Date(row.resolved_at || row.last_message_at || 0).getTime() || 0);
    // Longest waiting first; not waiting: latest activity first, after the waiting ones.
    if (row.waiting_since) return new Date(row.waiting_since).getTime();
    return 1e15 - (new Date(row.last_message_at || row.created || 0).getTime() || 0);
  }

  function build(row) {
    const li = el("li", "inbox-row");
    const link = el("a", "inbox-row__link");
    link.href = `/agent/conversations/${encodeURIComponent(row.id)}/`;
    const top = el("span", "inbox-row__top");
    top.append(
      el("span", "inbox-row__customer"),
      el("span", "inbox-row__unread"),
      el("span", "inbox-row__waiting"),
    );
    const preview = el("span", "inbox-row__preview");
    const meta = el("span", "inbox-row__meta");
    meta.append(el("span", "inbox-row__assignee"), el("span", "inbox-row__reason"), el("span", "inbox-row__rating"));
    link.append(top, preview, meta);
    li.append(link);
    return li;
  }

  function fill(li, row) {
    li.dataset.conversationId = row.id;
    li.dataset.status = row.status;
    li.querySelector(".inbox-row__customer").textContent = asText(row.customer);
    const unread = li.querySelector(".inbox-row__unread");
    unread.textContent = row.unread > 0 ? `${row.unread} unread` : "";
    unread.hidden = !(row.unread > 0);
    li.dataset.unread = String(row.unread || 0);
    const waiting = li.querySelector(".inbox-row__waiting");
    waiting.dataset.since = row.waiting_since || "";
    waiting.textContent = row.waiting_since ? `waiting ${formatWaiting(row.waiting_since)}` : "";
    const label = { bot: "Bot", agent: "Agent" }[row.preview_author];
    const preview = asText(row.preview);
    li.querySelector(".inbox-row__preview").textContent = preview ? (label ? `${label}: ${preview}` : preview) : "No messages yet";
    li.querySelector(".inbox-row__assignee").textContent = row.assignee ? `With ${asText(row.assignee.name)}` : "Unassigned";
    li.querySelector(".inbox-row__reason").textContent = row.escalation_reason ? ` · ${REASONS[row.escalation_reason] || row.escalation_reason}` : "";
    const rating = li.querySelector(".inbox-row__rating");
    rating.textContent = Number.isInteger(row.rating) ? ` · rated ${row.rating}/5` : "";
  }

  function place(row) {
    let li = items.get(row.id);
    if (!li) {
      li = build(row);
      items.set(row.id, li);
    }
    fill(li, row);
    const section = root.querySelector(`.inbox-group[data-status="${row.status}"] .inbox-list`);
    if (!section) return;
    const key = sortKey(row);
    let before = null;
    for (const other of section.children) {
      if (other === li) continue;
      const otherRow = rows.get(other.dataset.conversationId);
      if (otherRow && sortKey(otherRow) > key) {
        before = other;
        break;
      }
    }
    if (li.parentElement !== section || li.nextElementSibling !== before) section.insertBefore(li, before);
  }

  function counts() {
    for (const status of STATUSES) {
      const group = root.querySelector(`.inbox-group[data-status="${status}"]`);
      if (!group) continue;
      const n = group.querySelectorAll(".inbox-row").length;
      group.querySelector(".inbox-group__count").textContent = String(n);
      group.querySelector(".inbox-empty").hidden = n > 0;
    }
  }

  function apply(row) {
    if (!row || typeof row.id !== "string" || !STATUSES.includes(row.status)) return;
    rows.set(row.id, row);
    place(row);
    counts();
  }

  const socket = connect({
    path: root.dataset.wsPath,
    statusNode: root.querySelector(".connection-status"),
    onOpen: () => socket.send({ type: "list" }),
    onFrame: (frame) => {
      document.dispatchEvent(new CustomEvent("agent:frame", { detail: frame })); // notify.js
      if (frame.type === "inbox" && Array.isArray(frame.rows)) {
        for (const li of items.values()) li.remove();
        items.clear();
        rows.clear();
        frame.rows.forEach(apply);
        counts();
      } else if (frame.type === "inbox.row") {
        apply(frame.row);
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
