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
