"""The new-experiment form. Per-method fields are generated from training.config's field specs (fields.py),
and validation builds every run's config with `training.config.from_dict`: the training core is the one
judge of a config, and its ConfigError.key tells which field to put the error beside."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.files.uploadedfile import UploadedFile

from training import sizing
from training.config import CONFIG_CLASSES, ConfigError, from_dict
from training.methods import DESCRIPTIONS
from training.options import batch_summary
from training.tasks import BUILTIN_TASKS, JSONLError, parse_jsonl
from webapp.datasets.models import Dataset
from webapp.experiments.actions import do_create_experiment
from webapp.experiments.forms.fields import (
    COMMON_FIELDS,
    SIGNAL_KEYS,
    STEPS_OVERRIDE,
    TextField,
    common_int_field,
    field_for,
    method_specs,
)
from webapp.experiments.methods import METHOD_LABELS, METHODS
from webapp.experiments.models import Experiment, Run, Worker, not_a_reserved_queue, queue_name_validator
from webapp.experiments.quotas import QuotaExceeded, queued_refusal, rate_refusal
from webapp.experiments.references import (
    ModelReferenceError,
    check_model_reference,
    check_server_paths,
    model_path,
)
from webapp.experiments.signal_picker import SignalPicker

UPLOAD = "upload"
LIMIT = "limit"  # the code of a quota's error (the API answers it with 429)
MODEL_SETTINGS = ("reward_model",)  # per-method settings that name a model: references, like base_model
RL_METHODS = tuple(m for m in METHODS if "reward" in {s["name"] for s in CONFIG_CLASSES[m].field_specs()})
MONITOR_SLOTS = 3  # extra signals an experiment may log at every evaluation (eval/reward/<name>)


def _attr_value(value) -> str:
    """A setting's value as the page's script compares it: booleans as true/false, None as blank."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class ExperimentForm(forms.Form):
    name = TextField(max_length=200)
    base_model = TextField(
        max_length=500, label="Base model", widget=forms.TextInput(attrs={"list": "model-choices"}),
        help_text="tiny (a ~2M-parameter test model), demo (SmolLM2-135M-Instruct), a hub id (org/name), "
                  "run:<id> (a finished run's final model), or a folder under the administrator's data roots.")
    task = forms.ChoiceField(help_text="A built-in task, or your own JSONL file.")
    dataset = forms.FileField(
        required=False, label="JSONL file", widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.txt"}),
        help_text='One JSON object per line: {"prompt", "completion"}, {"prompt", "chosen", "rejected"} '
                  'or {"prompt", "answer"}.')
    dataset_from = forms.IntegerField(required=False, widget=forms.HiddenInput)
    saved_dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, label="Or a saved dataset",
        help_text="One of your datasets (or one shared with you): it replaces the task; its mapping decides which "
                  "methods it can feed.")
    methods = forms.MultipleChoiceField(choices=[(m, METHOD_LABELS[m]) for m in METHODS],
                                        widget=forms.CheckboxSelectMultiple, help_text="One run per method and seed.")
    seeds = forms.IntegerField(min_value=1, max_value=5, initial=1, help_text="Runs per method: seeds 0 to N-1.")
    max_steps = common_int_field("max_steps", "Steps")
    eval_every = common_int_field("eval_every", "Evaluate every")
    eval_prompts = common_int_field("eval_prompts", "Eval prompts")
    eval_samples = common_int_field("eval_samples", "Samples per prompt")
    max_new_tokens = common_int_field("max_new_tokens", "Max new tokens")
    rl_from_sft = forms.BooleanField(required=False, label="Start the other methods from the SFT model",
                                     help_text="They wait for the SFT run of their seed, then start from its final "
                                               "model (also their KL reference).")
    sweep_trials = forms.IntegerField(
        required=False, min_value=0, max_value=50, initial=0, label="Tuning trials per method",
        help_text="0: no sweep. Otherwise every method gets this many trials over its main hyperparameters "
                  "(Optuna), one after another; trials are chosen on half the eval prompts and reported on the other.")
    sweep_sampler = forms.ChoiceField(choices=[("tpe", "TPE (Optuna)"), ("random", "Random")], initial="tpe",
                                      required=False, label="Trial sampler")
    queue = TextField(max_length=64, initial="train", validators=[queue_name_validator, not_a_reserved_queue],
                            widget=forms.TextInput(attrs={"list": "queue-choices"}),
                            help_text="The Celery queue of the workers to use (e.g. a class of GPU).")

    # The fields every run config is built from: with an error in one, no config can be checked.
    COMMON_INPUTS = tuple(f for f in Experiment.SETTINGS if f not in ("hyperparams", "rl_from_sft", "sweep"))

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["saved_dataset"].queryset = Dataset.objects.visible_to(user) if user else Dataset.objects.none()
        self.fields["task"].choices = [(t.name, f"{t.name}: {t.description}") for t in BUILTIN_TASKS.values()] + [
            (UPLOAD, "Upload a JSONL file…")]
        for method in METHODS:
            for spec in method_specs(method):
                override = spec["name"] == STEPS_OVERRIDE
                name = f"{method}-{spec['name']}"
                field = self.fields[name] = field_for(spec, override_steps=override)
                if not override:
                    field.initial = spec["default"]
                # For the page's script: the value the form started from (the example's, or the cloned
                # experiment's: "the experiment's values") and the training config's default.
                field.widget.attrs["data-baseline"] = _attr_value(self.initial.get(name, field.initial))
                field.widget.attrs["data-default"] = "" if override else _attr_value(spec["default"])
        self.gold_picker = SignalPicker(
            "gold_reward", "Gold signal", "The task's own gold reward",
            help_text="Scores every run's uniform evaluation (eval/reward): one signal for the whole experiment.")
        self.reward_pickers = {m: SignalPicker(f"{m}-reward", "Training signal", "The task's own gold reward",
                                               help_text="What this method optimises; when it differs from the "
                                                         "gold signal, evaluation also logs it as "
                                                         "eval/proxy_reward.")
                               for m in RL_METHODS}
        self.monitor_pickers = [SignalPicker(f"monitors-{i}", f"Monitor {i + 1}", "None", named=True)
                                for i in range(MONITOR_SLOTS)]
        for picker in self.signal_pickers():
            self.fields.update(picker.fields())
        self.experiment: Experiment | None = None

    def signal_pickers(self) -> list[SignalPicker]:
        return [self.gold_picker, *self.reward_pickers.values(), *self.monitor_pickers]

    # --- presentation -------------------------------------------------------------------------------
    def method_sections(self) -> list[dict]:
        sections = []
        for method in METHODS:
            specs = method_specs(method)
            sections.append({
                "method": method, "label": METHOD_LABELS[method], "description": DESCRIPTIONS[method],
                "fields": [self[f"{method}-{s['name']}"] for s in specs if not s.get("advanced")],
                "advanced": [self[f"{method}-{s['name']}"] for s in specs if s.get("advanced")],
                "batch": self.batch_text(method),
                "signal": self._picker_view(self.reward_pickers[method]) if method in self.reward_pickers else None,
            })
        return sections

    # Settings that size a step: the form shows the effective batch and tokens per step they make
    # (training.options.batch_summary; static/js/experiment_form.js recomputes it as they change).
    BATCH_SETTINGS = ("batch_size", "gradient_accumulation_steps", "num_processes", "max_prompt_length",
                      "max_completion_length", "generation_steps", "num_generations", "num_minibatches")

    def batch_text(self, method: str) -> str:
        """What one optimizer step of `method` holds, for the values in the form ('' while one is invalid)."""
        data: dict = {"method": method}
        try:
            data["max_new_tokens"] = int(self["max_new_tokens"].value())
            for name in self.BATCH_SETTINGS:
                if f"{method}-{name}" in self.fields:
                    data[name] = int(self[f"{method}-{name}"].value())
            return batch_summary(from_dict(data)).text()
        except (TypeError, ValueError):  # ConfigError is a ValueError
            return ""

    def _picker_view(self, picker: SignalPicker) -> dict:
        return {"select": self[picker.prefix], "name": self[f"{picker.prefix}-name"] if picker.named else None,
                "groups": picker.groups(self)}

    def gold_view(self) -> dict:
        return self._picker_view(self.gold_picker)

    def monitor_views(self) -> list[dict]:
        return [self._picker_view(p) for p in self.monitor_pickers]

    def signal_model_choices(self) -> list[tuple[str, str]]:
        """The datalist of reward-model and judge fields: finished `reward` runs the user can see."""
        runs = (Run.objects.filter(experiment__in=Experiment.objects.visible_to(self.user), method="reward",
                                   state=Run.State.SUCCEEDED).exclude(out_dir="").select_related("experiment")
                .order_by("-id")[:20]) if self.user is not None else []
        return [(f"run:{r.pk}", f"reward model: {r.experiment.name}: {r.label}") for r in runs] + [
            ("tiny", "tiny (judge)"), ("demo", "SmolLM2-135M-Instruct (judge)")]

    def model_choices(self) -> list[tuple[str, str]]:
        """The datalist of the base model field: built-ins, then final models of the user's SFT runs."""
        runs = (Run.objects.filter(experiment__in=Experiment.objects.visible_to(self.user), method="sft",
                                   state=Run.State.SUCCEEDED).select_related("experiment").order_by("-id")[:10])
        return [("tiny", "tiny test model"), ("demo", "SmolLM2-135M-Instruct")] + [
            (f"run:{r.pk}", f"{r.experiment.name}: {r.label}") for r in runs]

    def queue_choices(self) -> list[str]:
        used = Experiment.objects.visible_to(self.user).values_list("queue", flat=True).distinct()
        return sorted({"train", *used})

    # --- validation ---------------------------------------------------------------------------------
    def clean_methods(self):
        methods = self.cleaned_data["methods"]
        if len(set(methods)) != len(methods):
            raise forms.ValidationError("Each method at most once.", code="duplicate")
        return methods

    def clean_base_model(self):
        try:
            return check_model_reference(self.cleaned_data["base_model"], self.user)
        except ModelReferenceError as e:
            raise forms.ValidationError(str(e), code="model_reference") from None

    def _clean_model_settings(self, data: dict, methods: list[str]) -> None:
        for method in methods:
            for name in MODEL_SETTINGS:
                key = f"{method}-{name}"
                if key in self.fields and data.get(key):
                    try:
                        data[key] = check_model_reference(data[key], self.user, allow_empty=True)
                    except ModelReferenceError as e:
                        self.add_error(key, forms.ValidationError(str(e), code="model_reference"))

    def _check_limits(self, data: dict, methods: list[str]) -> None:
        """The quotas of settings.py ("limits"): each refusal names the limit and the value asked for."""
        n_runs = len(methods) * (data.get("seeds") or 1)
        most = settings.PTLAB_MAX_RUNS_PER_EXPERIMENT
        if n_runs > most:
            self.add_error(None, forms.ValidationError(
                f"At most {most} runs per experiment (PTLAB_MAX_RUNS_PER_EXPERIMENT); this one has {n_runs} "
                f"({len(methods)} methods x {data.get('seeds')} seeds).", code=LIMIT))
        if self.user is None or not self.user.is_authenticated:
            return
        refused = queued_refusal(self.user, n_runs)
        if refused:
            self.add_error(None, forms.ValidationError(refused, code=LIMIT))
        check_experiment_rate(self.user, form=self)

    def clean(self):
        data = super().clean()
        methods = data.get("methods") or []
        self._clean_model_settings(data, methods)
        self._check_limits(data, methods)
        for name in list(self._errors or {}):  # fields of methods not chosen do not matter
            if "-" in name and name.split("-", 1)[0] in METHODS and name.split("-", 1)[0] not in methods:
                del self._errors[name]
        self._clean_signals(data, methods)
        self._clean_dataset(data)
        if data.get("saved_dataset"):
            missing = [m for m in methods if m not in data["saved_dataset"].methods()]
            if missing:
                self.add_error("saved_dataset", f"Its mapping cannot feed {', '.join(missing)} (it feeds "
                               f"{', '.join(data['saved_dataset'].methods()) or 'nothing'}).")
        if data.get("rl_from_sft") and ("sft" not in methods or len(methods) < 2):
            self.add_error("rl_from_sft", "Choose SFT and at least one other method to start them from SFT.")
        if data.get("sweep_trials") and data.get("rl_from_sft"):
            self.add_error("sweep_trials", "A sweep tunes every method from the base model: untick “Start the other "
                                           "methods from the SFT model”.")
        # Every error at once, not one a submit: a common field in error is stood in for by its default
        # while the methods' settings are checked (and is reported once, by its own field).
        common_ok = not any(name in self._errors for name in self.COMMON_INPUTS)
        built = self._build({**self._stand_ins(), **data} if not common_ok else data, methods)
        # An upload is parsed already (and saved only with the experiment): validate with a built-in task.
        task = "arithmetic" if built.task == "" or not common_ok else None
        for method in methods:  # a method field in error is at its default in `built`
            self._check_method(built, method, task, report_common=common_ok)
        if common_ok:
            self.experiment = built
            if not self.errors:
                self._check_sizes(built, methods)
        return data

    def _check_sizes(self, exp: Experiment, methods: list[str]) -> None:
        """Each run's memory, estimated (training.sizing), against the GPUs of the workers serving its queue: a
        run that fits on none of them is refused, with what would make it fit. Nothing is checked for models
        whose shape is unknown here (a hub id) or queues no GPU worker has announced itself on."""
        gpus = [(w.gpu, w.gpu_memory_mb, max(1, w.gpu_count)) for w in Worker.objects.filter(gpu_memory_mb__isnull=False)
                if exp.queue in w.queues.split(",")]
        if not gpus:
            return
        path = model_path(exp.base_model)
        shape = sizing.model_shape(name=exp.base_model) if path == exp.base_model and "/" not in path else \
            sizing.model_shape(folder=path)
        for method in methods:
            try:
                cfg = from_dict(exp.run_config(method, seed=0, task="arithmetic"))
            except ConfigError:
                continue
            verdict = sizing.check(cfg, shape, gpus)
            if not verdict.fits:
                self.add_error(None, forms.ValidationError(f"{METHOD_LABELS[method]}: {verdict.message}.",
                                                           code="too_big"))

    def _clean_signals(self, data: dict, methods: list[str]) -> None:
        """The signal specs the pickers describe: one gold signal for the whole experiment (a fair comparison),
        a training signal per RL method, and the monitors; each bad parameter is reported beside its field."""
        signals = {"gold_reward": self.gold_picker.spec(self, data, self.user),
                   "monitors": [spec for p in self.monitor_pickers if (spec := p.spec(self, data, self.user))]}
        rewards = {m: p.spec(self, data, self.user) for m, p in self.reward_pickers.items() if m in methods}
        self.signals = {m: {**{k: v for k, v in signals.items() if v},
                            **({"reward": rewards[m]} if rewards.get(m) else {})} for m in methods}

    def _stand_ins(self) -> dict:
        return {name: Experiment._meta.get_field(name).get_default() for name in self.COMMON_INPUTS
                if name not in ("methods", "task")} | {"task": "arithmetic", "name": "-"}

    def _check_method(self, exp: Experiment, method: str, task: str | None, *, report_common: bool) -> None:
        """Report each of the method's bad settings: after one, check again with that one at its default."""
        config = exp.run_config(method, seed=exp.seeds - 1, task=task)
        defaults = {spec["name"]: spec["default"] for spec in method_specs(method)}
        reported = set()
        while True:
            try:
                check_server_paths(from_dict(config))
                return
            except ConfigError as e:
                own_steps = e.key == STEPS_OVERRIDE and STEPS_OVERRIDE in exp.hyperparams.get(method, {})
                if e.key in COMMON_FIELDS and not own_steps and not report_common:
                    return  # about a stand-in: the field's own error says what is wrong
                self._config_error(method, e, exp)
                if e.key in reported or e.key not in defaults or config.get(e.key) == defaults[e.key]:
                    return  # nothing left to try without the user
                reported.add(e.key)
                config[e.key] = defaults[e.key]

    def _clean_dataset(self, data: dict) -> None:
        self.upload: UploadedFile | None = data.get("dataset") or None
        self.reused_dataset = ""
        if self.upload:
            data["task"] = UPLOAD  # a chosen file wins over the task select
            most = settings.PTLAB_MAX_UPLOAD_BYTES
            if self.upload.size > most:
                self.add_error("dataset", forms.ValidationError(
                    f"The file has {self.upload.size} bytes: at most {most} (PTLAB_MAX_UPLOAD_BYTES).", code=LIMIT))
                return
            try:
                parse_jsonl(self.upload.read().decode("utf-8"), max_rows=settings.PTLAB_MAX_UPLOAD_ROWS)
            except UnicodeDecodeError as e:
                self.add_error("dataset", f"The file is not UTF-8 text (byte {e.start}).")
            except JSONLError as e:
                limit = " (PTLAB_MAX_UPLOAD_ROWS)" if e.reason.startswith("too many rows") else ""
                self.add_error("dataset", f"Line {e.line}: {e.reason}{limit}")
            self.upload.seek(0)
        elif data.get("task") == UPLOAD:
            source = Experiment.objects.visible_to(self.user).filter(pk=data.get("dataset_from")).first()
            if source and source.dataset:
                self.reused_dataset = source.dataset.name  # a clone keeps its source's file
            else:
                self.add_error("dataset", "Choose a JSONL file to upload.")

    def _build(self, data: dict, methods: list[str]) -> Experiment:
        hyperparams = {}
        for method in methods:
            params = {}
            for spec in method_specs(method):
                value = data.get(f"{method}-{spec['name']}")
                if value is None or value == "" and spec["type"] != "a string":
                    if spec["name"] == STEPS_OVERRIDE:
                        continue
                    value = spec["default"]  # a cleared field means the default
                params[spec["name"]] = value
            hyperparams[method] = {**params, **getattr(self, "signals", {}).get(method, {})}
        exp = Experiment(
            name=data["name"], base_model=data["base_model"].strip(),
            task="" if data["task"] == UPLOAD else data["task"], methods=methods, seeds=data["seeds"],
            max_steps=data["max_steps"], eval_every=data["eval_every"], eval_prompts=data["eval_prompts"],
            eval_samples=data["eval_samples"], max_new_tokens=data["max_new_tokens"],
            hyperparams=hyperparams, rl_from_sft=data.get("rl_from_sft", False), queue=data["queue"],
            sweep={"trials": data["sweep_trials"], "sampler": data.get("sweep_sampler") or "tpe"}
            if data.get("sweep_trials") else {})
        if self.reused_dataset:
            exp.dataset.name = self.reused_dataset
        exp.saved_dataset = data.get("saved_dataset")
        return exp

    def _config_error(self, method: str, e: ConfigError, exp: Experiment) -> None:
        field = COMMON_FIELDS.get(e.key) or {"gold_reward": "gold_reward", "monitors": "monitors-0"}.get(e.key)
        if e.key == STEPS_OVERRIDE and STEPS_OVERRIDE in exp.hyperparams.get(method, {}):
            field = f"{method}-{STEPS_OVERRIDE}"
        elif field is None:
            field = f"{method}-{e.key}" if f"{method}-{e.key}" in self.fields else None
        message = e.message if field else f"{METHOD_LABELS[method]}: {e}"
        if field and field in self.errors:
            return  # one error a field is enough (the same error of a common field, from another method)
        self.add_error(field, message)

    def save(self, owner) -> Experiment | None:
        """The experiment, or None when a quota refused it at the last moment (a concurrent create of the
        same user took the room): the refusal is then the form's error, as if `is_valid` had found it."""
        self.experiment.owner = owner
        try:
            return do_create_experiment(self.experiment, dataset=self.upload, quotas=True)
        except QuotaExceeded as e:
            self.add_error(None, forms.ValidationError(str(e), code=LIMIT))
            return None


def check_experiment_rate(user, *, form: forms.Form | None = None) -> str | None:
    """The hourly quota of new experiments (forms, API and imports alike): the refusal's text, added to
    `form` when given; None when `user` may create one more. Checked again, locked, when it is saved."""
    message = rate_refusal(user)
    if message and form is not None:
        form.add_error(None, forms.ValidationError(message, code=LIMIT))
    return message


def limit_refusal(form: forms.Form) -> bool:
    """Whether the form was refused for a quota (then the API answers 429 rather than 400)."""
    return form.has_error(NON_FIELD_ERRORS, code=LIMIT)


def initial_from(experiment: Experiment) -> dict:
    """Form values that recreate `experiment` (cloning)."""
    initial = {f: getattr(experiment, f) for f in Experiment.SETTINGS if f != "hyperparams"}
    initial.update(name=f"{experiment.name} (copy)", task=experiment.task or UPLOAD, methods=list(experiment.methods),
                   dataset_from=experiment.pk if experiment.dataset else None,
                   saved_dataset=experiment.saved_dataset_id,
                   sweep_trials=experiment.sweep.get("trials", 0), sweep_sampler=experiment.sweep.get("sampler", "tpe"))
    form = ExperimentForm(user=None)
    for method, params in experiment.hyperparams.items():
        for key, value in params.items():
            if key in SIGNAL_KEYS:
                initial.update(signal_values(form, key if key != "reward" else f"{method}-reward", value)[0])
            else:
                initial[f"{method}-{key}"] = value
    return initial


def signal_values(form: ExperimentForm, key: str, value) -> tuple[dict, list[str]]:
    """Form values for a signal spec under `key` (`gold_reward`, `monitors` (a list), `<method>-reward`), as the
    API and cloning give them, and the errors of what the pickers cannot hold."""
    if key == "monitors":
        specs = value if isinstance(value, list) else [value] if value else []
        if len(specs) > MONITOR_SLOTS:
            return {}, [f"At most {MONITOR_SLOTS} monitors."]
        out, errors = {}, []
        for picker, spec in zip(form.monitor_pickers, specs, strict=False):
            values, errs = picker.values(spec)
            out.update(values)
            errors += [f"monitor {picker.prefix[-1]}: {e}" for e in errs]
        return out, errors
    picker = form.gold_picker if key == "gold_reward" else next(
        (p for p in form.reward_pickers.values() if p.prefix == key), None)
    if picker is None:
        return {}, ["Only PPO, GRPO and RLOO have a training signal."]
    return picker.values(value)
