// The console's shell: sign-in, the page switch (hash routes: the URL never holds a key), sign-out.

import { session } from "./api.js";
import { h, field } from "./dom.js";
import { playgroundPage } from "./playground.js";
import { usagePage } from "./usage.js";
import { keysPage } from "./keys.js";
import { memoriesPage } from "./memories.js";

const PAGES = { playground: playgroundPage, usage: usagePage, keys: keysPage, memories: memoriesPage };

function signInPage(main) {
  const user = h("input", { id: "signin-key", type: "password", autocomplete: "off", placeholder: "tr-…" });
  const admin = h("input", { id: "signin-admin", type: "password", autocomplete: "off", placeholder: "admin key (optional)" });
  const form = h(
    "form",
    {
      id: "signin",
      class: "card narrow",
      onsubmit: (event) => {
        event.preventDefault();
        session.signIn(user.value.trim(), admin.value.trim());
        route();
      },
    },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Keys stay in this tab's session storage and are sent only in the Authorization header."),
    field("API key", user, "For the playground and your memories. Leave empty when the server runs without keys."),
    field("Admin key", admin, "For usage, keys and any key's memories; sent to /admin only."),
    h("button", { type: "submit", id: "signin-submit" }, "Sign in"),
  );
  main.replaceChildren(form);
  user.focus();
}

function renderWho() {
  const who = document.getElementById("who");
  if (!session.signedIn) {
    who.replaceChildren();
    return;
  }
  const parts = [];
  if (session.user) parts.push("key " + session.user.slice(0, 15) + "…");
  else if (session.user === "") parts.push("no key");
  if (session.admin) parts.push("admin");
  who.replaceChildren(
    h("span", { class: "muted" }, parts.join(" · ")),
    h(
      "button",
      {
        id: "signout",
        class: "link",
        onclick: () => {
          session.signOut();
          route();
        },
      },
      "Sign out",
    ),
  );
}

function route() {
  const main = document.getElementById("main");
  renderWho();
  if (!session.signedIn) {
    signInPage(main);
    return;
  }
  const home = session.user === null ? "usage" : "playground";
  const name = (location.hash.replace(/^#\/?/, "") || home).split("?")[0];
  const page = PAGES[name] ? name : home;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === page);
  main.replaceChildren();
  PAGES[page](main);
}

window.addEventListener("hashchange", route);
route();
