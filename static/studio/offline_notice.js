// The playground's offline-answerer notice follows the chosen version: each option carries
// its own notice text (empty when a model answers it).
(() => {
  "use strict";
  const select = document.getElementById("pg-version");
  const notice = document.querySelector("[data-offline-notice]:not(option)");
  if (!select || !notice) return;
  function show() {
    const option = select.selectedOptions[0];
    const text = option ? option.dataset.offlineNotice || "" : "";
    notice.textContent = text;
    notice.hidden = !text;
  }
  select.addEventListener("change", show);
})();
