/* The model picker on the API key form: chips for the chosen names, and a
 * search over the catalog (routes, wildcard routes, aliases, routers) that
 * still takes any name typed, for patterns such as "openai/*". The textarea
 * it hides stays the form's value (one name per line), so without
 * JavaScript staff type the list themselves. */
(function () {
  "use strict";

  var MAX_OPTIONS = 30;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function picker(source) {
    var catalogNode = document.getElementById(source.id + "-catalog");
    var catalog = catalogNode ? JSON.parse(catalogNode.textContent) : [];
    var names = source.value.split(/[\s,]+/).filter(Boolean);
    var root = el("div", "model-picker");
    var chips = el("ul", "model-picker-chips");
    var input = el("input", "model-picker-input");
    var options = el("ul", "model-picker-options");
    var active = -1;
    input.type = "text";
    input.id = source.id + "-search";
    input.setAttribute("autocomplete", "off");
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", source.id + "-options");
    input.placeholder = "Type a model name or a pattern such as openai/*, then Enter";
    options.id = source.id + "-options";
    options.setAttribute("role", "listbox");
    options.hidden = true;
    root.appendChild(chips);
    root.appendChild(input);
    root.appendChild(options);
    source.parentNode.insertBefore(root, source);
    source.hidden = true;

    function sync() {
      source.value = names.join("\n");
      chips.innerHTML = "";
      names.forEach(function (name, i) {
        var chip = el("li", "model-picker-chip");
        chip.setAttribute("data-name", name);
        chip.appendChild(el("span", "", name));
        var remove = el("button", "model-picker-remove", "×");
        remove.type = "button";
        remove.setAttribute("aria-label", "Remove " + name);
        remove.addEventListener("click", function () { names.splice(i, 1); sync(); });
        chip.appendChild(remove);
        chips.appendChild(chip);
      });
      if (!names.length) chips.appendChild(el("li", "model-picker-empty", "Every model (none chosen)"));
    }

    function add(text) {
      text.split(/[\s,]+/).filter(Boolean).forEach(function (name) {
        if (names.indexOf(name) < 0) names.push(name);
      });
      input.value = "";
      sync();
      close();
    }

    function close() { options.hidden = true; active = -1; input.setAttribute("aria-expanded", "false"); }

    function show() {
      var query = input.value.trim().toLowerCase();
      var found = catalog.filter(function (entry) {
        return names.indexOf(entry.name) < 0 && entry.name.toLowerCase().indexOf(query) >= 0;
      }).slice(0, MAX_OPTIONS);
      options.innerHTML = "";
      active = -1;
      found.forEach(function (entry) {
        var option = el("li", "model-picker-option");
        option.setAttribute("role", "option");
        option.setAttribute("data-name", entry.name);
        option.appendChild(el("span", "", entry.name));
        option.appendChild(el("small", "model-picker-kind", entry.kind));
        // mousedown, not click: it comes before the input's blur closes the list.
        option.addEventListener("mousedown", function (event) { event.preventDefault(); add(entry.name); });
        options.appendChild(option);
      });
      options.hidden = !found.length;
      input.setAttribute("aria-expanded", found.length ? "true" : "false");
    }

    function highlight(step) {
      var items = options.children;
      if (!items.length) return;
      if (active >= 0) items[active].classList.remove("active");
      active = (active + step + items.length) % items.length;
      items[active].classList.add("active");
      items[active].scrollIntoView({block: "nearest"});
    }

    input.addEventListener("input", show);
    input.addEventListener("focus", show);
    input.addEventListener("blur", close);
    input.addEventListener("keydown", function (event) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        if (options.hidden) show();
        highlight(event.key === "ArrowDown" ? 1 : -1);
      } else if (event.key === "Enter" || event.key === ",") {
        event.preventDefault();  // Enter must not submit the form half-typed
        if (active >= 0 && !options.hidden) add(options.children[active].getAttribute("data-name"));
        else if (input.value.trim()) add(input.value);
      } else if (event.key === "Escape") {
        close();
      } else if (event.key === "Backspace" && !input.value && names.length) {
        names.pop();
        sync();
      }
    });
    // A name typed but not yet added when Save is pressed is kept, not lost.
    if (source.form) source.form.addEventListener("submit", function () { if (input.value.trim()) add(input.value); });
    sync();
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("textarea.model-picker-source"), picker);
  });
})();
