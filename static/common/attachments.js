/*
 * Attachments on the chat page, in the widget and in the agent inbox (docs/attachments.md):
 * the files under a message (image thumbnails, PDF links), the composer's file picker, and
 * uploads with progress. Plain ES2020, no build step. Names and URLs from the server go into
 * the page as text and attributes, never as markup.
 */
"use strict";

window.SupportBotAttachments = (() => {
  // Only the app's own attachment URLs are followed (an id, and an optional view).
  const URL_PATTERN = /^\/chat\/attachments\/[0-9a-f-]{32,36}\/(\?(thumbnail|download)=1)?$/;
  const TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"]);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function safeUrl(url) {
    return typeof url === "string" && URL_PATTERN.test(url) ? url : null;
  }

  function formatSize(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) return "";
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  /**
   * A file fetched with request headers (the widget's visitor token: its third-party iframe
   * has no cookie, and an <img> or a link can't send a header), as a blob URL.
   */
  async function blobUrl(url, headers) {
    const response = await fetch(url, { credentials: "same-origin", headers: headers() });
    if (!response.ok) throw new Error(`The file could not be loaded (${response.status}).`);
    return URL.createObjectURL(await response.blob());
  }

  function openWithHeaders(link, url, headers, name, download) {
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      try {
        const target = await blobUrl(url, headers);
        const opener = el("a");
        opener.href = target;
        if (download) opener.download = name;
        else opener.target = "_blank";
        opener.rel = "noopener";
        opener.click();
        setTimeout(() => URL.revokeObjectURL(target), 60_000);
      } catch (_error) {
        link.classList.add("attachment--failed");
      }
    });
  }

  /**
   * Show a message's attachments in `list` (a <ul>): images as thumbnails linking to the
   * full image, PDFs as a download link with name and size. `headers` (optional) returns the
   * request headers files must be fetched with (the widget).
   */
  function render(list, attachments, { headers } = {}) {
    list.textContent = "";
    for (const item of Array.isArray(attachments) ? attachments : []) {
      if (!item || typeof item !== "object") continue;
      const url = safeUrl(item.url);
      if (!url) continue;
      const name = typeof item.name === "string" && item.name ? item.name : "attachment";
      const entry = el("li", "attachment");
      const thumbnail = safeUrl(item.thumbnail_url);
      if (thumbnail) {
        entry.classList.add("attachment--image");
        const link = el("a", "attachment__open");
        link.href = url;
        link.target = "_blank";
        link.rel = "noopener";
        link.title = name;
        const image = el("img", "attachment__thumbnail");
        image.alt = name;
        image.decoding = "async";
        if (Number.isInteger(item.width) && Number.isInteger(item.height)) {
          // The thumbnail's shape, so the log doesn't jump when it loads.
          const scale = Math.min(1, 320 / Math.max(item.width, item.height, 1));
          image.width = Math.max(1, Math.round(item.width * scale));
          image.height = Math.max(1, Math.round(item.height * scale));
        }
        if (headers) {
          blobUrl(thumbnail, headers).then((src) => { image.src = src; }, () => entry.classList.add("attachment--failed"));
          openWithHeaders(link, url, headers, name, false);
        } else {
          image.src = thumbnail;
        }
        link.append(image);
        entry.append(link);
      } else {
        entry.classList.add("attachment--file");
        const download = safeUrl(item.download_url) || url;
        const link = el("a", "attachment__link");
        link.href = download;
        link.download = name;
        link.append(
          el("span", "attachment__icon", "📄"),
          el("span", "attachment__name", name),
          el("span", "attachment__size", formatSize(item.size)),
        );
        link.firstChild.setAttribute("aria-hidden", "true");
        if (headers) openWithHeaders(link, download, headers, name, true);
        entry.append(link);
      }
      list.append(entry);
    }
    list.hidden = list.childElementCount === 0;
  }

  /**
   * The composer's files: an "Attach" button opens the file input (drop files on the form
   * too); the chosen files are listed with a remove button each. Checks type, size and count
   * early for a quick answer (the server checks again, from the content).
   */
  class Picker {
    constructor(form, { maxFiles, maxBytes, onProblem, onChange }) {
      this.form = form;
      this.input = form.querySelector(".attach__input");
      this.button = form.querySelector(".attach__button");
      this.list = form.querySelector(".attach__chosen");
      this.progress = form.querySelector(".attach__progress");
      this.maxFiles = maxFiles;
      this.maxBytes = maxBytes;
      this.onProblem = onProblem;
      this.onChange = onChange || (() => {});
      this.chosen = [];
      if (!this.input || !this.button || !this.list) return;
      this.button.addEventListener("click", () => this.input.click());
      this.input.addEventListener("change", () => {
        this.add(Array.from(this.input.files || []));
        this.input.value = "";
      });
      form.addEventListener("dragover", (event) => {
        if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
        event.preventDefault();
        form.classList.add("composer--dragging");
      });
      form.addEventListener("dragleave", () => form.classList.remove("composer--dragging"));
      form.addEventListener("drop", (event) => {
        form.classList.remove("composer--dragging");
        if (!event.dataTransfer || event.dataTransfer.files.length === 0) return;
        event.preventDefault();
        this.add(Array.from(event.dataTransfer.files));
      });
    }

    add(files) {
      for (const file of files) {
        let problem = "";
        if (this.chosen.length >= this.maxFiles) problem = `You can attach at most ${this.maxFiles} files to one message.`;
        else if (!TYPES.has(file.type)) problem = `${file.name} can't be attached: only images (PNG, JPEG, GIF, WebP) and PDF documents can.`;
        else if (file.size > this.maxBytes) problem = `${file.name} is too large: the limit is ${formatSize(this.maxBytes)}.`;
        if (problem) {
          this.onProblem(problem);
          break;
        }
        this.chosen.push(file);
      }
      this.show();
    }

    files() {
      return this.chosen.slice();
    }

    clear() {
      this.chosen = [];
      this.show();
    }

    show() {
      if (!this.list) return;
      this.list.textContent = "";
      this.chosen.forEach((file, index) => {
        const item = el("li", "attach__file");
        item.append(el("span", "attach__name", file.name), el("span", "attach__size", formatSize(file.size)));
        const remove = el("button", "attach__remove", "×");
        remove.type = "button";
        remove.setAttribute("aria-label", `Remove ${file.name}`);
        remove.addEventListener("click", () => {
          this.chosen.splice(index, 1);
          this.show();
          this.button.focus();
        });
        item.append(remove);
        this.list.append(item);
      });
      this.list.hidden = this.chosen.length === 0;
      this.onChange();
    }

    /** Upload progress, 0..1; null hides it. */
    setProgress(fraction) {
      if (!this.progress) return;
      this.progress.hidden = fraction === null;
      if (fraction !== null) this.progress.value = Math.round(fraction * 100);
      if (this.button) this.button.disabled = fraction !== null;
    }
  }

  /**
   * POST a multipart form with upload progress; resolves to {ok, status, data} (data is the
   * JSON answer, or {} when there was none). XMLHttpRequest: fetch reports no upload progress.
   */
  /**
   * A message's files under its text (`parts.text`), in a list kept in `parts.attachments`.
   * A turn comes again (snapshot, live frame, replay): the same files are not drawn twice, so
   * images already loaded stay.
   */
  function showUnder(parts, attachments, { headers } = {}) {
    if (!Array.isArray(attachments) || attachments.length === 0) return;
    const key = JSON.stringify(attachments.map((item) => item && item.id));
    if (parts.attachmentsKey === key) return;
    parts.attachmentsKey = key;
    if (!parts.attachments) {
      parts.attachments = el("ul", "attachments");
      parts.attachments.setAttribute("aria-label", "Attachments");
      parts.text.after(parts.attachments);
    }
    render(parts.attachments, attachments, { headers });
  }

  function upload(url, form, { headers = {}, onProgress = () => {} } = {}) {
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      request.open("POST", url);
      request.withCredentials = true;
      for (const [name, value] of Object.entries(headers)) request.setRequestHeader(name, value);
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      request.addEventListener("load", () => {
        let data = {};
        try {
          data = JSON.parse(request.responseText);
        } catch (_error) {
          data = {};
        }
        resolve({ ok: request.status >= 200 && request.status < 300, status: request.status, data });
      });
      const failed = () => resolve({ ok: false, status: 0, data: {} });
      request.addEventListener("error", failed);
      request.addEventListener("abort", failed);
      request.send(form);
    });
  }

  return { render, showUnder, Picker, upload, formatSize };
})();
