/*
 * Collision detection on the conversation page (issue 17.3): "Dana is viewing", "Dana is
 * typing a reply…" for the other agents in this conversation. The server sends `viewers` and
 * `agent.typing` frames to the agents watching it only (inbox/events.py); conversation.js
 * re-dispatches them as `agent:frame`. It also tells the others when I type a note (the reply
 * box's typing is sent by conversation.js), through conversation.js's `agent:send`.
 */
"use strict";

(() => {
  const root = document.getElementById("agent-conversation");
  if (!root) return;
  const conversationId = root.dataset.conversationId;
  const meId = Number(root.dataset.meId);
  const TYPING_SHOWN_MS = 8000; // the typist repeats every few seconds while typing
  const TYPING_REPEAT_MS = 3000;
  const TYPING_IDLE_MS = 4000;

  const line = document.createElement("p");
  line.className = "collision";
  line.setAttribute("role", "status");
  line.hidden = true;
  root.querySelector(".actions").before(line);

  let viewing = []; // [{id, name}] other agents
  const typing = new Map(); // agent id -> {name, where, timer}

  function render() {
    const parts = [];
    for (const [, who] of typing) parts.push(`${who.name} is typing ${who.where === "note" ? "a note" : "a reply"}…`);
    for (const agent of viewing) if (!typing.has(agent.id)) parts.push(`${agent.name} is viewing`);
    line.textContent = parts.join(" · ");
    line.hidden = parts.length === 0;
  }

  function stopTyping(id) {
    const who = typing.get(id);
    if (who) clearTimeout(who.timer);
    typing.delete(id);
  }

  document.addEventListener("agent:frame", (event) => {
    const frame = event.detail;
    if (!frame || frame.conversation_id !== conversationId) return;
    if (frame.type === "viewers" && Array.isArray(frame.viewers)) {
      viewing = frame.viewers.filter((agent) => agent && agent.id !== meId && typeof agent.name === "string");
      const still = new Set(viewing.map((agent) => agent.id));
      for (const id of Array.from(typing.keys())) if (!still.has(id)) stopTyping(id);
      render();
    } else if (frame.type === "agent.typing" && frame.agent && frame.agent.id !== meId) {
      const id = frame.agent.id;
      stopTyping(id);
      if (frame.active) {
        const timer = setTimeout(() => {
          typing.delete(id);
          render();
        }, TYPING_SHOWN_MS);
        typing.set(id, { name: String(frame.agent.name || "An agent"), where: frame.where, timer });
      }
      render();
    }
  });

  // --- My note's typing ------------------------------------------------------------------------------

  const note = root.querySelector(".note-form__input");
  let sentAt = 0;
  let idle = null;
  function send(active) {
    document.dispatchEvent(
      new CustomEvent("agent:send", { detail: { type: "typing", conversation_id: conversationId, active, where: "note" } }),
    );
  }
  function noteTyping(active) {
    clearTimeout(idle);
    if (active) {
      if (Date.now() - sentAt > TYPING_REPEAT_MS) {
        sentAt = Date.now();
        send(true);
      }
      idle = setTimeout(() => noteTyping(false), TYPING_IDLE_MS);
    } else if (sentAt) {
      sentAt = 0;
      send(false);
    }
  }
  if (note) {
    note.addEventListener("input", () => noteTyping(Boolean(note.value.trim())));
    note.form.addEventListener("submit", () => noteTyping(false));
  }
})();
