/*
 * The customer context panel on the agent's conversation page (docs/inbox.md#context): who
 * the customer is, where and in what the chat started, their other conversations, and a form
 * to edit their name and email. Data from GET …/context/; edits POST …/contact/, which
 * answers with the panel's data. Everything from the server goes into the page as text.
 */
"use strict";

(() => {
  const panel = document.querySelector(".context[data-context-url]");
  if (!panel) return;
  const { el, asText, post } = window.AgentCommon;
  const csrfToken = document.getElementById("agent-conversation").dataset.csrfToken;

  const OUTCOME_TEXT = {
    handed_over: "Handed over",
    resolved: "Resolved",
    bot_answered: "Bot answered",
    unanswered: "No answer yet",
  };
  const STATUS_TEXT = { open: "open", pending: "with the team", snoozed: "snoozed", resolved: "resolved" };

  const status = panel.querySelector(".context__status");
  let body = null;
  let clockTimer = null;

  function formatDate(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
  }

  /** The customer's local time in their time zone ("" when the browser doesn't know it). */
  function localTime(timeZone) {
    try {
      return new Date().toLocaleTimeString([], { timeZone, hour: "2-digit", minute: "2-digit" });
    } catch (_error) {
      return "";
    }
  }

  /** A link to a page the customer was on: opened apart from this page, telling it nothing. */
  function outsideLink(url) {
    const link = el("a", "context__url", url);
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.referrerPolicy = "no-referrer";
    return link;
  }

  function row(list, label, value) {
    if (value === "" || value === null || value === undefined) return;
    const term = el("dt", null, label);
    const detail = el("dd");
    if (value instanceof Node) detail.append(value);
    else detail.textContent = String(value);
    list.append(term, detail);
  }

  function identity(data) {
    const customer = data.customer;
    const section = el("div", "context__identity");
    const list = el("dl", "context__list");
    row(list, "Name", asText(customer.name) || "—");
    row(list, "Email", asText(customer.email) || "—");
    if (customer.contact_email && customer.contact_email !== customer.email) {
      row(list, "Answer by email at", asText(customer.contact_email));
    }
    row(list, "User id", asText(customer.external_id));
    const attributes = customer.attributes && typeof customer.attributes === "object" ? customer.attributes : {};
    for (const [name, value] of Object.entries(attributes)) row(list, name, String(value));
    const edit = el("button", "context__edit", "Edit contact details");
    edit.type = "button";
    edit.addEventListener("click", () => {
      section.replaceChildren(contactForm(customer));
      section.querySelector("input").focus();
    });
    section.append(list, edit);
    return section;
  }

  function contactForm(customer) {
    const form = el("form", "context__form");
    form.noValidate = true;
    const name = field(form, "Name", "text", asText(customer.name), "name");
    const email = field(form, "Email", "email", asText(customer.email), "email");
    const error = el("p", "context__error");
    error.setAttribute("role", "alert");
    error.hidden = true;
    const save = el("button", null, "Save");
    save.type = "submit";
    const cancel = el("button", null, "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => load());
    form.append(error, save, cancel);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      save.disabled = true;
      const answer = await post(panel.dataset.contactUrl, { name: name.value, email: email.value }, csrfToken);
      save.disabled = false;
      if (!answer.ok) {
        error.textContent = asText(answer.data.error) || "Not saved.";
        error.hidden = false;
        return;
      }
      draw(answer.data);
      status.textContent = "Contact details saved.";
    });
    return form;
  }

  function field(form, label, type, value, autocomplete) {
    const wrapper = el("label", "context__field", label);
    const input = el("input");
    input.type = type;
    input.value = value;
    input.name = autocomplete;
    input.autocomplete = "off";
    wrapper.append(input);
    form.append(wrapper);
    return input;
  }

  function started(data) {
    const info = data.started || {};
    const section = el("div", "context__started");
    section.append(el("h3", null, "Where the chat started"));
    const list = el("dl", "context__list");
    row(list, "Page", info.page_url ? outsideLink(asText(info.page_url)) : "unknown");
    if (info.referrer) row(list, "Referrer", outsideLink(asText(info.referrer)));
    row(list, "Browser", asText(info.browser) || "unknown");
    row(list, "Language", asText(info.language));
    if (info.time_zone) {
      const clock = el("span", "context__clock");
      const tick = () => {
        clock.textContent = `${localTime(info.time_zone)} (${info.time_zone})`;
      };
      tick();
      if (clockTimer !== null) clearInterval(clockTimer);
      clockTimer = setInterval(tick, 30000);
      row(list, "Local time", clock);
    }
    section.append(list);
    return section;
  }

  function others(data) {
    const section = el("div", "context__others");
    section.append(el("h3", null, "Other conversations"));
    const items = Array.isArray(data.other_conversations) ? data.other_conversations : [];
    if (!items.length) {
      section.append(el("p", "context__none", "None before this one."));
      return section;
    }
    const list = el("ul", "context__conversations");
    for (const item of items) {
      const entry = el("li");
      const link = el("a", null, asText(item.topic) || "(no text)");
      link.href = asText(item.url);
      const details = [
        OUTCOME_TEXT[item.outcome] || "",
        item.outcome === "resolved" ? "" : STATUS_TEXT[item.status] || "",
        Number.isInteger(item.rating) ? `rated ${item.rating}/5` : "",
        formatDate(item.created),
      ].filter(Boolean);
      entry.append(link, el("span", "context__meta", details.join(" · ")));
      list.append(entry);
    }
    section.append(list);
    if (data.more_conversations) section.append(el("p", "context__none", "…and more."));
    return section;
  }

  function draw(data) {
    const next = el("div", "context__body");
    next.append(identity(data), started(data), others(data));
    if (body) body.replaceWith(next);
    else panel.append(next);
    body = next;
    status.textContent = "";
  }

  async function load() {
    let response;
    try {
      response = await fetch(panel.dataset.contextUrl, { credentials: "same-origin" });
    } catch (_error) {
      status.textContent = "The customer's details can't be loaded.";
      return;
    }
    let data = {};
    try {
      data = await response.json();
    } catch (_error) {
      data = {};
    }
    if (!response.ok) {
      status.textContent = asText(data.error) || `The server answered ${response.status}.`;
      return;
    }
    draw(data);
  }

  load();
})();
