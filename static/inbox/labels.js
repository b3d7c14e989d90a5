/*
 * Labels on the conversation page: the conversation's labels as chips (each with a remove
 * button) and a picker of the operators' labels to add one. Agents pick existing labels
 * only; operators create them in the admin. Changes by other agents arrive as `inbox.row`
 * frames (document "agent:frame" events) carrying the row's labels.
 */
"use strict";

(() => {
  const { el, asText, post } = window.AgentCommon;
  const root = document.getElementById("agent-conversation");
  const box = root && root.querySelector(".labels");
  if (!box) return;
  const id = root.dataset.conversationId;
  const csrf = root.dataset.csrfToken;
  const url = `/agent/api/conversations/${encodeURIComponent(id)}/labels/`;
  let all = [];
  let mine = [];

  const title = el("h2");
  title.id = "labels-title";
  title.textContent = "Labels";
  const chips = el("ul", "labels__list");
  chips.setAttribute("aria-label", "Labels on this conversation");
  const add = el("form", "labels__add");
  const picker = el("select");
  picker.setAttribute("aria-label", "Label to add");
  const addButton = el("button");
  addButton.type = "submit";
  addButton.textContent = "Add label";
  add.append(picker, addButton);
  const error = el("p", "labels__error");
  error.setAttribute("role", "alert");
  error.hidden = true;
  box.append(title, chips, add, error);

  function colour(chip, label) {
    if (/^#[0-9a-fA-F]{6}$/.test(label.colour || "")) chip.style.setProperty("--label", label.colour);
  }

  function draw() {
    chips.replaceChildren(
      ...mine.map((label) => {
        const chip = el("li", "label-chip");
        colour(chip, label);
        chip.append(asText(label.name));
        const remove = el("button");
        remove.type = "button";
        remove.textContent = "×";
        remove.setAttribute("aria-label", `Remove label ${asText(label.name)}`);
        remove.addEventListener("click", () => change("DELETE", label.id));
        chip.append(remove);
        return chip;
      }),
    );
    const have = new Set(mine.map((label) => label.id));
    const left = all.filter((label) => !have.has(label.id));
    picker.replaceChildren(
      ...left.map((label) => {
        const option = el("option");
        option.value = String(label.id);
        option.textContent = asText(label.name);
        return option;
      }),
    );
    add.hidden = left.length === 0;
  }

  function showError(message) {
    error.textContent = message || "";
    error.hidden = !message;
  }

  async function change(method, labelId) {
    let result;
    if (method === "POST") {
      result = await post(url, { label: labelId }, csrf);
    } else {
      try {
        const response = await fetch(url, {
          method,
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
          body: JSON.stringify({ label: labelId }),
        });
        result = { ok: response.ok, data: await response.json() };
      } catch (_error) {
        result = { ok: false, data: { error: "The server can't be reached. Try again." } };
      }
    }
    if (result.ok && Array.isArray(result.data.labels)) {
      mine = result.data.labels;
      showError("");
      draw();
    } else {
      showError(asText(result.data.error) || "The label could not be changed.");
    }
  }

  add.addEventListener("submit", (event) => {
    event.preventDefault();
    if (picker.value) change("POST", Number(picker.value));
  });

  document.addEventListener("agent:frame", (event) => {
    const frame = event.detail || {};
    if (frame.type === "inbox.row" && frame.row && frame.row.id === id && Array.isArray(frame.row.labels)) {
      mine = frame.row.labels;
      draw();
    }
  });

  async function start() {
    try {
      const [every, own] = await Promise.all(
        [box.dataset.labelsApi, url].map((u) => fetch(u, { credentials: "same-origin" }).then((r) => r.json())),
      );
      all = Array.isArray(every.labels) ? every.labels : [];
      mine = Array.isArray(own.labels) ? own.labels : [];
      draw();
    } catch (_error) {
      showError("The labels could not be read.");
    }
  }
  start();
})();
