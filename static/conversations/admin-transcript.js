/*
 * The admin transcript (templates/admin/conversations/conversation/change_form.html): bot and
 * agent messages are Markdown, drawn through the project's sanitiser (static/common/markdown.js)
 * from the bubble's own text, which the server rendered escaped. Without JavaScript, or if the
 * sanitiser failed to load, the plain text stays (white-space: pre-wrap keeps its lines).
 */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  if (!window.ReplyMarkdown) return;
  for (const node of document.querySelectorAll("#transcript [data-markdown]")) {
    const fragment = window.ReplyMarkdown.fragment(node.textContent);
    node.replaceChildren(fragment);
    node.classList.add("md", "transcript__text--rendered");
  }
});
