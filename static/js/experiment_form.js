// New-experiment form: show the settings of the chosen methods only, and the file field only for uploads.
(function () {
  "use strict";
  var form = document.querySelector(".experiment-form");
  if (!form) return;

  function chosenMethods() {
    var boxes = form.querySelectorAll('input[name="methods"]');
    var chosen = {};
    boxes.forEach(function (box) { chosen[box.value] = box.checked; });
    return chosen;
  }

  function update() {
    var chosen = chosenMethods();
    form.querySelectorAll("fieldset.method").forEach(function (fs) {
      fs.hidden = !chosen[fs.dataset.method];
    });
    var task = form.querySelector('select[name="task"]');
    var file = document.getElementById("field-dataset");
    if (task && file) file.hidden = task.value !== "upload" && !file.classList.contains("has-error");
  }

  form.addEventListener("change", update);
  update();
})();

// A method's blank "Steps" means the experiment's steps: show that number as the placeholder.
(function () {
  "use strict";
  var steps = document.getElementById("id_max_steps");
  if (!steps) return;
  function mirror() {
    document.querySelectorAll("input[data-steps-override]").forEach(function (input) {
      input.placeholder = steps.value;
    });
  }
  steps.addEventListener("input", mirror);
  mirror();
})();

// Per-method settings: a field whose value differs from the experiment's (the example's, or the cloned
// experiment's) carries a "changed" badge; each method's section counts them and offers a reset. The SFT
// start option applies only with SFT and another method: otherwise it is switched off (and not sent), so
// SFT alone can be started without unticking it. Changing the base model warns when learning rates were
// set (differ from the defaults): they were tuned for another model.
(function () {
  "use strict";
  var form = document.querySelector(".experiment-form");
  if (!form) return;

  function valueOf(input) {
    return input.type === "checkbox" ? (input.checked ? "true" : "false") : input.value.trim();
  }

  function same(a, b) {
    if (a === b) return true;
    var x = Number(a), y = Number(b);
    return a !== "" && b !== "" && !isNaN(x) && !isNaN(y) && x === y; // 5e-05 and 0.00005 alike
  }

  function badgeFor(input) {
    var box = input.closest(".field");
    var label = box && box.querySelector("label");
    if (!label) return null;
    var badge = label.querySelector(".badge.override");
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "badge override";
      badge.textContent = "changed";
      label.appendChild(document.createTextNode(" "));
      label.appendChild(badge);
    }
    return badge;
  }

  function methodInputs(fs) {
    return Array.prototype.filter.call(fs.querySelectorAll("input[data-baseline], select[data-baseline]"),
      function (i) { return i.name.indexOf(fs.dataset.method + "-") === 0; });
  }

  function markSection(fs) {
    var changed = 0;
    methodInputs(fs).forEach(function (input) {
      var differs = !same(valueOf(input), input.dataset.baseline);
      var badge = badgeFor(input);
      if (badge) {
        badge.hidden = !differs;
        badge.title = differs ? "The experiment's value: " + (input.dataset.baseline || "blank") : "";
      }
      if (differs) changed += 1;
    });
    var count = fs.querySelector("[data-overrides]");
    count.hidden = changed === 0;
    count.textContent = changed + " changed";
    fs.querySelector(".reset-line").hidden = changed === 0;
  }

  function resetSection(fs) {
    methodInputs(fs).forEach(function (input) {
      if (input.type === "checkbox") input.checked = input.dataset.baseline === "true";
      else input.value = input.dataset.baseline;
    });
    markSection(fs);
    modelWarning();
  }

  var sections = form.querySelectorAll("fieldset.method");
  sections.forEach(function (fs) {
    fs.querySelector("[data-reset]").addEventListener("click", function () { resetSection(fs); });
    markSection(fs);
  });
  form.addEventListener("input", function (ev) {
    var fs = ev.target.closest && ev.target.closest("fieldset.method");
    if (fs) markSection(fs);
  });
  form.addEventListener("change", function (ev) {
    var fs = ev.target.closest && ev.target.closest("fieldset.method");
    if (fs) markSection(fs);
    sftOption();
    modelWarning();
  });

  // The SFT start option.
  var fromSft = document.getElementById("id_rl_from_sft");
  function sftOption() {
    if (!fromSft) return;
    var chosen = Array.prototype.filter.call(form.querySelectorAll('input[name="methods"]'), function (b) { return b.checked; })
      .map(function (b) { return b.value; });
    var applies = chosen.indexOf("sft") >= 0 && chosen.length > 1;
    fromSft.disabled = !applies;
    var box = document.getElementById("field-rl_from_sft");
    if (box) box.classList.toggle("not-applicable", !applies);
  }
  sftOption();

  // The base model warning.
  var model = document.getElementById("id_base_model");
  var warning = document.getElementById("model-warning");
  var modelAtStart = model ? model.value.trim() : "";
  function modelWarning() {
    if (!model || !warning) return;
    var tuned = [];
    sections.forEach(function (fs) {
      if (fs.hidden) return;
      var lr = fs.querySelector('input[name="' + fs.dataset.method + '-learning_rate"]');
      if (lr && lr.value.trim() !== "" && !same(lr.value.trim(), lr.dataset.default)) {
        tuned.push(fs.querySelector(".legend").textContent.trim() + " " + lr.value.trim());
      }
    });
    var moved = model.value.trim() !== modelAtStart;
    warning.hidden = !(moved && tuned.length);
    warning.textContent = warning.hidden ? "" :
      "The base model changed from “" + modelAtStart + "”, but learning rates were set for it (" + tuned.join(", ") +
      "): a different model usually needs different ones. Check them, or reset them to the defaults.";
  }
  if (model) model.addEventListener("input", modelWarning);
  modelWarning();
})();

// The smallest difference the experiment can expect to detect, for its prompts, samples and seeds.
(function () {
  "use strict";
  var form = document.querySelector(".experiment-form");
  var note = document.getElementById("detectable");
  if (!form || !note) return;
  function value(name) { var el = form.querySelector('[name="' + name + '"]'); return el ? el.value : ""; }
  form.addEventListener("change", function (event) {
    if (["eval_prompts", "eval_samples", "seeds"].indexOf(event.target.name) < 0) return;
    var query = new URLSearchParams({prompts: value("eval_prompts"), samples: value("eval_samples"), seeds: value("seeds")});
    fetch(note.dataset.url + "?" + query, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) note.textContent = data.text; });
  });
})();

// Each method's batch line: effective batch, micro-batch and tokens per step (training/options.py's
// BatchSummary.text, recomputed here as the settings change; the server renders the first one).
(function () {
  "use strict";
  var form = document.querySelector(".experiment-form");
  if (!form) return;
  var ONLINE = { grpo: true, rloo: true, ppo: true };

  function number(name, fallback) {
    var input = form.querySelector('[name="' + name + '"]');
    if (!input) return fallback;
    var value = parseInt(input.value, 10);
    return isNaN(value) ? NaN : value;
  }

  function summary(method) {
    var batch = number(method + "-batch_size", NaN);
    var accum = number(method + "-gradient_accumulation_steps", 1);
    var procs = number(method + "-num_processes", 1);
    var promptLen = number(method + "-max_prompt_length", 0);
    var completion = number(method + "-max_completion_length", 0) || number("max_new_tokens", NaN);
    var genSteps = number(method + "-generation_steps", 1);
    if ([batch, accum, procs, promptLen, completion, genSteps].some(isNaN) || batch % (accum * procs)) return "";
    var micro = batch / (accum * procs);
    var parts = ["Effective batch " + batch + " sequences per step (" + micro + " per process x " +
                 (batch / micro) + " micro-steps/processes)"];
    if (promptLen) parts.push("at most " + (batch * (promptLen + completion)).toLocaleString("en") + " tokens per step");
    else parts.push("at most " + (batch * completion).toLocaleString("en") + " completion tokens per step, plus prompts");
    if (ONLINE[method]) parts.push(batch * genSteps + " completions sampled at once");
    return parts.join("; ") + ".";
  }

  function update() {
    form.querySelectorAll("fieldset.method").forEach(function (fs) {
      var line = fs.querySelector("[data-batch-summary]");
      if (line) line.textContent = summary(fs.dataset.method);
    });
  }

  form.addEventListener("input", update);
  form.addEventListener("change", update);
})();

// Signal pickers: show the parameters of the chosen kind only.
(function () {
  "use strict";
  document.querySelectorAll("select[data-signal-picker]").forEach(function (select) {
    var box = select.closest(".signal-picker");
    function show() {
      box.querySelectorAll("[data-signal-params]").forEach(function (group) {
        group.hidden = group.dataset.signalParams !== select.value;
      });
    }
    select.addEventListener("change", show);
    show();
  });
})();
