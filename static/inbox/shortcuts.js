/*
 * Keyboard shortcuts on the agent pages (issue 17.3). Inbox: j/k or ↓/↑ move between
 * conversations, Enter opens. Conversation: r reply, n note, e resolve, a assign, s snooze,
 * [ / ] previous/next conversation (in the inbox's order, kept in sessionStorage when the inbox
 * is left). `?` opens the help (a <dialog>; Esc closes it). Nothing fires while typing in a
 * field or with Ctrl/Alt/⌘, so the reply box's "/" canned responses keep working.
 */
"use strict";

(() => {
  const inbox = document.getElementById("inbox");
  const conversation = document.getElementById("agent-conversation");
  const page = inbox || conversation;
  if (!page) return;
  const ORDER_KEY = "supportbot.agent.order";

  const GROUPS = [
    [
      "In the inbox",
      [
        [["j", "↓"], "Next conversation"],
        [["k", "↑"], "Previous conversation"],
        [["Enter"], "Open the selected conversation"],
      ],
    ],
    [
      "In a conversation",
      [
        [["r"], "Write a reply"],
        [["n"], "Write an internal note"],
        [["e"], "Resolve"],
        [["a"], "Assign to an agent"],
        [["s"], "Snooze"],
        [["["], "Previous conversation"],
        [["]"], "Next conversation"],
      ],
    ],
    [
      "Anywhere",
      [
        [["?"], "Show these shortcuts"],
        [["Esc"], "Close this help"],
      ],
    ],
  ];

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- Help dialog ---------------------------------------------------------------------------------

  let help = null;
  function openHelp() {
    if (!help) {
      help = el("dialog", "shortcuts-help");
      help.setAttribute("aria-labelledby", "shortcuts-help-title");
      const title = el("h2", "", "Keyboard shortcuts");
      title.id = "shortcuts-help-title";
      help.append(title);
      for (const [heading, keys] of GROUPS) {
        help.append(el("h3", "", heading));
        const list = el("dl");
        for (const [names, what] of keys) {
          const term = el("dt");
          names.forEach((name, i) => {
            if (i > 0) term.append(" or ");
            term.append(el("kbd", "", name));
          });
          list.append(term, el("dd", "", what));
        }
        help.append(list);
      }
      const close = el("form");
      close.method = "dialog";
      close.append(el("button", "", "Close"));
      help.append(close);
      document.body.append(help);
    }
    if (!help.open) help.showModal();
  }

  const helpButton = document.querySelector(".agent-tools__help");
  if (helpButton) helpButton.addEventListener("click", openHelp);

  // A short line saying why a shortcut did nothing ("No next conversation").
  const status = el("p", "shortcut-status");
  status.setAttribute("role", "status");
  page.querySelector(".agent-header").after(status);
  let statusTimer = null;
  function say(text) {
    status.textContent = text;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { status.textContent = ""; }, 4000);
  }

  // --- Inbox ---------------------------------------------------------------------------------------

  function rows() {
    return Array.from(inbox.querySelectorAll(".inbox-row")).filter((row) => row.getClientRects().length > 0);
  }

  function linkOf(row) {
    return row.matches("a[href]") ? row : row.querySelector("a[href]");
  }

  function saveOrder() {
    const ids = rows().map((row) => row.dataset.conversationId).filter(Boolean);
    try {
      sessionStorage.setItem(ORDER_KEY, JSON.stringify(ids));
    } catch (_error) {
      // no storage: [ and ] say so on the conversation page
    }
  }

  function selected(list) {
    const active = document.activeElement;
    const focused = list.findIndex((row) => row.contains(active));
    return focused >= 0 ? focused : list.findIndex((row) => row.classList.contains("is-selected"));
  }

  function select(list, index) {
    for (const row of list) {
      row.classList.remove("is-selected");
      row.removeAttribute("aria-current");
    }
    const row = list[index];
    row.classList.add("is-selected");
    row.setAttribute("aria-current", "true");
    const link = linkOf(row);
    (link || row).focus();
    row.scrollIntoView({ block: "nearest" });
  }

  function onInboxKey(event) {
    const list = rows();
    const key = event.key;
    if (key === "j" || key === "ArrowDown" || key === "k" || key === "ArrowUp") {
      if (list.length === 0) return false;
      const at = selected(list);
      const step = key === "j" || key === "ArrowDown" ? 1 : -1;
      const next = at < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, at + step));
      select(list, next);
      return true;
    }
    if (key === "Enter") {
      const at = selected(list);
      if (at < 0) return false;
      const link = linkOf(list[at]);
      saveOrder();
      if (link && document.activeElement === link) return false; // the link opens itself
      if (link) window.location.assign(link.href);
      return Boolean(link);
    }
    return false;
  }

  if (inbox) {
    window.addEventListener("pagehide", saveOrder);
    inbox.addEventListener("click", (event) => {
      if (event.target.closest(".inbox-row")) saveOrder();
    });
  }

  // --- Conversation ----------------------------------------------------------------------------------

  function focusField(selector, what) {
    const field = conversation.querySelector(selector);
    if (!field || field.disabled || field.closest("[hidden]")) {
      say(`You can't ${what} here.`);
      return;
    }
    field.focus();
    if (typeof field.showPicker === "function" && field.matches("select, input[type=datetime-local], input[type=date]")) {
      try {
        field.showPicker();
      } catch (_error) {
        // not allowed here: it stays focused
      }
    }
  }

  function press(action, what) {
    const button = conversation.querySelector(`button[data-action="${action}"]`);
    if (!button || button.disabled) {
      say(`You can't ${what} this conversation now.`);
      return;
    }
    button.click();
  }

  function goBy(step) {
    let order = [];
    try {
      order = JSON.parse(sessionStorage.getItem(ORDER_KEY) || "[]");
    } catch (_error) {
      order = [];
    }
    const at = order.indexOf(conversation.dataset.conversationId);
    const next = at >= 0 ? order[at + step] : undefined;
    if (typeof next !== "string") {
      say(step > 0 ? "No next conversation in your inbox list." : "No previous conversation in your inbox list.");
      return;
    }
    window.location.assign(`/agent/conversations/${encodeURIComponent(next)}/`);
  }

  function onConversationKey(event) {
    switch (event.key) {
      case "r":
        focusField(".composer__input", "reply");
        return true;
      case "n":
        focusField(".note-form__input", "write a note");
        return true;
      case "e":
        press("resolve", "resolve");
        return true;
      case "a":
        focusField(".assign-to select, .assign-to input", "assign");
        return true;
      case "s":
        focusField(".snooze select, .snooze input, .snooze button", "snooze");
        return true;
      case "[":
        goBy(-1);
        return true;
      case "]":
        goBy(1);
        return true;
      default:
        return false;
    }
  }

  // --- Dispatch ------------------------------------------------------------------------------------

  const TEXT_INPUTS = new Set(["button", "checkbox", "radio", "submit", "reset", "range", "color", "file"]);
  function typingIn(target) {
    if (!(target instanceof Element)) return false;
    if (target.isContentEditable) return true;
    if (target.matches("textarea, select")) return true;
    return target.matches("input") && !TEXT_INPUTS.has(target.type);
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typingIn(event.target) || (help && help.open)) return;
    if (document.querySelector("dialog[open]")) return; // another dialog has the keyboard
    let handled = false;
    if (event.key === "?") {
      openHelp();
      handled = true;
    } else if (inbox) {
      handled = onInboxKey(event);
    } else {
      handled = onConversationKey(event);
    }
    if (handled) event.preventDefault();
  });
})();
