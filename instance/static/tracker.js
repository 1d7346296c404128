// The tracker page, live: new items appear at the top of the table (marked new), changed
// values change in place, deleted items go. Only what /live sends (fields the user may
// read) and what GET /api/items/ID answers is ever shown, always with textContent.
(() => {
  "use strict";
  const { announce } = window.fieldcast; // fieldcast.js, loaded first
  const dataNode = document.getElementById("tracker-data");
  if (!dataNode) return;
  const page = JSON.parse(dataNode.textContent);
  dataNode.remove();
  const trackerId = page.tracker.id;
  const query = page.query;
  const tbody = document.querySelector("#items tbody");
  const conn = document.getElementById("conn");
  const connText = document.getElementById("conn-text");
  let columns = page.columns.map((c) => c.name);
  const fetching = new Set();
  const SHOWN = 160; // characters of a value the table shows; the item page shows all

  const show = (value) => {
    if (value === null || value === undefined) return "";
    const text = String(value);
    return text.length > SHOWN + 1 ? `${text.slice(0, SHOWN)}…` : text;
  };

  function setConn(state, text) {
    if (!conn || conn.dataset.state === state) return;
    conn.dataset.state = state;
    connText.textContent = text || { live: "live", reconnecting: "reconnecting…", offline: "offline" }[state];
  }

  const rowOf = (item) => tbody.querySelector(`tr[data-item="${Number(item)}"]`);

  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
  }

  function setCell(row, field, value, version) {
    const cell = row.querySelector(`td[data-field="${CSS.escape(field)}"]`);
    if (!cell || Number(cell.dataset.version) >= version) return;
    cell.dataset.version = String(version);
    cell.textContent = show(value);
    flash(cell);
  }

  // Whether an item (as GET /api/items/ID answers it) belongs in this filtered view.
  function matches(item) {
    const value = (name) => (item.fields[name] ? item.fields[name].value : null);
    for (const f of query.filters) {
      const v = value(f.field);
      if (v === null || v === undefined) return false;
      if (f.values.length && !f.values.includes(v)) return false;
      if (f.from !== null && v < f.from) return false;
      if (f.to !== null && v > f.to) return false;
    }
    if (query.q) {
      const needle = query.q.toLowerCase();
      if (!query.q_fields.some((n) => typeof value(n) === "string" && value(n).toLowerCase().includes(needle))) return false;
    }
    return true;
  }

  function buildRow(item) {
    const row = document.createElement("tr");
    row.dataset.item = String(item.id);
    row.className = "new";
    const first = document.createElement("td");
    const link = document.createElement("a");
    link.href = `/items/${item.id}`;
    link.textContent = `#${item.id}`;
    first.append(link, " ");
    const mark = document.createElement("span");
    mark.className = "muted";
    mark.textContent = "new";
    first.append(mark);
    row.append(first);
    for (const name of columns) {
      const cell = document.createElement("td");
      cell.dataset.field = name;
      const data = item.fields[name];
      cell.dataset.version = String(data ? data.version : 0);
      cell.textContent = show(data ? data.value : null);
      row.append(cell);
    }
    return row;
  }

  async function fetchItem(id) {
    const response = await fetch(`/api/items/${Number(id)}`, { credentials: "same-origin" });
    return response.status === 200 ? response.json() : null;
  }

  async function added(id) {
    if (rowOf(id) || fetching.has(id)) return;
    fetching.add(id);
    try {
      const item = await fetchItem(id);
      if (!item || rowOf(id) || !matches(item)) return;
      tbody.querySelector("tr.none")?.remove();
      tbody.prepend(buildRow(item));
      announce(`new item #${item.id}`);
    } finally {
      fetching.delete(id);
    }
  }

  // After a reconnect: what changed meanwhile on the rows shown (the socket replays
  // nothing for a tracker; this page's own query answers the current values).
  async function refresh() {
    const response = await fetch(`/api/trackers/${encodeURIComponent(page.tracker.slug)}/items${location.search}`,
      { credentials: "same-origin" });
    if (response.status !== 200) return;
    for (const item of (await response.json()).items) {
      const row = rowOf(item.id);
      if (!row) continue;
      for (const [name, data] of Object.entries(item.fields)) setCell(row, name, data.value, data.version);
    }
  }

  // The user's rights on the tracker changed: hide columns no longer readable at once;
  // a column newly readable needs the page (and its values) again.
  function rights(readable) {
    const keep = new Set(readable);
    for (const name of columns.filter((n) => !keep.has(n))) {
      for (const node of document.querySelectorAll(`#items [data-field="${CSS.escape(name)}"]`)) node.remove();
    }
    const before = new Set(columns);
    columns = columns.filter((n) => keep.has(n));
    if (readable.some((n) => !before.has(n))) announce("more fields are readable now: reload the page to see them");
  }

  function handle(msg) {
    switch (msg.type) {
      case "subscribed":
        setConn("live");
        for (const t of msg.trackers_fields || []) if (t.tracker === trackerId) rights(t.readable);
        if (reconnected) refresh();
        reconnected = true;
        delay = 500;
        break;
      case "updates":
        for (const u of msg.updates) {
          // Items not shown here (other pages, other filters) are none of this page's
          // business; a new item's first values may come before its "created" frame,
          // and the item read then holds them.
          const row = rowOf(u.item);
          if (row) setCell(row, u.field, u.value, u.version);
        }
        break;
      case "created":
        if (msg.tracker === trackerId) added(msg.item);
        break;
      case "deleted":
        rowOf(msg.item)?.remove();
        break;
      case "fields":
        if (msg.tracker === trackerId) rights(msg.readable);
        break;
      case "ping":
        socket?.send(JSON.stringify({ type: "pong" }));
        break;
      default:
        break;
    }
  }

  let socket = null;
  let delay = 500;
  let reconnected = false;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(`${scheme}${location.host}/live`);
    socket = ws;
    ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "subscribe", trackers: [trackerId] })));
    ws.addEventListener("message", (event) => handle(JSON.parse(event.data)));
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      socket = null;
      if (event.code === 4401) { setConn("offline", "offline: log in again"); return; }
      setConn(reconnected ? "reconnecting" : "offline");
      const wait = delay * (0.5 + Math.random());
      delay = Math.min(delay * 2, 10000);
      setTimeout(connect, wait);
    });
  }

  // Empty inputs stay out of the address, so a shared link says only what was asked.
  document.getElementById("find")?.addEventListener("submit", (event) => {
    for (const input of event.currentTarget.querySelectorAll("input, select")) {
      if (input.name && input.value === "") input.disabled = true;
    }
  });
  // Back to this page from the next one: the inputs must not stay disabled.
  window.addEventListener("pageshow", () => {
    for (const input of document.querySelectorAll("#find [disabled]")) input.disabled = false;
  });

  connect();
})();
