/*
 * Agent notifications on every agent page (issue 17.3, 17.9): the count of unread
 * conversations waiting for me in the tab title, an optional sound, desktop notifications
 * (only after "Enable desktop notifications") for handovers and for new customer messages on
 * my conversations, and the away toggle. It reads the pages' websocket frames, which inbox.js
 * and conversation.js re-dispatch as `agent:frame` events (every agent socket receives every
 * inbox.row), and starts from GET /agent/api/notifications/. Plain ES2020, no build step.
 */
"use strict";

(() => {
  const tools = document.querySelector(".agent-tools");
  if (!tools) return;
  const meId = Number(tools.dataset.meId);
  const csrf = tools.dataset.csrfToken;
  const page = document.getElementById("agent-conversation");
  const currentId = page ? page.dataset.conversationId : null;
  const baseTitle = document.title;
  const loadedAt = Date.now();
  // Events from before the page opened are not news; a few seconds allow for clock skew.
  const SKEW_MS = 5000;
  const SOUND_KEY = "supportbot.agent.sound";
  const DESKTOP_KEY = "supportbot.agent.desktop";
  const ANNOUNCED_PREFIX = "supportbot.agent.announced:";
  const ANNOUNCED_KEEP_MS = 60 * 60 * 1000;

  const awayBox = tools.querySelector(".agent-tools__away");
  const soundBox = tools.querySelector(".agent-tools__sound");
  const enableButton = tools.querySelector(".agent-tools__enable-desktop");
  const desktopBox = tools.querySelector(".agent-tools__desktop");
  const statusNode = tools.querySelector(".agent-tools__status");

  // --- Unread count in the title -----------------------------------------------------------------

  const unread = new Set(); // conversation ids counted
  const fromFrames = new Set(); // ids a frame decided (newer than the starting list)
  const known = new Map(); // id -> the last row seen

  function counts(row) {
    const mineOrNobodys = !row.assignee || row.assignee.id === meId;
    return row.status === "pending" && mineOrNobodys && row.unread > 0;
  }

  function renderTitle() {
    const n = unread.size;
    document.title = n > 0 ? `(${n > 99 ? "99+" : n}) ${baseTitle}` : baseTitle;
    document.documentElement.dataset.unreadCount = String(n);
  }

  function remember(row, live) {
    if (!row || typeof row.id !== "string") return;
    const before = known.get(row.id);
    known.set(row.id, row);
    fromFrames.add(row.id);
    if (counts(row)) unread.add(row.id);
    else unread.delete(row.id);
    renderTitle();
    if (live) announce(row, before);
  }

  async function start() {
    let data = null;
    try {
      const response = await fetch("/agent/api/notifications/", { credentials: "same-origin" });
      if (response.ok) data = await response.json();
    } catch (_error) {
      data = null;
    }
    if (!data) return;
    for (const id of data.unread || []) if (!fromFrames.has(id)) unread.add(id);
    renderTitle();
    showAway(Boolean(data.away));
  }

  // --- What is news --------------------------------------------------------------------------------

  function fresh(iso) {
    const time = new Date(iso || "").getTime();
    return Number.isFinite(time) && time >= loadedAt - SKEW_MS;
  }

  /** Once per event across this agent's tabs (each tab gets the same frame). */
  function claim(key) {
    const name = ANNOUNCED_PREFIX + key;
    try {
      if (localStorage.getItem(name)) return false;
      localStorage.setItem(name, String(Date.now()));
    } catch (_error) {
      // Storage refused (private mode): every tab announces; the tag still merges the popups.
    }
    return true;
  }

  function forgetOldClaims() {
    try {
      for (let i = localStorage.length - 1; i >= 0; i--) {
        const name = localStorage.key(i);
        if (name && name.startsWith(ANNOUNCED_PREFIX)) {
          if (Date.now() - Number(localStorage.getItem(name)) > ANNOUNCED_KEEP_MS) localStorage.removeItem(name);
        }
      }
    } catch (_error) {
      // nothing to tidy
    }
  }

  function lookingAt(id) {
    return id === currentId && document.visibilityState === "visible" && document.hasFocus();
  }

  function announce(row, before) {
    const customer = typeof row.customer === "string" && row.customer ? row.customer : "A customer";
    const preview = typeof row.preview === "string" ? row.preview : "";
    const mine = row.assignee && row.assignee.id === meId;
    if (
      row.status === "pending" &&
      (!row.assignee || mine) &&
      fresh(row.escalated_at) &&
      !(before && before.status === "pending" && before.escalated_at === row.escalated_at)
    ) {
      notify(`handover:${row.id}:${row.escalated_at}`, row.id, `${customer} is waiting for a person`, preview);
      return;
    }
    if (
      mine &&
      row.preview_author === "customer" &&
      row.unread > 0 &&
      fresh(row.last_message_at) &&
      !(before && before.last_message_at === row.last_message_at)
    ) {
      notify(`message:${row.id}:${row.last_message_at}`, row.id, `New message from ${customer}`, preview);
    }
  }

  function notify(key, id, title, body) {
    if (lookingAt(id) || !claim(key)) return;
    chime();
    showDesktop(id, title, body);
  }

  // --- Desktop notifications -----------------------------------------------------------------------

  const supported = "Notification" in window;

  function showDesktop(id, title, body) {
    if (!supported || Notification.permission !== "granted" || !desktopBox.checked) return;
    let shown;
    try {
      shown = new Notification(title, { body, tag: `supportbot-${id}` });
    } catch (_error) {
      return; // some browsers only allow notifications from a service worker
    }
    shown.addEventListener("click", () => {
      window.focus();
      shown.close();
      window.location.assign(`/agent/conversations/${encodeURIComponent(id)}/`);
    });
  }

  function showDesktopState() {
    const permission = supported ? Notification.permission : "unsupported";
    enableButton.hidden = permission !== "default";
    desktopBox.closest("label").hidden = permission !== "granted";
    desktopBox.checked = localStorage.getItem(DESKTOP_KEY) !== "off";
    if (permission === "denied") statusNode.textContent = "Desktop notifications are blocked in this browser's site settings.";
  }

  enableButton.addEventListener("click", async () => {
    if (!supported) return;
    try {
      await Notification.requestPermission();
    } catch (_error) {
      // an old browser's callback form: the state below says what happened
    }
    localStorage.removeItem(DESKTOP_KEY);
    showDesktopState();
  });

  desktopBox.addEventListener("change", () => {
    localStorage.setItem(DESKTOP_KEY, desktopBox.checked ? "on" : "off");
  });

  // --- Sound (WebAudio: a short two-note chime, nothing fetched) ----------------------------------

  let audio = null;

  function chime() {
    if (localStorage.getItem(SOUND_KEY) !== "on") return;
    try {
      audio = audio || new AudioContext();
      if (audio.state === "suspended") audio.resume();
      const start = audio.currentTime + 0.01;
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.type = "sine";
      tone.frequency.setValueAtTime(880, start);
      tone.frequency.setValueAtTime(660, start + 0.12);
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.2, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.3);
      tone.connect(gain).connect(audio.destination);
      tone.start(start);
      tone.stop(start + 0.32);
      document.documentElement.dataset.chimes = String(Number(document.documentElement.dataset.chimes || 0) + 1);
    } catch (_error) {
      // no audio output: the title and desktop notification still tell
    }
  }

  soundBox.checked = localStorage.getItem(SOUND_KEY) === "on";
  soundBox.addEventListener("change", () => {
    localStorage.setItem(SOUND_KEY, soundBox.checked ? "on" : "off");
    if (soundBox.checked) chime(); // a sample, and it unlocks audio within this click
  });

  // --- Away ----------------------------------------------------------------------------------------

  function showAway(away) {
    awayBox.checked = away;
    tools.dataset.away = away ? "true" : "false";
  }

  awayBox.addEventListener("change", async () => {
    const away = awayBox.checked;
    statusNode.textContent = "";
    let ok = false;
    try {
      const response = await fetch("/agent/api/away/", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ away }),
      });
      ok = response.ok;
      if (!ok) statusNode.textContent = ((await response.json().catch(() => ({}))).error) || "Your status was not saved.";
    } catch (_error) {
      statusNode.textContent = "The server can't be reached. Try again.";
    }
    showAway(ok ? away : !away);
    if (ok) statusNode.textContent = away ? "You are away: customers are not told the team is online." : "You are available.";
  });

  // --- Frames ---------------------------------------------------------------------------------------

  // inbox.row frames go to every agent and count unread for the whole team; what this agent
  // has not read comes from the inbox API, as its own rows (docs/inbox.md#honest-counters).
  const asked = new Map(); // id -> the number of the latest read of that row

  async function mine(row) {
    if (!row || typeof row.id !== "string") return null;
    const someoneElses = row.assignee && row.assignee.id !== meId;
    if (row.status !== "pending" || someoneElses) return row;
    const n = (asked.get(row.id) || 0) + 1;
    asked.set(row.id, n);
    try {
      const query = `status=all&id=${encodeURIComponent(row.id)}`;
      const response = await fetch(`/agent/api/inbox/?${query}`, { credentials: "same-origin" });
      if (!response.ok || asked.get(row.id) !== n) return null; // a later frame's read wins
      const data = await response.json();
      return (data.rows || [])[0] || { ...row, unread: 0 };
    } catch (_error) {
      return null;
    }
  }

  document.addEventListener("agent:frame", (event) => {
    const frame = event.detail;
    if (!frame || typeof frame.type !== "string") return;
    if (frame.type === "inbox" && Array.isArray(frame.rows)) {
      frame.rows.forEach((row) => remember(row, false));
    } else if (frame.type === "inbox.row") {
      mine(frame.row).then((row) => row && remember(row, true));
    } else if (frame.type === "away") {
      showAway(Boolean(frame.away));
    }
  });

  forgetOldClaims();
  showDesktopState();
  showAway(tools.dataset.away === "true");
  renderTitle();
  start();
})();
