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
