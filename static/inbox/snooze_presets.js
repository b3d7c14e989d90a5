// When each snooze preset ends, in the agent's own (browser) time zone: the page sends the
// result as an ISO time to the snooze endpoint, which stores the instant.
(() => {
  "use strict";
  function atNine(date) {
    date.setHours(9, 0, 0, 0);
    return date;
  }
  function until(preset, now = new Date()) {
    const date = new Date(now.getTime());
    if (preset === "hour") return new Date(now.getTime() + 60 * 60 * 1000);
    if (preset === "tomorrow") {
      date.setDate(date.getDate() + 1);
      return atNine(date);
    }
    if (preset === "next-week") {
      // The next Monday (a week on when today is Monday). getDay(): Sunday 0, Monday 1.
      date.setDate(date.getDate() + ((8 - date.getDay()) % 7 || 7));
      return atNine(date);
    }
    return null;
  }
  window.SnoozePresets = { until };

  // Each preset's button tells the exact time it means, worked out when pointed at or focused
  // (a page left open past midnight still tells the truth).
  function describe(event) {
    const button = event.target.closest && event.target.closest("button[data-snooze-preset]");
    const when = button && until(button.dataset.snoozePreset);
    if (when) button.title = `Until ${when.toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "numeric", minute: "2-digit" })}`;
  }
  document.addEventListener("pointerover", describe);
  document.addEventListener("focusin", describe);
})();
