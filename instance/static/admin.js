// The admin pages and the account page: every form is sent to the JSON API, and the
// API's answer (its validation message, word for word) is shown next to the form, with
// what was typed left in place. User data goes into the page with textContent only.
(() => {
  "use strict";
  // $, el, announce and api are fieldcast.js's, which base.html loads first.
  const { $, el, announce, api } = window.fieldcast;
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const FLASH = "fieldcast-flash";

  const detail = (r, what) => (r.data && r.data.detail) || `${what} (HTTP ${r.status})`;

  // ---- a form's inputs as the API's JSON body ---------------------------------------
  // name="a.b" nests; data-list checkboxes collect their values into a list; other
  // checkboxes are true/false; data-lines is a list of non-empty lines; data-number is
  // a number when it reads as one (else the text, for the API to explain); data-optional
  // is left out when empty; data-skip is never sent. Disabled fieldsets are left out,
  // and an enabled data-object fieldset sends its object even when it is empty.
  function put(body, path, value) {
    const keys = path.split(".");
    let node = body;
    for (const key of keys.slice(0, -1)) node = (node[key] ??= {});
    node[keys.at(-1)] = value;
  }

  function bodyOf(form) {
    const body = {};
    for (const set of $$("fieldset[data-object]", form)) {
      if (!set.disabled) put(body, set.dataset.object, {});
    }
    for (const input of form.elements) {
      if (!input.name || input.matches(":disabled") || "skip" in input.dataset) continue;
      if (input.type === "checkbox") {
        if ("list" in input.dataset) {
          if (!(input.name in body)) body[input.name] = [];
          if (input.checked) body[input.name].push(input.value);
        } else put(body, input.name, input.checked);
        continue;
      }
      const raw = input.value;
      if ("optional" in input.dataset && raw.trim() === "") continue;
      let value = raw;
      if ("lines" in input.dataset) value = raw.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
      else if ("number" in input.dataset) {
        const n = Number(raw.trim());
        value = raw.trim() !== "" && Number.isFinite(n) ? n : raw;
      }
      put(body, input.name, value);
    }
    // A list of checkboxes with none ticked is still sent, as [].
    for (const input of $$("input[type=checkbox][data-list]", form)) {
      if (!input.matches(":disabled") && !(input.name in body)) body[input.name] = [];
    }
    return body;
  }

  // "/api/groups/Staff/members/{username}": the placeholders come from the form.
  function urlOf(form, body) {
    let missing = null;
    const url = form.dataset.url.replace(/\{(\w+)\}/g, (_, name) => {
      const value = (body[name] ?? "").toString().trim();
      delete body[name];
      if (!value) missing = name;
      return encodeURIComponent(value);
    });
    return { url, missing };
  }

  // ---- unsaved work -----------------------------------------------------------------
  const dirty = new Set();
  let leaving = false; // a reload or a move we asked for: no "leave this page?" prompt
  function watch(form) {
    form.addEventListener("input", () => dirty.add(form));
    form.addEventListener("change", () => dirty.add(form));
  }
  window.addEventListener("beforeunload", (event) => {
    if (dirty.size && !leaving) { event.preventDefault(); event.returnValue = ""; }
  });

  function setNote(form, text, kind) {
    const note = $(".note", form);
    note.className = `note ${kind || ""}`.trim();
    note.textContent = text;
    if (kind === "error") note.setAttribute("role", "alert"); else note.setAttribute("role", "status");
  }

  // After a change the page must show (a new row): reload, unless another form holds
  // typing that a reload would throw away.
  function reloadShowing(form, text) {
    dirty.delete(form);
    if (dirty.size) {
      setNote(form, `${text} Reload the page to see it (another form here has unsaved changes).`, "ok");
      return;
    }
    sessionStorage.setItem(FLASH, text);
    leaving = true;
    location.reload();
  }

  function showFlash() {
    const text = sessionStorage.getItem(FLASH);
    if (!text) return;
    sessionStorage.removeItem(FLASH);
    const node = $("#flash");
    if (node) { node.textContent = text; node.hidden = false; }
    announce(text);
  }

  // ---- what follows a successful answer ---------------------------------------------
  const THEN = {
    stay(form) {
      dirty.delete(form);
      for (const input of $$("[data-clear-on-save]", form)) input.value = "";
      setNote(form, "Saved.", "ok");
    },
    reload(form) { reloadShowing(form, "Saved."); },
    field(form, r) {
      THEN.stay(form);
      // The heading and the buttons name the field by its label: keep them true.
      const row = form.closest("[data-row]");
      const heading = $("h3", row);
      heading.firstChild.textContent = `${r.data.label} `;
      $("button[type=submit]", form).textContent = `Save ${r.data.label}`;
      $("button.move[data-dir='-1']", row).setAttribute("aria-label", `Move ${r.data.label} up`);
      $("button.move[data-dir='1']", row).setAttribute("aria-label", `Move ${r.data.label} down`);
    },
    tracker(form, r) {
      THEN.stay(form);
      $("h1").firstChild.textContent = `${r.data.name} `;
    },
    user(form, r) {
      THEN.stay(form);
      // The summary line shows the account as saved.
      const summary = $("summary", form.closest("details"));
      for (const badge of $$(".badge", summary)) badge.remove();
      const name = $(".summary-name", summary);
      if (r.data.disabled) name.after(" ", el("span", { class: "badge bad", text: "disabled" }));
      if (r.data.is_admin) name.after(" ", el("span", { class: "badge", text: "admin" }));
      $(".summary-groups", summary).textContent = r.data.groups.join(", ");
    },
    goto(form, r) {
      dirty.delete(form);
      leaving = true;
      location.href = form.dataset.goto.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(r.data[k]));
    },
    password(form) {
      dirty.delete(form);
      for (const input of $$("input[type=password]", form)) input.value = "";
      setNote(form, "Password changed. Your other sessions were ended.", "ok");
    },
    token(form, r) {
      dirty.delete(form);
      form.reset();
      setNote(form, `Token ${r.data.name} created.`, "ok");
      const box = $("#new-token");
      $("#new-token-value").value = r.data.token;
      box.hidden = false;
      $("#new-token-value").focus();
      $("#new-token-value").select();
      const revoke = el("button", { type: "button", class: "secondary small api-action",
        "data-method": "DELETE", "data-url": `/api/tokens/${r.data.id}`, "data-then": "remove",
        "data-confirm": `Revoke the token ${r.data.name}? Scripts using it stop working.`,
        "aria-label": `Revoke token ${r.data.name}`, text: "Revoke" });
      bindAction(revoke);
      $("#tokens tbody").append(el("tr", { "data-row": true, "data-id": r.data.id },
        el("td", { text: r.data.name }), el("td", {}, when(r.data.created_at)),
        el("td", {}, el("span", { class: "muted", text: "never" })), el("td", {}, revoke)));
      $("#no-tokens").hidden = true;
      $("#tokens-wrap").hidden = false;
    },
  };

  function when(iso) {
    if (!iso) return el("span", { class: "muted", text: "never" });
    return el("time", { datetime: iso, text: new Date(iso).toLocaleString() });
  }

  async function submit(form) {
    const button = $("button[type=submit]", form);
    const body = bodyOf(form);
    for (const input of $$("[data-same-as]", form)) {
      if (input.value !== form.elements[input.dataset.sameAs].value) {
        setNote(form, "the two new passwords differ", "error");
        input.focus();
        return;
      }
    }
    const { url, missing } = urlOf(form, body);
    if (missing) { setNote(form, `type a ${missing} first`, "error"); return; }
    const method = form.dataset.method;
    const send = ["PUT", "DELETE"].includes(method) && !Object.keys(body).length ? undefined : body;
    button.disabled = true;
    setNote(form, "Saving…");
    try {
      const r = await api(method, url, send);
      if (r.ok) THEN[form.dataset.then](form, r);
      else setNote(form, detail(r, "not saved"), "error");
    } catch {
      setNote(form, "not saved: the server could not be reached", "error");
    } finally {
      button.disabled = false;
    }
  }

  for (const form of $$("form.api-form")) {
    watch(form);
    form.addEventListener("submit", (event) => { event.preventDefault(); submit(form); });
  }

  // ---- buttons that delete or remove one thing --------------------------------------
  function bindAction(button) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      const row = button.closest("[data-row]");
      const noteIn = button.closest("form") || button.closest("section") || row;
      button.disabled = true;
      try {
        const r = await api(button.dataset.method, button.dataset.url);
        if (!r.ok) {
          const text = detail(r, "not done");
          const note = noteIn && $(".note", noteIn);
          if (note) { note.className = "note error"; note.textContent = text; } else announce(text);
          return;
        }
        // Focus moves somewhere sensible before the row (and the button) go away.
        const next = row.nextElementSibling || row.previousElementSibling;
        const list = row.parentElement;
        row.remove();
        for (const form of $$("form", row)) dirty.delete(form);
        (next?.querySelector("button, a, input") || $("h1"))?.focus?.();
        announce("Done.");
        if (list && !list.querySelector("[data-row]")) {
          if (list.matches("ul")) list.append(el("li", { class: "muted empty", text: "No members yet." }));
          if (list.closest("#tokens")) { $("#no-tokens").hidden = false; $("#tokens-wrap").hidden = true; }
        }
      } catch {
        announce("not done: the server could not be reached");
      } finally {
        button.disabled = false;
      }
    });
  }
  $$("button.api-action").forEach(bindAction);

  // ---- a new field's type chooses which options it has ------------------------------
  for (const select of $$("select.type-select")) {
    const form = select.form;
    const sync = () => {
      for (const set of $$("fieldset[data-type]", form)) {
        const on = set.dataset.type === select.value;
        set.disabled = !on;
        set.hidden = !on;
      }
      const exportSet = $("fieldset[data-export]", form);
      if (exportSet) { exportSet.disabled = select.value === "remote"; exportSet.hidden = exportSet.disabled; }
    };
    select.addEventListener("change", sync);
    sync();
  }

  // ---- field order: move a field up or down, saved at once --------------------------
  const list = $("#field-list");
  function markEnds() {
    const rows = $$(":scope > [data-row]", list);
    rows.forEach((row, i) => {
      $("button.move[data-dir='-1']", row).disabled = i === 0;
      $("button.move[data-dir='1']", row).disabled = i === rows.length - 1;
    });
  }
  for (const button of $$("button.move")) {
    button.addEventListener("click", async () => {
      const row = button.closest("[data-row]");
      const rows = $$(":scope > [data-row]", list);
      const at = rows.indexOf(row);
      const to = at + Number(button.dataset.dir);
      if (to < 0 || to >= rows.length) return;
      const names = rows.map((r) => r.dataset.name);
      [names[at], names[to]] = [names[to], names[at]];
      const r = await api("PUT", list.dataset.orderUrl, { fields: names });
      if (!r.ok) { setNote($("form", row), detail(r, "not moved"), "error"); return; }
      if (to < at) list.insertBefore(row, rows[to]); else list.insertBefore(row, rows[to].nextSibling);
      markEnds();
      // Keep the keyboard where it was; at an end, on the other button.
      (button.disabled ? $(`button.move[data-dir='${-Number(button.dataset.dir)}']`, row) : button).focus();
      announce(`${$("h3", row).textContent.trim()} moved ${to < at ? "up" : "down"}, to place ${to + 1}`);
    });
  }

  // ---- the account page ------------------------------------------------------------
  $("#copy-token")?.addEventListener("click", async () => {
    const input = $("#new-token-value");
    try { await navigator.clipboard.writeText(input.value); announce("Token copied."); } catch {
      input.select();
      announce("Select the token and copy it.");
    }
  });
  for (const node of $$("#tokens time")) {
    const iso = node.getAttribute("datetime");
    if (iso) node.textContent = new Date(iso).toLocaleString();
  }

  showFlash();
})();
