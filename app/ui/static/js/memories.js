// Memories: browse, search and delete. With an API key: that key's own memories (/v1/memories).
// With the admin key: any key's, picked from the list (/admin/memories; the admin key stays on /admin).

import { adminApi, query, session, userApi } from "./api.js";
import { errorBox, field, fmtTime, h } from "./dom.js";

export function memoriesPage(main) {
  const asAdmin = Boolean(session.admin);
  const keyPick = h("select", { id: "mem-key" });
  const user = h("input", { id: "mem-user", placeholder: "end user (optional)" });
  const search = h("input", { id: "mem-search", type: "search", placeholder: "search words" });
  const list = h("ul", { id: "mem-list", class: "memories" });
  const notice = h("div", { id: "mem-notice" });
  const more = h("button", { id: "mem-more", type: "button", class: "secondary", hidden: true }, "Load more");
  let after = null;
  // Each load is numbered: a page that comes back after a newer load began (the first key's list
  // racing the one just picked, a search) is dropped instead of appended to the newer list.
  let loads = 0;

  main.append(
    h("h1", {}, "Memories"),
    h(
      "form",
      { class: "row filters", onsubmit: (event) => (event.preventDefault(), load(true)) },
      asAdmin ? field("Key", keyPick) : null,
      field("User", user),
      field("Search", search),
      h("button", { type: "submit", id: "mem-go" }, "Show"),
    ),
    notice,
    list,
    more,
  );
  more.addEventListener("click", () => load(false));
  keyPick.addEventListener("change", () => load(true));

  function api(sub, params, options) {
    const scope = { ...params, user: user.value.trim() };
    if (asAdmin) return adminApi("/admin/memories" + sub + query({ ...scope, key_id: keyPick.value }), options);
    return userApi("/v1/memories" + sub + query(scope), options);
  }

  async function start() {
    if (asAdmin) {
      try {
        const keys = await adminApi("/admin/keys");
        keyPick.replaceChildren(...keys.data.filter((k) => k.status === "active").map((k) => h("option", { value: k.id }, `${k.name} (${k.id})`)));
      } catch (err) {
        notice.replaceChildren(errorBox(err));
        return;
      }
    }
    load(true);
  }

  async function load(fresh) {
    const mine = ++loads;
    if (fresh) {
      after = null;
      list.replaceChildren();
    }
    if (asAdmin && !keyPick.value) {
      notice.replaceChildren(h("p", { class: "muted" }, "No active key to show."));
      return;
    }
    notice.replaceChildren();
    try {
      const words = search.value.trim();
      const page = words ? await api("/search", { q: words, limit: 20 }) : await api("", { limit: 20, after });
      if (mine !== loads) return;
      list.append(...page.data.map(item));
      after = page.last_id || null;
      more.hidden = !page.has_more;
      if (!list.children.length) list.append(h("li", { class: "muted" }, words ? "No memory matches." : "No memories yet."));
    } catch (err) {
      notice.replaceChildren(errorBox(err));
    }
  }

  function item(memory) {
    const li = h(
      "li",
      { class: "memory", "data-memory-id": memory.id },
      h("div", { class: "text" }, memory.text),
      h(
        "div",
        { class: "meta muted" },
        fmtTime(memory.created_at),
        memory.tags && memory.tags.length ? " · " + memory.tags.join(", ") : "",
        " · ",
        h("span", { class: "mono" }, memory.id),
      ),
      h(
        "button",
        {
          type: "button",
          class: "danger delete",
          onclick: async () => {
            try {
              await api("/" + encodeURIComponent(memory.id), {}, { method: "DELETE" });
              li.remove();
            } catch (err) {
              notice.replaceChildren(errorBox(err));
            }
          },
        },
        "Delete",
      ),
    );
    return li;
  }

  start();
}
