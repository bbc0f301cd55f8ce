// Keys (admin): create (the secret shown once), list, update limits/models/budget/expiry, rotate, revoke.

import { adminApi } from "./api.js";
import { errorBox, field, fmtTime, fmtUsd, h } from "./dom.js";

const PERIODS = ["daily", "weekly", "monthly", "total"];

function limitInputs(key = {}) {
  const expires = key.expires_at ? new Date(key.expires_at * 1000).toISOString().slice(0, 16) : "";
  return {
    models: h("input", { name: "models", value: key.models ? key.models.join(", ") : "", placeholder: "* (every model), or ids / patterns, comma-separated" }),
    rpm: h("input", { name: "rpm", type: "number", min: 0, value: key.rpm ?? "", placeholder: "no limit" }),
    tpm: h("input", { name: "tpm", type: "number", min: 0, value: key.tpm ?? "", placeholder: "no limit" }),
    max_parallel: h("input", { name: "max_parallel", type: "number", min: 0, value: key.max_parallel ?? "", placeholder: "no limit" }),
    budget_usd: h("input", { name: "budget_usd", type: "number", min: 0, step: "any", value: key.budget_usd ?? "", placeholder: "no budget" }),
    budget_period: h("select", { name: "budget_period" }, PERIODS.map((p) => h("option", { value: p, selected: (key.budget_period || "monthly") === p }, p))),
    expires_at: h("input", { name: "expires_at", type: "datetime-local", value: expires }),
  };
}

function number(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

function limitsBody(inputs) {
  const models = inputs.models.value.split(",").map((m) => m.trim()).filter(Boolean);
  const expires = inputs.expires_at.value ? Math.floor(Date.parse(inputs.expires_at.value + "Z") / 1000) : null;
  return {
    models: models.length === 1 && models[0] === "*" ? [] : models,
    rpm: number(inputs.rpm),
    tpm: number(inputs.tpm),
    max_parallel: number(inputs.max_parallel),
    budget_usd: number(inputs.budget_usd),
    budget_period: inputs.budget_period.value,
    expires_at: expires,
  };
}

function limitFields(inputs) {
  return [
    field("Models", inputs.models),
    h("div", { class: "row" }, field("Requests/min", inputs.rpm), field("Tokens/min", inputs.tpm), field("Parallel", inputs.max_parallel)),
    h("div", { class: "row" }, field("Budget (USD)", inputs.budget_usd), field("Period", inputs.budget_period), field("Expires (UTC)", inputs.expires_at)),
  ];
}

export function keysPage(main) {
  const notice = h("div", { id: "keys-notice" });
  const tbody = h("tbody", { id: "keys-rows" });
  const name = h("input", { id: "key-name", name: "name", required: true, placeholder: "who or what uses it" });
  const inputs = limitInputs();
  const create = h(
    "form",
    {
      id: "key-create",
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { name: name.value.trim(), ...limitsBody(inputs) };
        for (const k of ["rpm", "tpm", "max_parallel", "budget_usd", "expires_at"]) if (body[k] === null) delete body[k];
        try {
          const key = await adminApi("/admin/keys", { method: "POST", body });
          showSecret(notice, "Created key " + key.id, key.value);
          name.value = "";
          load();
        } catch (err) {
          notice.replaceChildren(errorBox(err));
        }
      },
    },
    h("h2", {}, "Create a key"),
    field("Name", name),
    limitFields(inputs),
    h("button", { type: "submit", id: "key-create-submit" }, "Create key"),
  );
  main.append(
    h("h1", {}, "Keys"),
    notice,
    h(
      "div",
      { class: "table-wrap" },
      h("table", { id: "keys-table" }, h("thead", {}, h("tr", {}, ["Key", "Name", "Status", "Models", "Limits", "Spend / budget", "Expires", ""].map((c) => h("th", {}, c)))), tbody),
    ),
    create,
  );
  // Each load is numbered: a listing that comes back after a newer one was asked for (the page's
  // first load racing a create's) is dropped rather than drawn over the newer one.
  let loads = 0;
  load();

  async function load() {
    const mine = ++loads;
    try {
      const listing = await adminApi("/admin/keys");
      if (mine !== loads) return;
      tbody.replaceChildren(...listing.data.map((key) => keyRow(key)));
    } catch (err) {
      notice.replaceChildren(errorBox(err));
    }
  }

  function keyRow(key) {
    const active = key.status === "active";
    const limits = [key.rpm && `${key.rpm} rpm`, key.tpm && `${key.tpm} tpm`, key.max_parallel && `${key.max_parallel} parallel`].filter(Boolean).join(", ") || "none";
    const spend =
      key.budget_usd !== null && key.budget_usd !== undefined
        ? h("div", {}, h("meter", { min: 0, max: key.budget_usd || 1, high: (key.budget_usd || 1) * 0.8, value: key.spent_usd || 0 }), ` ${fmtUsd(key.spent_usd || 0)} of ${fmtUsd(key.budget_usd)} ${key.budget_period}`)
        : h("span", { class: "muted" }, "no budget");
    const actions = active
      ? [
          h("button", { class: "secondary edit", type: "button", onclick: () => edit(row, key) }, "Edit"),
          h("button", { class: "secondary rotate", type: "button", onclick: () => rotate(key) }, "Rotate"),
          h("button", { class: "danger revoke", type: "button", onclick: () => revoke(key) }, "Revoke"),
        ]
      : [];
    const row = h(
      "tr",
      { "data-key-id": key.id, class: active ? null : "revoked" },
      h("td", { class: "mono" }, key.redacted_value || key.id),
      h("td", {}, key.name),
      h("td", { class: "status" }, key.status, key.previous_key_valid_until ? h("small", { class: "muted" }, ` (old secret until ${fmtTime(key.previous_key_valid_until)})`) : null),
      h("td", {}, (key.models || []).join(", ")),
      h("td", {}, limits),
      h("td", {}, spend),
      h("td", {}, key.expires_at ? fmtTime(key.expires_at) : "never"),
      h("td", { class: "actions" }, actions),
    );
    return row;
  }

  function edit(row, key) {
    const inputs = limitInputs(key);
    const editor = h(
      "tr",
      { class: "editor" },
      h(
        "td",
        { colspan: 8 },
        h(
          "form",
          {
            class: "key-edit",
            onsubmit: async (event) => {
              event.preventDefault();
              try {
                await adminApi(`/admin/keys/${encodeURIComponent(key.id)}`, { method: "POST", body: limitsBody(inputs) });
                notice.replaceChildren(h("div", { class: "ok" }, `Updated key ${key.id}.`));
                load();
              } catch (err) {
                notice.replaceChildren(errorBox(err));
              }
            },
          },
          limitFields(inputs),
          h("button", { type: "submit" }, "Save"),
          h("button", { type: "button", class: "secondary", onclick: () => editor.remove() }, "Cancel"),
        ),
      ),
    );
    row.after(editor);
  }

  async function rotate(key) {
    const grace = prompt(`Rotate key ${key.id}: a new secret is made. For how many seconds may the old secret still be used (0: it stops now)?`, "3600");
    if (grace === null) return;
    try {
      const body = { grace_seconds: Number(grace) || 0 };
      const rotated = await adminApi(`/admin/keys/${encodeURIComponent(key.id)}/rotate`, { method: "POST", body });
      showSecret(notice, "Rotated key " + key.id, rotated.value);
      load();
    } catch (err) {
      notice.replaceChildren(errorBox(err));
    }
  }

  async function revoke(key) {
    if (!confirm(`Revoke key ${key.id} (${key.name})? Requests with it fail from now on.`)) return;
    try {
      await adminApi(`/admin/keys/${encodeURIComponent(key.id)}/revoke`, { method: "POST" });
      notice.replaceChildren(h("div", { class: "ok" }, `Revoked key ${key.id}.`));
      load();
    } catch (err) {
      notice.replaceChildren(errorBox(err));
    }
  }
}

function showSecret(notice, title, secret) {
  const value = h("code", { id: "key-secret", class: "secret" }, secret);
  notice.replaceChildren(
    h(
      "div",
      { class: "card secret-box", role: "status" },
      h("strong", {}, title),
      h("p", {}, "Copy the secret now: it is shown once and cannot be read again."),
      value,
      " ",
      h("button", { type: "button", class: "secondary", onclick: () => navigator.clipboard && navigator.clipboard.writeText(secret) }, "Copy"),
    ),
  );
}
