// fieldcast's one script: login, logout, new item, export settings, and the live item page.
// User data is only ever put into the page with textContent, never as HTML.
(() => {
  "use strict";
  const $ = (sel, root = document) => root.querySelector(sel);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function announce(text) {
    const region = $("#announce");
    if (region) region.textContent = text;
  }

  async function api(method, url, body, headers = {}) {
    const init = { method, credentials: "same-origin", headers: { ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch { /* 204 and friends */ }
    return { status: response.status, ok: response.ok, data };
  }

  // The helpers the page scripts loaded after this one (admin.js, tracker.js) share.
  window.fieldcast = Object.freeze({ $, el, announce, api });

  // ---- every page ------------------------------------------------------------------
  async function logout() {
    await api("POST", "/api/logout");
    location.href = "/login";
  }
  $("#logout")?.addEventListener("click", logout);

  function backTo() {
    // Only a path on this site: ?next=//evil.example or https://… must not redirect away.
    const next = new URLSearchParams(location.search).get("next") || "/";
    const url = new URL(next, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
  }

  $("#login-form")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const error = $("#login-error");
    const r = await api("POST", "/api/login", {
      username: form.username.value, password: form.password.value,
    });
    if (r.status === 200) { location.href = backTo(); return; }
    error.hidden = false;
    error.textContent = (r.data && r.data.detail) || `login failed (${r.status})`;
  });

  $("#new-item")?.addEventListener("click", async (event) => {
    const slug = event.currentTarget.dataset.tracker;
    const r = await api("POST", `/api/trackers/${encodeURIComponent(slug)}/items`, { fields: {} });
    if (r.status === 201) location.href = `/items/${r.data.id}`;
    else announce((r.data && r.data.detail) || `could not create an item (${r.status})`);
  });

  // ---- the federation admin page: export settings saved in place --------------------
  for (const form of document.querySelectorAll("form.export-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const note = $(".note", form);
      const button = $("button[type=submit]", form);
      const partners = form.partners.value.split(/[\s,]+/).filter(Boolean);
      const url = `/api/trackers/${encodeURIComponent(form.dataset.tracker)}/fields/${encodeURIComponent(form.dataset.field)}`;
      button.disabled = true;
      note.className = "note";
      note.textContent = "Saving…";
      try {
        const r = await api("PATCH", url, { export: { mode: form.mode.value, partners } });
        if (r.status === 200 && r.data && r.data.export) {
          form.mode.value = r.data.export.mode;
          form.partners.value = r.data.export.partners.join("\n");
          note.className = "note ok";
          note.textContent = "Saved.";
        } else {
          note.className = "note error";
          note.textContent = (r.data && r.data.detail) || `not saved (${r.status})`;
        }
      } catch {
        note.className = "note error";
        note.textContent = "not saved: the server could not be reached";
      } finally {
        button.disabled = false;
      }
    });
  }

  // ---- the item page ---------------------------------------------------------------
  const dataNode = $("#page-data");
  if (!dataNode) return;
  const page = JSON.parse(dataNode.textContent);
  // Out of the DOM once read: a field whose read right ends must not linger in the page.
  dataNode.remove();
  const itemId = page.item.id;
  const options = page.options;
  const position = { ...page.position };
  const fieldsNode = $("#fields");
  const fields = new Map(); // name -> state of that field on screen
  let deleted = false;
  const signedIn = Boolean($("#logout")); // the page was rendered for a logged-in user
  let loggedOut = false; // ...whose session has ended since

  const show = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

  function meta(state) {
    if (!state.version) return "never set";
    return `version ${state.version}` + (state.updatedBy ? ` · ${state.updatedBy}` : "") +
      (state.updatedAt ? ` · ${when(state.updatedAt)}` : "");
  }

  function render(name, data) {
    const state = {
      name, label: data.label, type: data.type, canEdit: data.can_edit && !deleted,
      value: data.value, version: data.version, updatedBy: data.updated_by,
      updatedAt: data.updated_at, editing: false, pendingRemote: null,
    };
    const section = el("section", { class: "field", id: `field-${name}`, "data-field": name,
      "aria-labelledby": `label-${name}` });
    section.append(el("h2", { class: "label", id: `label-${name}`, text: data.label }));
    state.valueNode = el("div", { class: "value", id: `value-${name}`, text: show(data.value) });
    section.append(state.valueNode);
    state.metaNode = el("p", { class: "meta", text: meta(state) });
    section.append(state.metaNode);
    if (data.type === "remote") {
      state.remoteNode = el("p", { class: "remote" });
      section.append(state.remoteNode);
      showRemote(state, data.remote);
    }
    state.noteNode = el("p", { class: "note", role: "status" });
    section.append(state.noteNode);
    state.section = section;
    if (state.canEdit) addEditButton(state);
    fields.set(name, state);
    return section;
  }

  // Where a remote field comes from and how current it is: live, stale, no longer shared.
  const REMOTE_STATES = { live: "live", stale: "stale", no_longer_shared: "no longer shared",
    not_subscribed: "not subscribed", unlinked: "not linked" };

  function showRemote(state, remote) {
    const node = state.remoteNode;
    if (!node) return;
    const source = (options[state.name] || {}).source || {};
    const r = remote || { instance: source.instance, state: "unlinked" };
    node.replaceChildren();
    node.dataset.state = r.state;
    node.append(`read-only, from ${r.instance || source.instance || "another instance"}`);
    if (r.item_url && /^https?:\/\//.test(r.item_url)) {
      node.append(" · ", el("a", { href: r.item_url, class: "host-item", text: r.item_url }));
    }
    let text = REMOTE_STATES[r.state] || r.state;
    if (r.state === "stale" && r.stale_since) text += ` since ${when(r.stale_since)} (host unreachable)`;
    node.append(" · ", el("span", { class: "remote-state", text }));
    if (r.synced_at) node.append(` · synced ${when(r.synced_at)}`);
    if (r.reason && r.state !== "live") node.append(el("span", { class: "remote-reason", text: ` — ${r.reason}` }));
  }

  async function refreshRemote() {
    const r = await api("GET", `/api/items/${itemId}`);
    if (r.status !== 200) return;
    for (const [name, data] of Object.entries(r.data.fields)) {
      const state = fields.get(name);
      if (state && data.remote) showRemote(state, data.remote);
    }
  }

  function addEditButton(state) {
    state.editButton = el("button", { type: "button", class: "edit", text: `Edit ${state.label}`,
      onclick: () => startEdit(state) });
    state.editButton.hidden = state.editing;
    state.section.insertBefore(state.editButton, state.noteNode);
  }

  // The user's edit right on a field changed while the page is open ("fields" frames).
  function setEditable(state, can) {
    if (state.type === "remote" || deleted || can === state.canEdit) return;
    state.canEdit = can;
    if (can) addEditButton(state);
    else { state.editButton?.remove(); state.editButton = null; }
    if (!state.editing) return;
    // Keep a draft on screen (it may be worth copying), but it can no longer be saved.
    const submit = state.form?.querySelector("button[type=submit]");
    if (submit) submit.disabled = !can;
    const lost = `You may no longer edit ${state.label}; cancel to close your draft`;
    if (!can) state.noteNode.textContent = lost;
    else if (state.noteNode.textContent === lost) state.noteNode.textContent = "";
  }

  // The user's rights on this item now: from "fields" frames and "subscribed" answers.
  function applyRights(readableNames, editableNames) {
    const readable = new Set(readableNames);
    const editable = new Set(editableNames || []);
    for (const name of [...fields.keys()]) {
      if (!readable.has(name)) forget(name);
    }
    fieldsChanged();
    for (const [name, state] of fields) setEditable(state, editable.has(name));
    if (readableNames.some((name) => !fields.has(name))) reloadItem();
  }

  function renderAll(item) {
    fieldsNode.replaceChildren();
    fields.clear();
    for (const [name, data] of Object.entries(item.fields)) fieldsNode.append(render(name, data));
  }

  // The fields on screen, in the tracker's order.
  function shownFields() {
    return [...fieldsNode.querySelectorAll(":scope > .field")]
      .map((section) => fields.get(section.dataset.field)).filter(Boolean);
  }

  // The same rule as pages.item_heading: the readable "title" field, else the first
  // readable one-line text field, else "#ID". Run again whenever values or rights change,
  // so a title the user may no longer read does not stay in the heading.
  function updateHeading() {
    const shown = shownFields();
    const source = fields.get("title") || shown.find((state) => state.type === "text");
    const value = source && typeof source.value === "string" ? source.value.trim() : "";
    const heading = value || `#${itemId}`;
    const h1 = $("#item-title");
    if (h1 && h1.textContent !== heading) h1.textContent = heading;
    document.title = `${heading} · ${page.tracker} · fieldcast`;
  }

  function forget(name) {
    // No longer readable: its draft (which may quote the old value) goes with it.
    dropDraft(fields.get(name));
    fields.get(name).section.remove();
    fields.delete(name);
    // Its changes go too: the history shows only fields the user may read now.
    for (const entry of historyList.querySelectorAll(".change")) {
      if (entry.dataset.field === name) entry.remove();
    }
  }

  function flash(state) {
    state.section.classList.remove("flash");
    void state.section.offsetWidth; // restart the animation
    state.section.classList.add("flash");
  }

  function setValue(state, value, version, by, at) {
    Object.assign(state, { value, version, updatedBy: by, updatedAt: at });
    state.valueNode.textContent = show(value);
    state.metaNode.textContent = meta(state);
    updateHeading();
  }

  function editorFor(state) {
    const id = `input-${state.name}`;
    const opts = options[state.name] || {};
    let input;
    if (state.type === "textarea") {
      input = el("textarea", { id, rows: 6 });
      input.value = state.value ?? "";
    } else if (state.type === "dropdown") {
      input = el("select", { id }, el("option", { value: "", text: "(none)" }),
        ...(opts.choices || []).map((c) => el("option", { value: c, text: c })));
      input.value = state.value ?? "";
    } else {
      const kind = { number: "number", date: "date" }[state.type] || "text";
      input = el("input", { id, type: kind, step: state.type === "number" ? (opts.integer ? "1" : "any") : undefined });
      input.value = state.value ?? "";
    }
    return input;
  }

  function readInput(state, input) {
    const raw = input.value;
    if (state.type === "number") return raw === "" ? null : Number(raw);
    if (["dropdown", "date", "user"].includes(state.type)) return raw === "" ? null : raw;
    return raw;
  }

  // Drafts live in sessionStorage until saved or cancelled: a reload, or logging in
  // again after the session ended elsewhere, brings them back into the editor.
  // Per user: another login in this tab does not get them.
  const draftKey = (state) => `fieldcast:draft:${page.user || ""}:${itemId}:${state.name}`;

  function keepDraft(state) {
    if (!state.input) return;
    try {
      sessionStorage.setItem(draftKey(state), JSON.stringify({ text: state.input.value, base: state.baseVersion }));
    } catch { /* storage full or disabled: the editor still holds the text */ }
  }

  function dropDraft(state) {
    try { sessionStorage.removeItem(draftKey(state)); } catch { /* see keepDraft */ }
  }

  function restoreDrafts() {
    for (const state of fields.values()) {
      let draft = null;
      try { draft = JSON.parse(sessionStorage.getItem(draftKey(state)) || "null"); } catch { /* a bad entry */ }
      if (!draft || typeof draft.text !== "string" || !state.canEdit) continue;
      startEdit(state, false);
      state.input.value = draft.text;
      // The version the draft was based on: if the field moved on, saving shows the conflict.
      if (Number.isInteger(draft.base)) state.baseVersion = draft.base;
      note(state, "Your unsaved text was restored; press Save to save it.");
    }
  }

  function note(state, text, kind = "") {
    state.noteNode.textContent = text;
    state.noteNode.dataset.kind = kind;
    if (text) announce(text);
  }

  function startEdit(state, focus = true) {
    if (state.editing || deleted) return;
    state.editing = true;
    state.baseVersion = state.version;
    const input = editorFor(state);
    input.addEventListener("input", () => keepDraft(state));
    const form = el("form", { class: "editor" },
      el("label", { for: input.id, class: "visually-hidden", text: state.label }), input,
      el("div", { class: "buttons" },
        el("button", { type: "submit", text: "Save" }),
        el("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => endEdit(state) })));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save(state, readInput(state, input), state.baseVersion);
    });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") { event.preventDefault(); endEdit(state); }
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && state.type === "textarea") {
        event.preventDefault();
        form.requestSubmit();
      }
      // Enter submits a text input by itself, but not a closed <select>.
      if (event.key === "Enter" && event.target.tagName === "SELECT" && !event.altKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    state.form = form;
    state.input = input;
    state.valueNode.hidden = true;
    if (state.editButton) state.editButton.hidden = true;
    state.section.insertBefore(form, state.noteNode);
    if (focus) input.focus();
  }

  function endEdit(state) {
    dropDraft(state);
    state.editing = false;
    state.input = null;
    state.unsaved = null;
    state.form?.remove();
    state.conflictNode?.remove();
    state.form = state.conflictNode = null;
    state.valueNode.hidden = false;
    note(state, "");
    if (state.editButton) { state.editButton.hidden = false; state.editButton.focus(); }
    if (state.pendingRemote) {
      const u = state.pendingRemote;
      state.pendingRemote = null;
      if (u.version > state.version) { setValue(state, u.value, u.version, u.by, u.at); flash(state); }
    }
  }

  const UNREACHABLE = "Not saved: cannot reach the server. Your text is kept here; press Save again once the connection is back.";
  const BACK = "The server is back: press Save to save your text.";
  const LOGGED_OUT = "Not saved: you were logged out. Log in again to save; your text is kept.";

  async function save(state, value, version) {
    if (!state.canEdit) return; // the right went away (Ctrl+Enter, "keep mine")
    keepDraft(state);
    let r = null;
    try {
      r = await api("PATCH", `/api/items/${itemId}/fields/${encodeURIComponent(state.name)}`,
        { value }, { "If-Match": `"${version}"` });
    } catch { /* the network failed: r stays null */ }
    if (r === null || [502, 503, 504].includes(r.status)) {
      // Down, or a proxy in front of it says so: keep the editor open with the text.
      state.unsaved = "unreachable";
      note(state, UNREACHABLE, "error");
    } else if (r.status === 200) {
      if (r.data.version > state.version) setValue(state, r.data.value, r.data.version, r.data.updated_by, r.data.updated_at);
      state.pendingRemote = null;
      endEdit(state);
      announce(`${state.label} saved`);
      if (loggedOut) sessionBack(); // logged in again in another tab
    } else if (r.status === 412) {
      showConflict(state, value, r.data.current);
    } else if (r.status === 401 || ([403, 404].includes(r.status) && await sessionGone())) {
      // 401: our cookie names an ended session. 403/404: the cookie is gone (logged out
      // in another tab), so the save was anonymous; /api/me tells which it was.
      sessionEnded();
      state.unsaved = "logged out";
      note(state, signedIn ? LOGGED_OUT : "Not saved: log in to save; your text is kept.", "error");
    } else {
      note(state, (r.data && r.data.detail) || `could not save (${r.status})`, "error");
    }
  }

  // ---- the session ending while the page is open -----------------------------------
  async function sessionGone() {
    if (!signedIn) return false;
    if (loggedOut) return true;
    try {
      const r = await api("GET", "/api/me");
      if (r.status === 401) { sessionEnded(); return true; }
    } catch { /* unreachable: not known to be logged out */ }
    return false;
  }

  function sessionEnded() {
    if (!signedIn || loggedOut) return;
    loggedOut = true;
    const login = `/login?next=${encodeURIComponent(location.pathname)}`;
    $("header .who")?.replaceChildren(el("a", { href: login, id: "login-again", text: "Log in" }));
    const banner = $("#session-note");
    if (banner) {
      banner.replaceChildren("You were logged out. ",
        el("a", { href: login, text: "Log in again" }), " to save; your text is kept.");
      banner.hidden = false;
    }
    announce("You were logged out. Log in again to save; your text is kept.");
    for (const state of fields.values()) if (state.editing) keepDraft(state);
  }

  async function sessionBack() {
    loggedOut = false;
    $("#session-note").hidden = true;
    const r = await api("GET", "/api/me").catch(() => null);
    if (r && r.status === 200) {
      // The same header base.html renders: Admin for admins, the name links to /account.
      const who = [];
      if (r.data.is_admin) who.push(el("a", { href: "/admin", id: "admin-link", text: "Admin" }));
      who.push(el("a", { href: "/account", id: "account-link", class: "account", title: "Your account",
                         text: r.data.display_name || r.data.username }),
               el("button", { type: "button", id: "logout", text: "Log out", onclick: logout }));
      $("header .who")?.replaceChildren(...who);
    }
    for (const state of fields.values()) if (state.unsaved === "logged out") { state.unsaved = null; note(state, ""); }
    delay = 500;
    if (!socket) connect(); // with the new session's cookie
  }

  function showConflict(state, mine, theirs) {
    state.conflictNode?.remove();
    const panel = el("div", { class: "conflict", role: "alert" },
      el("p", { text: `${theirs.updated_by || "Someone"} changed ${state.label} while you were editing` +
        (theirs.updated_at ? ` (${when(theirs.updated_at)}).` : ".") }),
      el("dl", {},
        el("dt", { text: "Their value" }), el("dd", { class: "theirs", text: show(theirs.value) }),
        el("dt", { text: "Your value" }), el("dd", { class: "mine", text: show(mine) })),
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "keep-mine", text: "Keep mine",
          onclick: () => save(state, mine, theirs.version) }),
        el("button", { type: "button", class: "take-theirs secondary", text: "Take theirs",
          onclick: () => {
            if (theirs.version > state.version) setValue(state, theirs.value, theirs.version, theirs.updated_by, theirs.updated_at);
            endEdit(state);
            announce(`kept ${theirs.updated_by || "their"} value of ${state.label}`);
          } })));
    state.conflictNode = panel;
    state.section.insertBefore(panel, state.noteNode);
    panel.querySelector(".keep-mine").focus();
  }

  function applyUpdate(u) {
    const state = fields.get(u.field);
    if (!state) { reloadItem(); return; } // a field we did not have: fetch it
    newer(state, u);
    if (state.type === "remote") refreshRemote(); // its sync time and state moved too
  }

  function newer(state, u) {
    if (u.version <= state.version) return; // already have it (our own save's echo, too)
    if (state.editing) {
      // Do not clobber a draft: remember the newest value; saving will show a conflict.
      if (!state.pendingRemote || u.version > state.pendingRemote.version) state.pendingRemote = u;
      state.noteNode.textContent = `${u.by || "someone"} changed this meanwhile (version ${u.version})`;
      return;
    }
    setValue(state, u.value, u.version, u.by, u.at);
    flash(state);
  }

  async function reloadItem() {
    const r = await api("GET", `/api/items/${itemId}`);
    if (r.status === 404 && await sessionGone()) return; // not deleted: logged out
    if (r.status === 404) { markDeleted(); return; }
    if (r.status !== 200) return;
    for (const name of [...fields.keys()]) {
      if (!(name in r.data.fields)) forget(name);
    }
    let added = false;
    const order = Object.keys(r.data.fields);
    order.forEach((name, i) => {
      const data = r.data.fields[name];
      const state = fields.get(name);
      if (state) {
        setEditable(state, data.can_edit);
        newer(state, { value: data.value, version: data.version, by: data.updated_by, at: data.updated_at });
        return;
      }
      // A field that became readable goes to its place in the tracker's order, before the
      // next one already shown; shown sections never move (that would blur an editor).
      const next = order.slice(i + 1).find((n) => fields.has(n));
      const section = render(name, data);
      if (next) fieldsNode.insertBefore(section, fields.get(next).section);
      else fieldsNode.append(section);
      added = true;
    });
    fieldsChanged();
    if (added) loadHistory(true); // older changes of a field that became readable
  }

  function markDeleted() {
    deleted = true;
    for (const state of fields.values()) { state.editButton?.remove(); state.form?.remove(); }
    fieldsNode.prepend(el("p", { class: "error", role: "alert", text: "This item was deleted." }));
  }

  // ---- the live socket -------------------------------------------------------------
  const conn = $("#conn");
  const connText = $("#conn-text");
  let socket = null;
  let delay = 500;
  let everLive = false;
  let heartbeat = 25;
  let lastHeard = Date.now();
  let retryTimer = null;

  function setConn(state, text) {
    if (conn.dataset.state === state) return;
    conn.dataset.state = state;
    connText.textContent = text || { live: "live", reconnecting: "reconnecting…", offline: "offline" }[state];
    announce(`connection ${connText.textContent}`);
    if (state !== "live") return;
    for (const f of fields.values()) if (f.unsaved === "unreachable") { f.unsaved = null; note(f, BACK); }
  }

  function connect() {
    retryTimer = null;
    if (socket || deleted) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(`${scheme}${location.host}/live`);
    socket = ws;
    lastHeard = Date.now();
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "subscribe", items: [itemId], position }));
    });
    ws.addEventListener("message", (event) => {
      lastHeard = Date.now();
      handle(JSON.parse(event.data));
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return; // an old socket we already gave up on
      socket = null;
      if (event.code === 4401) { setConn("offline", "offline: log in again"); sessionEnded(); return; }
      if (deleted) { setConn("offline"); return; }
      setConn(everLive && navigator.onLine ? "reconnecting" : "offline");
      // Exponential backoff with jitter, so a restarted server is not hit by everyone at once.
      const wait = delay * (0.5 + Math.random());
      delay = Math.min(delay * 2, 10000);
      retryTimer = setTimeout(connect, wait);
    });
  }

  function dropSocket() {
    // close() may take long to report on a dead network: forget the socket at once.
    const ws = socket;
    socket = null;
    ws?.close();
  }

  // The server pings every `heartbeat` seconds; silence for three means the connection
  // is half-open (a sleeping laptop, a dropped NAT entry) and will never report closing.
  setInterval(() => {
    if (socket && socket.readyState === WebSocket.OPEN && Date.now() - lastHeard > heartbeat * 3000) {
      dropSocket();
      setConn("reconnecting");
      retryTimer ??= setTimeout(connect, 0);
    }
  }, 5000);
  window.addEventListener("offline", () => setConn("offline"));
  window.addEventListener("online", () => {
    // Back online: try now instead of waiting out the backoff.
    delay = 500;
    if (retryTimer !== null) { clearTimeout(retryTimer); retryTimer = null; }
    if (!socket) { setConn("reconnecting"); connect(); } else if (socket.readyState === WebSocket.OPEN) setConn("live");
  });

  function advance(epoch, offset) {
    if (epoch === position.epoch && offset > position.offset) position.offset = offset;
  }

  function handle(msg) {
    switch (msg.type) {
      case "hello":
        if (msg.heartbeat > 0) heartbeat = msg.heartbeat;
        break;
      case "subscribed":
        delay = 500;
        everLive = true;
        setConn("live");
        // Rights may have changed while the socket was down.
        for (const f of msg.fields || []) if (f.item === itemId) applyRights(f.readable, f.editable);
        if (msg.recovered === false) {
          // The gap could not be replayed: reload, and take the server's position.
          Object.assign(position, { epoch: msg.epoch, offset: msg.offset });
          reloadItem();
          loadNewer();
        } else advance(msg.epoch, msg.offset);
        break;
      case "updates":
        for (const u of msg.updates) {
          if (u.item !== itemId) continue;
          applyUpdate(u);
          advance(u.epoch, u.event);
          loadNewer();
        }
        break;
      case "fields":
        if (msg.item === itemId) applyRights(msg.readable, msg.editable);
        break;
      case "deleted":
        markDeleted();
        dropSocket(); // nothing left to watch on this page
        setConn("offline");
        break;
      case "ping":
        socket?.send(JSON.stringify({ type: "pong" }));
        break;
      case "error":
        if (msg.retry) setTimeout(() => socket?.send(JSON.stringify({ type: "subscribe", items: [itemId], position })), 1000);
        break;
      default:
        break;
    }
  }

  // ---- the item's history --------------------------------------------------------
  // From GET /api/items/ID/history: changes of the fields the user may read now, newest
  // first, a page at a time; new changes are fetched as the socket reports them.
  const historyList = $("#history-list");
  const historyMore = $("#history-more");
  const historyField = $("#history-field");
  const historyStatus = $("#history-status");
  const HISTORY_PAGE = 20;
  let historyBefore = null; // where the next older page starts; null: no more
  let historyNewest = 0; // the newest event shown
  const historyShown = new Set(); // events on the list: a live fetch may race a page
  let historyRun = 0; // answers to an older filter are dropped
  let newerBusy = null;
  let newerAgain = false;
  let newerTimer = null;

  function historyUrl(before) {
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (historyField.value) q.set("field", historyField.value);
    if (before !== null) q.set("before", String(before));
    return `/api/items/${itemId}/history?${q}`;
  }

  function showable(c) {
    if (historyShown.has(c.event) || !fields.has(c.field)) return false;
    historyShown.add(c.event);
    return true;
  }

  function historyEntry(c) {
    const label = fields.get(c.field)?.label || c.field;
    const verb = c.old_version ? "changed" : "set";
    return el("li", { class: "change", "data-event": String(c.event), "data-field": c.field },
      el("p", { class: "change-head" },
        el("span", { class: "change-who", text: c.by || (c.source ? `from ${c.source}` : "someone") }),
        ` ${verb} `, el("span", { class: "change-field", text: label }), " · ",
        el("time", { datetime: c.at, text: when(c.at) })),
      el("dl", { class: "change-values" },
        el("dt", { text: "before" }), el("dd", { class: "change-old", text: show(c.old_value) }),
        el("dt", { text: "after" }), el("dd", { class: "change-new", text: show(c.value) })));
  }

  async function fetchHistory(before) {
    try {
      const r = await api("GET", historyUrl(before));
      if (r.status === 200) return r.data;
    } catch { /* shown below */ }
    return null;
  }

  function historyEmpty() {
    historyStatus.textContent = historyList.children.length ? "" : "No changes yet.";
  }

  async function loadHistory(reset) {
    if (reset) {
      historyRun += 1;
      historyList.replaceChildren();
      historyBefore = null;
      historyNewest = 0;
      historyShown.clear();
      historyMore.hidden = true;
    }
    const run = historyRun;
    historyStatus.textContent = "Loading…";
    historyMore.disabled = true;
    const data = await fetchHistory(reset ? null : historyBefore);
    if (run !== historyRun) return;
    historyMore.disabled = false;
    if (data === null) { historyStatus.textContent = "Could not load the history; try again later."; return; }
    for (const c of data.changes) {
      if (showable(c)) historyList.append(historyEntry(c));
      historyNewest = Math.max(historyNewest, c.event);
    }
    historyBefore = data.next_before;
    historyMore.hidden = historyBefore === null;
    historyEmpty();
  }

  // Changes newer than the newest shown go on top. Live frames carry no old value, so
  // this asks the server; a short, jittered wait turns a burst of updates (or many pages
  // watching one item) into one request each, spread out.
  function loadNewer() {
    newerTimer ??= setTimeout(() => { newerTimer = null; fetchNewer(); }, 150 + Math.random() * 350);
  }

  async function fetchNewer() {
    if (newerBusy) { newerAgain = true; return; }
    newerBusy = (async () => {
      do {
        newerAgain = false;
        const run = historyRun;
        const data = await fetchHistory(null);
        if (data === null || run !== historyRun) break;
        const fresh = data.changes.filter((c) => c.event > historyNewest);
        if (fresh.length === data.changes.length && data.next_before !== null && historyNewest > 0) {
          loadHistory(true); // more arrived than a page: start over rather than leave a gap
          break;
        }
        const first = historyList.firstChild;
        for (const c of fresh) if (showable(c)) historyList.insertBefore(historyEntry(c), first);
        for (const c of fresh) historyNewest = Math.max(historyNewest, c.event);
        if (historyNewest === 0) { historyBefore = data.next_before; historyMore.hidden = historyBefore === null; }
        historyEmpty();
      } while (newerAgain);
    })();
    try { await newerBusy; } finally { newerBusy = null; }
  }

  // The filter lists the fields on screen; called whenever that set changes.
  function fieldsChanged() {
    updateHeading();
    const chosen = historyField.value;
    const shown = shownFields();
    historyField.replaceChildren(el("option", { value: "", text: "all fields" }),
      ...shown.map((state) => el("option", { value: state.name, text: state.label })));
    if (shown.some((state) => state.name === chosen)) historyField.value = chosen;
    else if (chosen) loadHistory(true);
  }

  historyField.addEventListener("change", () => loadHistory(true));
  historyMore.addEventListener("click", () => loadHistory(false));

  // Admins link this item to an item of another instance (or unlink it).
  const linkForm = $("#link-form");
  linkForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("#link-status");
    status.textContent = "linking…";
    const r = await api("PUT", `/api/items/${itemId}/link`, { url: linkForm.url.value.trim() });
    if (r.status === 200) { status.textContent = "linked"; reloadItem(); refreshRemote(); }
    else status.textContent = (r.data && r.data.detail) || `could not link (${r.status})`;
  });
  $("#unlink")?.addEventListener("click", async () => {
    const r = await api("DELETE", `/api/items/${itemId}/link`);
    $("#link-status").textContent = r.status === 204 ? "unlinked" : ((r.data && r.data.detail) || `could not unlink (${r.status})`);
    refreshRemote();
  });

  renderAll(page.item);
  delete page.item;
  fieldsChanged();
  restoreDrafts();
  loadHistory(true);
  connect();
  window.fieldcast = { position, fields }; // for debugging and tests
})();
