/* The playground: send a message to a version, watch its reply stream in, see what was sent.
 * The reply is Markdown, rendered as customers see it (static/common/markdown.js, loaded first). */
"use strict";

(() => {
  const root = document.getElementById("playground");
  if (!root) return;
  const { el } = window.StaffSocket;
  const form = root.querySelector(".playground-form");
  const errorNode = root.querySelector(".playground-error");
  const replyNode = root.querySelector(".reply-text");
  const sourcesNode = root.querySelector(".reply-sources");
  const details = root.querySelector(".playground-details");
  const promptList = root.querySelector(".prompt-messages");
  let current = null; // the request id whose frames we show
  // Who decided the bot can't answer: a prompt change can only affect the model's decision.
  const ABSTAINED_BY = {
    retrieval: "yes: no help-article passage was good enough (no model asked)",
    model: "yes: the model found no answer in the passages it was given",
  };
  let lastSeq = 0;
  let replyText = ""; // the reply so far, as the model wrote it
  const replyView = window.ReplyMarkdown.live(replyNode);

  function showReply(text, streaming) {
    replyText = text;
    replyView.show(text, { streaming });
  }

  function field(name, value) {
    root.querySelector(`[data-field="${name}"]`).textContent = value;
  }

  function ms(value) {
    return typeof value === "number" ? `${value} ms` : "—";
  }

  function showDone(frame) {
    showReply(typeof frame.text === "string" ? frame.text : "", false);
    replyNode.dataset.state = "done";
    sourcesNode.replaceChildren(
      ...(Array.isArray(frame.sources) ? frame.sources : []).map((s) =>
        el("li", "", `[${s.n ?? ""}] ${s.title ?? ""}${s.url ? ` (${s.url})` : ""}`),
      ),
    );
    field("model", frame.model || (frame.abstained ? "none (abstained)" : "—"));
    field("abstained", ABSTAINED_BY[frame.abstained_by] || (frame.abstained ? "yes" : "no"));
    field("prompt_tokens", String(frame.prompt_tokens ?? 0));
    field("completion_tokens", String(frame.completion_tokens ?? 0));
    field("cost", frame.cost === null || frame.cost === undefined ? "no price for this model" : `${frame.cost} ${frame.currency || ""}`.trim());
    field("ttft", ms(frame.ttft_ms));
    field("total", ms(frame.total_ms));
    promptList.replaceChildren(
      ...(Array.isArray(frame.messages) ? frame.messages : []).map((m) => {
        const item = el("li", "prompt-message");
        item.dataset.role = String(m.role);
        item.append(el("p", "prompt-message__role", m.role), el("pre", "prompt-message__content", m.content));
        return item;
      }),
    );
    details.hidden = false;
  }

  function onFrame(frame) {
    if (frame.type === "error") {
      errorNode.textContent = frame.message || "Something went wrong.";
      if (replyNode.dataset.state === "waiting") replyNode.dataset.state = "idle";
      return;
    }
    if (frame.type === "playground.accepted") {
      current = frame.request_id;
      lastSeq = 0;
      return;
    }
    if (!frame.type.startsWith("playground.") || frame.request_id !== current) return;
    if (typeof frame.seq === "number") {
      if (frame.seq <= lastSeq) return;
      lastSeq = frame.seq;
    }
    if (frame.type === "playground.start") {
      showReply("", false);
      replyNode.dataset.state = "streaming";
    } else if (frame.type === "playground.delta") {
      replyNode.dataset.state = "streaming";
      showReply(replyText + (typeof frame.text === "string" ? frame.text : ""), true);
    } else if (frame.type === "playground.done") {
      showDone(frame);
    } else if (frame.type === "playground.error") {
      replyNode.dataset.state = "failed";
      errorNode.textContent = frame.message || "The reply failed.";
    }
  }

  const socket = window.StaffSocket.connect({
    path: root.dataset.wsPath,
    statusNode: root.querySelector(".connection-status"),
    onOpen: () => {},
    onFrame,
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errorNode.textContent = "";
    const version = Number(form.elements.version.value);
    const frame = {
      type: "playground",
      version_id: Number.isInteger(version) ? version : null,
      message: form.elements.message.value,
      conversation_id: form.elements.conversation.value.trim() || null,
    };
    current = null;
    showReply("", false);
    sourcesNode.replaceChildren();
    replyNode.dataset.state = "waiting";
    details.hidden = true;
    if (!socket.send(frame)) {
      errorNode.textContent = "Not connected; try again in a moment.";
      replyNode.dataset.state = "idle";
    }
  });
  form.querySelector("button[type=submit]").disabled = false; // sent by script from here on
})();
