// Sote Studio keyboard habits, in the page: Esc stops the running job, Alt+G jumps to the gallery,
// slider reset buttons are no Tab stops, and a dropdown's list closes when the focus leaves it.
(() => {
  if (window.soteKeyboard) return;
  window.soteKeyboard = true;

  const visible = (el) => !!el && el.offsetParent !== null;

  // Tabbing through the tag pickers left their lists open behind the focus, over the labels below
  // them: a list shows only while its dropdown holds the focus.
  const hideStaleLists = () => {
    const active = document.activeElement;
    document.querySelectorAll("[role=listbox]").forEach((list) => {
      const wrap = list.closest(".wrap");
      const box = list.parentElement;
      if (wrap && box) box.classList.toggle("sote-stale", !wrap.contains(active));
    });
  };
  document.addEventListener("focusin", () => setTimeout(hideStaleLists, 0));
  document.addEventListener("focusout", () => setTimeout(hideStaleLists, 0));
  const openLists = () => [...document.querySelectorAll("[role=listbox]")].filter(visible);

  // Each slider has a reset button: three Tab stops per slider is too many on the way to the gallery.
  let pending = false;
  const untab = () => {
    pending = false;
    document.querySelectorAll("button.reset-button:not([tabindex='-1'])")
      .forEach((button) => button.setAttribute("tabindex", "-1"));
  };
  new MutationObserver(() => {
    if (!pending) { pending = true; requestAnimationFrame(untab); }
  }).observe(document.documentElement, {childList: true, subtree: true});

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.ctrlKey && !event.altKey && !event.metaKey) {
      // A list or the suggestions popup takes Esc first; otherwise Esc is Stop.
      if (openLists().length || visible(document.querySelector("#tag_suggestions"))) return;
      const stop = ["#stop", "#compare_stop", "#grid_stop"].map((id) => document.querySelector(id))
        .find((button) => visible(button) && !button.disabled);
      if (stop) { stop.click(); event.preventDefault(); }
    } else if (event.altKey && !event.ctrlKey && (event.key === "g" || event.key === "G")) {
      const thumbs = [...document.querySelectorAll("#gallery .thumbnail-item")].filter(visible);
      const target = thumbs.find((el) => el.classList.contains("selected")) || thumbs[0];
      if (target) { target.focus(); target.scrollIntoView({block: "nearest"}); event.preventDefault(); }
    }
  }, true);
})();
