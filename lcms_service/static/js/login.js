// The login view: POST /api/auth/login with the name and password; the service answers with the user and
// sets the session cookie (HttpOnly: this page never sees it).

import { api } from "./api.js";
import { $ } from "./dom.js";

/** Wire the login form; `onSignedIn(me)` is called with /api/auth/me's answer after a successful login. */
export function setUpLogin(onSignedIn) {
  const form = $("#login-form");
  const error = $("#login-error");
  const button = $("#login-submit");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      await api.login($("#login-name").value.trim(), $("#login-password").value);
      const me = await api.me(); // the CSRF token of the new session
      $("#login-password").value = "";
      onSignedIn(me);
    } catch (err) {
      error.textContent = err.status === 401 ? "Wrong user name or password." : `Could not log in: ${err.message}`;
      $("#login-password").select();
    } finally {
      button.disabled = false;
    }
  });
}

export function focusLogin() {
  const name = $("#login-name");
  (name.value ? $("#login-password") : name).focus();
}
