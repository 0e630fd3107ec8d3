"""The app contract and its runner: an app declares itself once; one runner does the rest.

An app (``apps/<app>/train.py``) subclasses :class:`App` and fills in what is its own:

- **declarations**: ``name``, ``description``, the headline ``metric`` and whether higher is
  better (stated once: the gate, the benchmarks and the report read it here), ``model_names``
  (what it exports), ``defaults`` for the shared flags (each cited), ``presets`` (defaults that
  depend on one of its flags, e.g. CIFAR's ``--model``), ``budgets`` for ``benchmarks.run``;
- **its own flags** (:meth:`add_flags`) and their validation (:meth:`check`, one place);
- the five steps, top to bottom: :meth:`load_data` -> :meth:`build_model` -> :meth:`train`
  (default: ``fit`` with the shared callbacks) -> :meth:`evaluate` -> :meth:`endpoints` (the
  export's signatures), and :meth:`validate_data` (the pipeline's first stage).

The runner (:meth:`App.main`) owns everything else, the same for every app: the TF log level,
parsing (presets applied as parser defaults, so ``--help`` prints the real values), seeding, the
run record, the ``tf.distribute`` strategy scope, the ``--precision`` dtype policy and
``--jit-compile`` (shared/precision.py), compile with the one optimizer factory,
``finish`` (``metrics.json`` written once), the validation gate and the chief-only export.

Nothing here imports TensorFlow at import time, nor anything from ``apps/``, ``serving/`` or the
``ksuite`` commands.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.flags import add_optimizer_betas, base_parser  # noqa: E402


class Data(types.SimpleNamespace):
    """What :meth:`App.load_data` returns: the standard fields below, plus any of the app's own
    (``Data(train=..., vectorizer=...)``)."""

    train = None  # training batches (tf.data) or arrays
    val = None  # validation batches, watched by early stopping
    test = None  # test batches, evaluated once at the end
    steps_per_epoch = None  # optimizer steps per epoch (horizon of decaying schedules)
    examples_per_step = None  # for the throughput log (examples/s)
    probe = None  # (x, y) fixed validation batch for the dead-ReLU and gradient-norm monitors


class App:
    """An application of the suite. Subclass it, set the declarations, override the steps."""

    # -- declarations ---------------------------------------------------------------------------
    name: str = ""
    description: str = ""
    order: int = 100  # position in listings (the registry discovers apps; this sorts them)
    metric: str = "accuracy"  # the headline metric, a key of evaluate()'s dict
    higher_is_better: bool = True
    model_names: tuple[str, ...] = ()  # served model names (default: (name,))
    defaults: dict = {}  # shared-flag defaults, e.g. {"epochs": 15}; cite each
    presets: dict = {}  # {flag: {value: {dest: default}}}: defaults chosen by one of its flags
    plot_metrics: tuple[str, ...] = ("accuracy",)  # learning curves beside the loss
    loss: object = "sparse_categorical_crossentropy"  # what the default compile uses
    compile_metrics: tuple = ("accuracy",)
    reads_files: bool = True  # reads dataset files (False: e.g. Gymnasium environments)
    no_lr_find: str | None = None  # why `ksuite lr-find` cannot sweep this app (None: it can)
    # --precision auto, per device kind (shared/precision.py). CPU: float32 until an app measures
    # bfloat16 faster at equal quality (benchmarks/results/device_check.jsonl). GPU:
    # mixed_float16, the TensorFlow mixed-precision guide's setting for NVIDIA GPUs (Tensor
    # Cores; not measured by this suite: no GPU here).
    precision_defaults: dict = {"cpu": "float32", "gpu": "mixed_float16"}
    # --adversarial's perturbation (shared/adversarial.py): "sign" or "l2", at the model's
    # PerturbationPoint; None: the app's model has no point and refuses the flag.
    adversarial_norm: str | None = None
    float32_only: str | None = None  # why the app refuses a mixed --precision (None: it can)
    no_jit_compile: str | None = None  # why the app refuses --jit-compile (None: it can)
    smoke: list[str] | None = None  # flags of the contract test's tiny run (default: budgets' tiny)
    anchor: dict = {}  # the published figure the report compares with
    budgets: dict = {"default": []}  # benchmark budgets: name -> extra flags
    budget_anchors: dict = {}

    def __init__(self):
        if not self.model_names:
            self.model_names = (self.name,)

    @property
    def prog(self) -> str:
        return f"python -m apps.{self.name}.train"

    # -- flags ----------------------------------------------------------------------------------
    def add_flags(self, group) -> None:
        """Add the app's own flags to its argument group."""

    def check(self, args) -> None:
        """Validate the settings together; raise UserError with one line."""

    # -- the five steps -------------------------------------------------------------------------
    def load_data(self, args, run) -> Data:
        raise NotImplementedError

    def build_model(self, args, data: Data, run):
        """The model, built inside the strategy's scope (the runner opens it)."""
        raise NotImplementedError

    def load_all_data(self, args, run) -> Data:
        """Algorithm 7.2's data: the training *and* validation examples as ``train`` (``val``
        None), the test set unchanged. An app that holds out a validation split provides it;
        ``--retrain-on-all`` is refused for the others."""
        raise NotImplementedError

    def optimizer_config(self, args, data: Data, **overrides):
        from shared.optim import OptimizerConfig

        return OptimizerConfig.from_args(args, data.steps_per_epoch or 1, **overrides)

    def regularize(self, args, model, data: Data, run) -> None:
        """``--l2``/``--l1``/``--max-norm`` on the built model's kernels, before compile
        (shared/regularizers.py: which variables, how, and which apps it reaches)."""
        from shared.regularizers import RegularizerConfig, apply_weight_penalties

        config = RegularizerConfig.from_args(args)
        if config.active:
            touched = apply_weight_penalties(model, config)
            print(f"regularization: l2 {config.l2}, l1 {config.l1}, max-norm {config.max_norm} "
                  f"on {len(touched)} kernels (biases, batch-norm and embeddings excluded)")

    def compile(self, args, model, data: Data, run) -> None:
        """Compile inside the strategy's scope with the one optimizer factory; XLA as
        ``--jit-compile`` says (a ``mixed_float16`` model gets Keras' loss scaling itself)."""
        from shared.optim import make_optimizer
        from shared.precision import jit_compile

        model.compile(optimizer=make_optimizer(self.optimizer_config(args, data)),
                      loss=self.loss, metrics=list(self.compile_metrics),
                      jit_compile=jit_compile(args))

    def callbacks(self, args, model, data: Data, run) -> list:
        """Callbacks of the app's own, after the shared ones' diagnostics."""
        return []

    def train(self, args, model, data: Data, run) -> None:
        """``fit`` with the shared callbacks: early stopping (Algorithm 7.1), the schedule's
        plateau rule, NaN termination, learning-rate and throughput logs, diagnostics on the
        probe batch, CSV/TensorBoard and the backup that lets a killed run resume."""
        model.fit(
            data.train,
            validation_data=data.val,
            epochs=args.epochs,
            steps_per_epoch=getattr(args, "steps_per_epoch", None),
            callbacks=run.callbacks(monitor=args.monitor,
                                    examples_per_step=data.examples_per_step,
                                    probe=data.probe,
                                    extra=self.callbacks(args, model, data, run)),
            shuffle=False,  # the pipelines shuffle
            verbose=args.verbose,
        )

    def evaluate(self, args, model, data: Data, run) -> dict:
        """The test set, once: every compiled metric as a float."""
        test = model.evaluate(data.test, return_dict=True, verbose=0)
        return {k: float(v) for k, v in test.items()}

    def class_names(self, args, data: Data) -> list[str] | None:
        """A classifier's class names, in label order (label k is ``names[k]``); ``None`` (the
        default) for an app that is not a classifier. Declaring them is all it takes to get the
        per-class evaluation (shared/evaluation.py): confusion matrix, per-class
        precision/recall/F1 in ``metrics.json``, the worst class for the promotion gate."""
        return None

    def test_predictions(self, args, model, data: Data):
        """``(y_true, y_pred)`` class ids over the test set, for the per-class evaluation.
        Default: ``data.test``'s ``(x, y)`` batches through the model (argmax of the scores, or
        ``p >= 0.5`` for one sigmoid unit)."""
        from shared.evaluation import predict_dataset

        return predict_dataset(model, data.test)

    def endpoints(self, args, model, data: Data) -> dict:
        """The export's signatures: ``{name: (function, [tf.TensorSpec, ...])}``; the one called
        ``serving_default`` answers requests that name none. Raw inputs in, always."""
        raise NotImplementedError

    def tracked(self, args, model, data: Data) -> list:
        """What the export must track (layers and models whose variables the endpoints use)."""
        return [model]

    def export_name(self, args) -> str:
        return self.model_names[0]

    def export_metadata(self, args, data: Data) -> dict:
        """Extra fields of the export's ``assets.extra/ksuite.json``."""
        return {}

    def export(self, args, model, data: Data, metrics: dict, run) -> Path:
        """Publish ``<export-dir>/<name>/<next version>/`` atomically behind the gate."""
        from shared.export import Gate, export_keras

        gate = (Gate(self.metric, args.gate_margin, self.higher_is_better)
                if args.gate_margin is not None else None)
        return export_keras(self.export_name(args), self.endpoints(args, model, data),
                            self.tracked(args, model, data), args.export_dir,
                            metadata={"app": self.name, "metrics": metrics,
                                      **self.export_metadata(args, data)},
                            gate=gate)

    def validate_data(self, args):
        """The pipeline's data checks (shared/validate.py's Report) on the data ``args`` name."""
        raise UserError(f"no data validation for app {self.name!r}")

    def record_extra(self, args, model, data: Data, run) -> dict:
        """Facts of the run for the top level of ``metrics.json`` beside the metrics."""
        return {}

    def reference_inputs(self, model_name: str, limit: int | None = None) -> dict:
        """The training inputs as ``model_name``'s serving signature takes them (input name ->
        array or list), for ``ksuite skew``'s comparison with logged requests."""
        raise UserError(f"{self.name} does not provide training inputs for skew checks yet")

    def headline(self, metrics: dict, record: dict) -> str:
        value = metrics.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        return (f"test {self.metric} {shown} ({record.get('epochs_run', '?')} epochs, "
                f"{record['wall_seconds']:.0f} s)")

    # -- the runner -----------------------------------------------------------------------------
    def parser(self):
        parser = base_parser(self.prog, self.description)
        parser.set_defaults(**self.defaults)
        self.add_flags(parser.add_argument_group(self.name))
        self.add_flag_groups(parser)
        add_optimizer_betas(parser)  # after the app's flags: an app's own --beta1 wins (DCGAN)
        return parser

    def add_flag_groups(self, parser) -> None:
        """More argument groups of the app's own, after its main group (e.g. DQN's Atari
        preprocessing)."""

    def parse(self, argv=None):
        """Parse ``argv``; presets chosen by a first pass become parser defaults, so that
        ``--help`` and the run's config show the values in force."""
        import sys

        argv = list(sys.argv[1:] if argv is None else argv)
        parser = self.parser()
        if self.presets:
            first, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
            for flag, table in self.presets.items():
                chosen = self.preset_key(flag, getattr(first, flag))
                if chosen not in table:
                    raise UserError(f"no preset for --{flag.replace('_', '-')} {chosen!r}")
                parser.set_defaults(**table[chosen])
        args = parser.parse_args(argv)
        try:
            self.check(args)
            self.check_speed(args)
            if getattr(args, "retrain_on_all", False):
                self.check_retrain_on_all(args)
            self.check_held_out(args)
            if getattr(args, "adversarial", None) and self.adversarial_norm is None:
                raise UserError(f"--adversarial: {self.name}'s model has no perturbation point "
                                "(apps that have one declare adversarial_norm)")
        except UserError as exc:
            parser.error(str(exc))
        return args

    def check_speed(self, args) -> None:
        """``--precision`` / ``--jit-compile`` that the app's own training step cannot honour
        (its declarations ``float32_only`` / ``no_jit_compile`` say why)."""
        if self.float32_only and getattr(args, "precision", "auto") not in ("auto", "float32"):
            raise UserError(f"--precision {args.precision}: {self.float32_only}")
        if self.no_jit_compile and getattr(args, "jit_compile", None):
            raise UserError(f"--jit-compile: {self.no_jit_compile}")

    def check_retrain_on_all(self, args) -> None:
        if type(self).load_all_data is App.load_all_data:
            raise UserError(f"{self.name} has no validation split to retrain on "
                            "(--retrain-on-all)")
        if args.schedule == "plateau":
            raise UserError("--retrain-on-all needs a schedule fixed in steps, not "
                            "--schedule plateau (its decisions come from the validation set)")

    @staticmethod
    def check_held_out(args) -> None:
        """``--val-size 0`` holds nothing out: what would read the validation set is refused."""
        if getattr(args, "val_size", None) != 0:
            return
        readers = {"--retrain-on-all needs a validation split": getattr(args, "retrain_on_all",
                                                                        False),
                   "--patience watches the validation set": getattr(args, "patience", None),
                   "--schedule plateau watches the validation set":
                       getattr(args, "schedule", None) == "plateau"}
        for what, used in readers.items():
            if used:
                raise UserError(f"{what}: add --val-size N")

    def preset_key(self, flag: str, value) -> str:
        """Which row of ``presets[flag]`` a flag's value selects (default: the value itself)."""
        return value

    def precision_for(self, args) -> dict:
        """``--precision auto``'s choice per device kind; an app whose models differ overrides."""
        return self.precision_defaults

    def run_name(self, args) -> str:
        """The run record's name (and default run directory ``runs/<name>``)."""
        return self.export_name(args)

    def run(self, args) -> dict:
        """Data -> model -> train -> evaluate -> export, with the run record around it."""
        from shared.precision import resolve
        from shared.runs import Run

        resolve(args, self.precision_for(args))  # before Run.start seeds (and records) them
        run = Run.start(self.run_name(args), args)
        try:
            return self._run(args, run)
        finally:
            run.release()  # the run directory is free for the next process, killed or not

    def _run(self, args, run) -> dict:
        data = self.load_data(args, run)
        model = self.build(args, data, run)
        if args.verbose and hasattr(model, "summary"):
            model.summary(print_fn=lambda line, **_: print(line))
        first_pass = self.first_pass_done(run) if args.retrain_on_all else None
        if first_pass is None:
            self.train(args, model, data, run)
        if args.retrain_on_all:
            model, data = self.retrain_on_all(args, data, run, first_pass)
        if run.is_chief:
            from shared.plots import first_layer_filters

            drawn = first_layer_filters(model, run.dir / "first_layer.png", self.run_name(args))
            if drawn:
                print(f"first-layer filters: {drawn}")
        metrics = self.evaluate(args, model, data, run)
        self.evaluate_per_class(args, model, data, run, metrics)
        record = run.finish(metrics, plot_metrics=self.plot_metrics,
                            extra={"precision": args.precision,
                                   "jit_compile": getattr(model, "jit_compile", None),
                                   **self.record_extra(args, model, data, run)})
        print(self.headline(metrics, record))
        if args.export and run.is_chief:
            path = self.export(args, model, data, metrics, run)
            print(f"exported {path}")
            record["export"] = str(path)
        return record

    def build(self, args, data: Data, run, schedule_data: Data | None = None):
        """Build, regularize and compile the model inside the strategy's scope, its layers
        under the ``--precision`` policy (shared/precision.py). ``schedule_data``: the data
        whose epochs set the schedule's horizon, when not ``data``'s (Algorithm 7.2)."""
        from shared.precision import dtype_policy

        with run.strategy.scope(), dtype_policy(args.precision):
            model = self.build_model(args, data, run)
            if getattr(args, "adversarial", None):  # the same layers, an adversarial train step
                from shared.adversarial import make_adversarial

                model = make_adversarial(model, args.adversarial, self.adversarial_norm)
                print(f"adversarial training: {self.adversarial_norm} perturbations of size "
                      f"{args.adversarial} at '{model.point.name}'")
            self.regularize(args, model, data, run)
            self.compile(args, model, schedule_data or data, run)
        return model

    RETRAIN_STAGE = "retrain_on_all"

    @classmethod
    def first_pass_marker(cls, run_dir: Path) -> Path:
        """Where Algorithm 7.2 keeps its first pass's i* until the retraining ends."""
        return run_dir / cls.RETRAIN_STAGE / "checkpoints" / "first_pass.json"

    @classmethod
    def first_pass_done(cls, run) -> dict | None:
        """Algorithm 7.2's first pass, if a killed run already finished it (then a resume goes
        straight to the retraining)."""
        import json

        marker = cls.first_pass_marker(run.dir)
        return json.loads(marker.read_text()) if marker.exists() else None

    def retrain_on_all(self, args, data: Data, run, first_pass: dict | None = None):
        """Early stopping's second half (Goodfellow et al. §7.8, Algorithm 7.2): the first pass
        (Algorithm 7.1) found the best step count i* on the validation set; a new model, seeded
        as the first, trains on train + validation for exactly i* steps with the same schedule,
        step for step. The stage ``retrain_on_all`` of the run record says so. Returns the new
        model and its data."""
        from shared.callbacks import StopAtStep
        from shared.io import atomic_write_json
        from shared.runs import seed_everything

        stage = run.stage(self.RETRAIN_STAGE)
        marker = self.first_pass_marker(run.dir)
        if first_pass is None:
            stopper = run.early_stopping
            if stopper is None or not stopper.best_step:
                raise UserError("--retrain-on-all needs early stopping's best step "
                                "(early stopping is off)")
            first_pass = {**stopper.summary(), "train_steps_per_epoch": data.steps_per_epoch}
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(marker, first_pass)
        steps = int(first_pass["best_step"])
        all_data = self.load_all_data(args, stage)
        print(f"Algorithm 7.2: retraining on train + validation for i* = {steps} steps "
              f"(the first pass's best, epoch {first_pass['best_epoch']})")
        seed_everything(args.seed, getattr(args, "deterministic", True))
        # The first pass's data sets the schedule's horizon: the learning rate at step t is the
        # first pass's at step t.
        model = self.build(args, all_data, stage, schedule_data=data)
        model.fit(all_data.train, epochs=-(-steps // all_data.steps_per_epoch),
                  steps_per_epoch=getattr(args, "steps_per_epoch", None),
                  callbacks=stage.callbacks(patience=0,
                                            examples_per_step=all_data.examples_per_step,
                                            probe=all_data.probe, extra=[StopAtStep(steps)]),
                  shuffle=False, verbose=args.verbose)
        trained = int(model.optimizer.iterations.numpy())
        marker.unlink(missing_ok=True)
        stage.finish({}, plot_metrics=self.plot_metrics,
                     extra={"algorithm": "Goodfellow et al. Algorithm 7.2",
                            "first_pass": first_pass, "steps": trained})
        return model, all_data

    def evaluate_per_class(self, args, model, data: Data, run, metrics: dict) -> None:
        """A classifier's per-class figures into ``metrics`` (every worker computes them, as it
        evaluates); the confusion matrix files into the run directory, on the chief only."""
        names = self.class_names(args, data)
        if not names:
            return
        from shared.evaluation import per_class_report

        report = per_class_report(*self.test_predictions(args, model, data), names)
        metrics.update(report.metrics())
        if run.is_chief:
            report.write(run.dir, title=f"{self.run_name(args)}: confusion matrix (test set)")

    def main(self, argv=None) -> dict:
        """The entry point of ``python -m apps.<app>.train`` and ``ksuite train <app>``."""
        return exit_on_user_error(lambda: self.run(self.parse(argv)))()


__all__ = ["App", "Data", "UserError"]
