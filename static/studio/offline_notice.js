// The offline-answerer notice of the playground and evaluations follows the chosen version:
// each option carries its own notice text (empty when a model answers it).
(() => {
  "use strict";
  const select = document.querySelector("select[data-offline-select]");
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
