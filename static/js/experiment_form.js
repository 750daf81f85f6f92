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
