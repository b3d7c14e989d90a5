/*
 * Replies as safe Markdown, shared by the chat page (and so the widget), the agent inbox and
 * the playground. Plain ES2020, no build step; needs static/vendor/marked/marked.umd.js
 * (marked 18.3.0) and static/vendor/dompurify/purify.min.js (DOMPurify 3.5.0) loaded first.
 *
 *   window.ReplyMarkdown.fragment(text)  -> a DocumentFragment, sanitised
 *   window.ReplyMarkdown.live(node, { decorate, onRender })
 *       -> { show(text, { streaming, key }) }: renders into node; while streaming, the text that
 *          arrived is written out smoothly over the next animation frames, at once otherwise
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

  // A streaming reply's new text is written out over about this long, whatever size of piece
  // brought it: the server sends fuller pieces less often (bot/run.py), and the reply still
  // reads as a steady flow. Readers who ask for less motion get each piece at once.
  const SMOOTH_MS = 120;
  const reducedMotion = () =>
    typeof window.matchMedia === "function" && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  /**
   * Renders text into `node` (which gets the class "md"). While a reply streams, the text
   * shown catches up with the latest text over the next animation frames, a little more each
   * frame (SMOOTH_MS); a final text renders at once. `decorate` may change the fragment before
   * it goes in (citation markers); `onRender` runs after. `key` (default: the text) says when
   * there is nothing new to render.
   */
  function live(node, { decorate = null, onRender = null } = {}) {
    let shownKey = null;
    let target = { text: "", key: null }; // the latest streaming text
    let written = 0; // how much of target.text is on screen
    let frame = null;
    let lastTick = null;

    function render(text, key) {
      shownKey = key;
      const content = fragment(text);
      if (decorate) decorate(content);
      node.replaceChildren(content);
      if (onRender) onRender();
    }

    function stop() {
      if (frame !== null) window.cancelAnimationFrame(frame);
      frame = null;
      lastTick = null;
    }

    function tick(now) {
      frame = null;
      const elapsed = lastTick === null ? 16 : Math.min(100, now - lastTick);
      lastTick = now;
      const text = target.text;
      const behind = text.length - written;
      if (behind > 0) {
        written += Math.max(1, Math.ceil((behind * elapsed) / SMOOTH_MS));
        written = Math.min(text.length, written);
        // Never between the two halves of a surrogate pair (an emoji).
        const code = text.charCodeAt(written);
        if (written < text.length && code >= 0xdc00 && code <= 0xdfff) written += 1;
      }
      const key = written === text.length ? target.key : `${target.key}\u0000${written}`;
      if (key !== shownKey) render(text.slice(0, written), key);
      if (written < text.length) frame = window.requestAnimationFrame(tick);
      else lastTick = null;
    }

    function show(text, { streaming = false, key = text } = {}) {
      node.classList.add("md");
      const value = typeof text === "string" ? text : "";
      if (!streaming || reducedMotion()) {
        stop();
        target = { text: value, key };
        written = value.length;
        if (key !== shownKey) render(value, key);
        return;
      }
      // A reply that starts over (a new attempt) is written out from its start again.
      if (!value.startsWith(target.text.slice(0, written))) written = 0;
      target = { text: value, key };
      if (frame === null) frame = window.requestAnimationFrame(tick);
    }

    return { show };
  }

  return { fragment, live, safeHref };
})();
