/* Evaluations: a live progress bar for the run on the page; the scores when it finishes. */
"use strict";

(() => {
  const root = document.getElementById("evaluations");
  if (!root) return;
  const runId = Number(root.dataset.runId);
  const progress = root.querySelector("#run-progress");
  const count = root.querySelector(".run-count");
  const shownStatus = root.dataset.runStatus;
  const FINISHED = new Set(["done", "failed"]);

  function onFrame(frame) {
    if (frame.type !== "run.progress" || frame.run_id !== runId || !progress) return;
    progress.max = Math.max(1, Number(frame.total) || 0);
    progress.value = Number(frame.done) || 0;
    progress.textContent = `${frame.done}/${frame.total}`;
    count.dataset.status = String(frame.status);
    count.textContent = `${frame.done}/${frame.total} · ${frame.status}`;
    if (FINISHED.has(frame.status) && !FINISHED.has(shownStatus)) {
      // The scores and the comparison are rendered by the server.
      window.location.reload();
    }
  }

  const socket = window.StaffSocket.connect({
    path: root.dataset.wsPath,
    statusNode: root.querySelector(".connection-status"),
    onOpen: () => {
      if (runId) socket.send({ type: "watch_run", run_id: runId });
    },
    onFrame,
  });
})();
