"""``ksuite lr-find APP [app flags] [--steps N] [--min-lr A] [--max-lr B] [--out DIR]``: the
learning-rate range test (shared/lr_finder.py) on an app's own data, model, loss and optimizer.

    ksuite lr-find mnist_mlp --limit 2000 --steps 60
    ksuite lr-find cifar_cnn --optimizer momentum --out /tmp/lr

The app's declaration does the work: its flags (``APP.parse``), seeding and strategy as a run
would, ``load_data``, ``build_model``, ``regularize`` and ``compile`` (its optimizer, with the
learning rate replaced by the range schedule). Writes ``lr_find.png`` and ``lr_find.json``
(atomically) into ``--out`` (default ``runs/lr_find/<app>``) and prints the suggested rate with
its rule. Apps whose training is not one compiled loss under ``fit`` are refused (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.errors import UserError, exit_on_user_error
from shared.lr_finder import BETA, DIVERGE, MAX_LR, MIN_LR, RULES, STEPS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ksuite lr-find", allow_abbrev=False,
        description="Learning-rate range test (Smith 2017 §3.3): train an app for N steps while "
                    "the rate grows exponentially from --min-lr to --max-lr; plot the loss and "
                    "suggest an initial rate. Other flags go to the app.",
        usage="ksuite lr-find APP [app flags] [--steps N] [--min-lr A] [--max-lr B] [--out DIR]")
    p.add_argument("--steps", type=int, default=STEPS, help=f"steps of the sweep ({STEPS})")
    p.add_argument("--min-lr", type=float, default=MIN_LR, help=f"first rate ({MIN_LR:g})")
    p.add_argument("--max-lr", type=float, default=MAX_LR, help=f"last rate ({MAX_LR:g})")
    p.add_argument("--out", default=None, help="output folder (runs/lr_find/<app>)")
    p.add_argument("--rule", choices=tuple(RULES), default="steepest",
                   help="the suggestion rule: " + "; ".join(f"{k}: {v}" for k, v in RULES.items()))
    p.add_argument("--smoothing", type=float, default=BETA,
                   help=f"moving-average factor of the loss ({BETA})")
    p.add_argument("--diverge", type=float, default=DIVERGE,
                   help=f"stop when the smoothed loss exceeds this x the best ({DIVERGE:g})")
    return p


def _check_trainable_by_fit(app, model, data) -> None:
    """One compiled loss under Keras' own train_step, over a training dataset: else refuse."""
    import keras

    if data.train is None:
        raise UserError(f"lr-find cannot run {app.name}: it has no training dataset for fit "
                        "(its own training loop)")
    if type(model).train_step is not keras.Model.train_step:
        raise UserError(f"lr-find cannot run {app.name}: its model ({type(model).__name__}) "
                        "trains with its own train_step, not one compiled loss")
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise UserError(f"lr-find cannot run {app.name}: its compile sets no loss and optimizer")


def run(argv: list[str]) -> dict:
    from apps import get

    if not argv or argv[0].startswith("-"):
        parser().print_help()
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    name, rest = argv[0], argv[1:]
    app = get(name)
    if app.no_lr_find:  # declared by the app: refused before any data is loaded
        raise UserError(f"lr-find cannot run {name}: {app.no_lr_find}")
    opts, app_argv = parser().parse_known_args(rest)
    if opts.steps < 2:
        raise UserError("--steps must be at least 2")
    args = app.parse(app_argv)
    out = Path(opts.out or Path("runs") / "lr_find" / name)
    out.mkdir(parents=True, exist_ok=True)

    # As App.run does, without the run record: the strategy first, then one seed for all.
    from shared import distribute
    from shared.precision import dtype_policy, resolve
    from shared.runs import Run, seed_everything

    resolve(args, app.precision_for(args))  # --precision / --jit-compile, as App.run does
    strategy = distribute.make_strategy(args.strategy, getattr(args, "devices", None))
    seed_everything(args.seed, getattr(args, "deterministic", True))
    run_ = Run(app=f"{name}/lr_find", args=args, dir=out, strategy=strategy,
               is_chief=distribute.is_chief())
    data = app.load_data(args, run_)
    with strategy.scope(), dtype_policy(args.precision):
        model = app.build_model(args, data, run_)
        app.regularize(args, model, data, run_)
        app.compile(args, model, data, run_)
    _check_trainable_by_fit(app, model, data)

    from shared.io import atomic_write_json
    from shared.lr_finder import plot_range_test, run_range_test

    print(f"lr-find {name}: {opts.steps} steps, lr {opts.min_lr:g} -> {opts.max_lr:g} "
          f"(exponential), optimizer {args.optimizer}")
    result = run_range_test(model, data.train, opts.min_lr, opts.max_lr, opts.steps,
                            opts.smoothing, opts.diverge, opts.rule)
    s = result.suggestion
    record = {"app": name, "flags": app_argv, "args": vars(args), "optimizer": args.optimizer,
              "app_learning_rate": args.learning_rate, "min_lr": opts.min_lr,
              "max_lr": opts.max_lr, "steps": opts.steps, "smoothing": opts.smoothing,
              "diverge": opts.diverge, **result.to_dict()}
    if run_.is_chief:
        plot_range_test(result, out / "lr_find.png",
                        f"{name}: LR range test ({args.optimizer}, {len(result.lrs)} steps)")
        atomic_write_json(out / "lr_find.json", record)
    print(f"{result.stopped}; minimum of the smoothed loss at lr {s['lr_at_min']:.3g}")
    print(f"suggested learning rate {s['lr']:.3g} ({s['rule']}: {s['rule_text']}); the app's "
          f"default is {args.learning_rate:g}")
    print(f"wrote {out / 'lr_find.png'} and {out / 'lr_find.json'}")
    return record


def main(argv: list[str] | None = None) -> int:
    exit_on_user_error(run)(list(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
