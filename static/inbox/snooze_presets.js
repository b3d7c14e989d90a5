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
})();
