// The login page: the form posts the token to dashboard/login, which sets the session
// cookie (HttpOnly: no script ever sees the token or the cookie) and sends the page back.
"use strict";
(function () {
  const TEXT = {
    en: {
      "login.intro": "Enter the token this server was started with.",
      "login.failed": "Wrong token.",
      "login.token": "Token",
      "login.submit": "Log in",
    },
    ja: {
      "login.intro": "サーバー起動時に指定したトークンを入力してください。",
      "login.failed": "トークンが違います。",
      "login.token": "トークン",
      "login.submit": "ログイン",
    },
  };
  function language() {
    const saved = localStorage.getItem("asyncflow.lang");
    if (saved && TEXT[saved]) return saved;
    const wanted = navigator.languages || [navigator.language || "en"];
    for (const l of wanted) if (TEXT[l.slice(0, 2)]) return l.slice(0, 2);
    return "en";
  }
  function apply(lang) {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = TEXT[lang][el.dataset.i18n];
    }
  }
  const select = document.getElementById("lang");
  select.value = language();
  apply(select.value);
  select.addEventListener("change", () => {
    localStorage.setItem("asyncflow.lang", select.value);
    apply(select.value);
  });
  if (new URLSearchParams(location.search).get("login") === "failed") {
    document.getElementById("login-failed").hidden = false;
  }
})();
