/*
 * Replies as safe Markdown, shared by the chat page (and so the widget), the agent inbox and
 * the playground. Plain ES2020, no build step; needs static/vendor/marked/marked.umd.js
 * (marked 18.3.0) and static/vendor/dompurify/purify.min.js (DOMPurify 3.5.0) loaded first.
 *
 *   window.ReplyMarkdown.fragment(text)  -> a DocumentFragment, sanitised
 *   window.ReplyMarkdown.live(node, { decorate, onRender })
 *       -> { show(text, { streaming, key }) }: renders into node, at most once per animation
 *          frame while streaming, at once otherwise
 *
 * What a reply may contain: GitHub-flavoured Markdown (paragraphs, line breaks, lists, bold,
 * italic, strikethrough, inline code, code blocks, quotes, headings, tables, links). Raw HTML in
 * the text is shown as the characters it is (a `<b>` stays "<b>"), never parsed. Links go only
 * to absolute http(s) and mailto: URLs, open in a new tab with rel="noopener noreferrer
 * nofollow"; any other link is its text alone. No images: `![alt](url)` becomes a link to the
 * image (or its alt text). DOMPurify then keeps only the elements and attributes listed below,
 * whatever marked produced.
 */
"use strict";

window.ReplyMarkdown = (() => {
  const ALLOWED_TAGS = [
    "p", "br", "strong", "em", "del", "code", "pre", "blockquote", "hr",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "a",
  ];
  const ALLOWED_ATTR = ["href", "title", "align", "start"];
  const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  /** The href to keep, or null: only absolute http(s) and mailto: URLs (after the browser's
   * own parsing, so entities, tabs and case in the scheme change nothing). */
  function safeHref(href) {
    if (typeof href !== "string" || href.trim() === "") return null;
    let url;
    try {
      url = new URL(href);
    } catch (_error) {
      return null; // relative, protocol-relative or not a URL
    }
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  }

  const parser = new window.marked.Marked({
    gfm: true,
    breaks: true, // a single newline is a line break, as people (and agents) type them
    renderer: {
      // Raw HTML, block or inline: its characters, escaped, never markup.
      html({ text, block }) {
        const escaped = escapeHtml(text.replace(/\n+$/, ""));
        return block ? `<p>${escaped.replace(/\n/g, "<br>")}</p>\n` : escaped;
      },
      link({ href, title, tokens }) {
        const label = this.parser.parseInline(tokens);
        const target = safeHref(href);
        if (!target) return label;
        const titled = title ? ` title="${escapeHtml(title)}"` : "";
        return `<a href="${escapeHtml(target)}"${titled}>${label}</a>`;
      },
      image({ href, text }) {
        const target = safeHref(href);
        const label = escapeHtml(text || href || "");
        return target ? `<a href="${escapeHtml(target)}">${label}</a>` : label;
      },
      // A task list's box would be an <input>: show the item's text only.
      checkbox() {
        return "";
      },
    },
  });

  // An instance of its own, so that its hooks and settings touch no other DOMPurify user.
  const purify = window.DOMPurify(window);
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName !== "A") return;
    const href = safeHref(node.getAttribute("href"));
    if (!href) {
      node.removeAttribute("href"); // unwrapped below
      return;
    }
    node.setAttribute("href", href);
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  });
  const PURIFY_OPTIONS = {
    ALLOWED_TAGS,
    ALLOWED_ATTR, // target and rel on links are set by the hook above, after this list applied
    // Checked against every attribute not known to hold no URL, so those two are named here.
    ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i,
    ADD_URI_SAFE_ATTR: ["align", "start"],
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  };

  /** The reply's text as a sanitised DocumentFragment. */
  function fragment(text) {
    const source = typeof text === "string" ? text : "";
    if (source.trim() === "") return document.createDocumentFragment();
    const html = parser.parse(source, { async: false });
    const result = purify.sanitize(html, PURIFY_OPTIONS);
    for (const link of result.querySelectorAll("a:not([href])")) link.replaceWith(...link.childNodes);
    // A wide table scrolls sideways inside its bubble instead of stretching it.
    for (const table of result.querySelectorAll("table")) {
      const scroller = document.createElement("div");
      scroller.className = "md-table";
      table.replaceWith(scroller);
      scroller.append(table);
    }
    return result;
  }

  /**
   * Renders text into `node` (which gets the class "md"). While a reply streams, renders the
   * latest text at most once per animation frame; a final text renders at once. `decorate`
   * may change the fragment before it goes in (citation markers); `onRender` runs after.
   * `key` (default: the text) says when there is nothing new to render.
   */
  function live(node, { decorate = null, onRender = null } = {}) {
    let shownKey = null;
    let pending = null; // { text, key } waiting for the next frame
    let frame = null;

    function render(text, key) {
      shownKey = key;
      const content = fragment(text);
      if (decorate) decorate(content);
      node.replaceChildren(content);
      if (onRender) onRender();
    }

    function flush() {
      frame = null;
      const next = pending;
      pending = null;
      if (next && next.key !== shownKey) render(next.text, next.key);
    }

    function show(text, { streaming = false, key = text } = {}) {
      node.classList.add("md");
      if (!streaming) {
        if (frame !== null) window.cancelAnimationFrame(frame);
        frame = null;
        pending = null;
        if (key !== shownKey) render(text, key);
        return;
      }
      pending = { text, key };
      if (frame === null) frame = window.requestAnimationFrame(flush);
    }

    return { show };
  }

  return { fragment, live, safeHref };
})();
