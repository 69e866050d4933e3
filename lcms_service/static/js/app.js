// The operator application: log in, then the Viewer (#viewer), the Validation Tool (#validate, or
// #validate/<change id> to open one change) or the blind Assessment of accuracy sample points (#assess). Views are built the first time they are shown (MapLibre needs
// a visible container to size its maps) and kept afterwards.

import { api, onUnauthorized, setCsrfToken } from "./api.js";
import { Assessment } from "./assess.js";
import { $, announce } from "./dom.js";
import { focusLogin, setUpLogin } from "./login.js";
import { hasRole, session } from "./session.js";
import { ValidationTool } from "./validate.js";
import { Viewer } from "./viewer.js";

const VIEWS = ["login", "viewer", "validate", "assess"];
const TITLES = { login: "Log in", viewer: "Viewer", validate: "Validation Tool", assess: "Assessment" };
const MAKERS = { viewer: () => new Viewer(), validate: () => new ValidationTool(), assess: () => new Assessment() };
const built = {};

function showOnly(name) {
  for (const id of VIEWS) $(`#view-${id}`).hidden = id !== name;
  for (const id of ["viewer", "validate", "assess"]) {
    const link = $(`#nav-${id}`);
    if (id === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${TITLES[name]} · LCMS`;
  document.body.dataset.view = name;
}

async function route() {
  if (!session.user) return;
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  // Assessment is for labellers (validator or admin) only: a viewer's #assess shows the Viewer.
  const view = name === "validate" || (name === "assess" && hasRole("validator")) ? name : "viewer";
  showOnly(view);
  try {
    if (!built[view]) built[view] = MAKERS[view]();
    await built[view].show(rest.length ? decodeURIComponent(rest.join("/")) : undefined);
  } catch (err) {
    console.error(err);
    announce(`The ${TITLES[view]} could not start: ${err.message}`, "error");
  }
}

let lastUser = null;

async function signedIn(me) {
  if (lastUser && lastUser !== me.name) {
    location.reload(); // another user after an ended session: start from a clean page
    return;
  }
  lastUser = me.name;
  session.user = me;
  setCsrfToken(me.csrf_token);
  $("#user-name").textContent = me.name;
  $("#user-role").textContent = me.role;
  $("#user-box").hidden = false;
  $("#nav").hidden = false;
  $("#nav-assess").hidden = !hasRole("validator");
  document.body.classList.toggle("read-only", !["validator", "admin"].includes(me.role));
  announce("");
  if (!session.projects.length) {
    try {
      session.projects = await api.projects();
    } catch (err) {
      announce(`Could not read the projects: ${err.message}`, "error");
      return;
    }
    if (!session.projects.length) {
      announce("The service publishes no project yet: run the pipeline and publish a season first.", "error");
      return;
    }
  }
  await route();
}

function signedOut(message) {
  session.user = null;
  setCsrfToken(null);
  $("#user-box").hidden = true;
  $("#nav").hidden = true;
  showOnly("login");
  focusLogin();
  announce(message || "");
}

async function start() {
  setUpLogin(signedIn);
  onUnauthorized(() => signedOut("Your session has ended: please log in again."));
  $("#logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } catch (err) {
      if (err.status !== 401) announce(`Logout failed: ${err.message}`, "error");
    }
    // A fresh page: nothing of this user's session stays in memory or in the DOM.
    location.replace(new URL(".", document.baseURI).href);
  });
  window.addEventListener("hashchange", route);
  try {
    await signedIn(await api.me());
  } catch (err) {
    if (err.status === 401) signedOut();
    else {
      signedOut();
      announce(`The service did not answer as expected: ${err.message}`, "error");
    }
  }
}

start();
