"""``ksuite skew`` / ``python -m serving.skew``: the parser and main()."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from serving.skew.compare import compare
from serving.skew.logs import logged_inputs
from serving.skew.stats import DEFAULT_THRESHOLD_JS, DEFAULT_THRESHOLD_PSI, KINDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ksuite skew",
        description="Compare the inputs a served model received (its request log) with its "
                    "training inputs. Exit status: 0 no skew, 1 a threshold crossed, 2 error.")
    p.add_argument("model", help="model name, as in the request log's model_spec")
    p.add_argument("--log", required=True, metavar="DIR",
                   help="request-log folder (or filename_prefix) of PredictionLog TFRecords")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="where to write skew.json and skew.png (default: .)")
    p.add_argument("--threshold-js", type=float, default=DEFAULT_THRESHOLD_JS, metavar="X",
                   help=f"Jensen-Shannon distance, base 2 (default {DEFAULT_THRESHOLD_JS})")
    p.add_argument("--threshold-psi", type=float, default=DEFAULT_THRESHOLD_PSI, metavar="Y",
                   help=f"population stability index (default {DEFAULT_THRESHOLD_PSI})")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the newest N logged rows of each input")
    p.add_argument("--kind", action="append", default=[], metavar="INPUT=KIND",
                   help=f"override an input's inferred kind ({', '.join(KINDS)}); repeatable")
    p.add_argument("--reference", metavar="NPZ",
                   help="training inputs from an .npz (one array per input name) instead of "
                        "the model's own loader")
    return p


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None,
         reference_loader: Callable[[str], Mapping[str, np.ndarray | list]] | None = None) -> int:
    """``ksuite skew``: returns the exit status (0 no skew, 1 skew, 2 error)."""
    args = build_parser().parse_args(argv)
    kinds = {}
    for item in args.kind:
        name, sep, kind = item.partition("=")
        if not sep or kind not in KINDS:
            return _error(f"--kind wants INPUT=KIND with KIND one of {', '.join(KINDS)}: {item}")
        kinds[name] = kind
    if args.limit is not None and args.limit <= 0:
        return _error("--limit must be positive")
    from serving.request_log import log_files

    try:
        files = log_files(args.log)
    except FileNotFoundError:
        return _error(f"request log not found: {args.log}")
    if not files:
        return _error(f"no request-log files (*.tfrecord) under {args.log}")
    try:
        logged = logged_inputs(args.log, args.model, args.limit)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line, not a trace
        return _error(f"cannot read the request log {args.log}: {type(e).__name__}: {e}")
    if not logged:
        return _error(f"no request-log records of model '{args.model}' in {args.log} "
                      f"({len(files)} file(s))")
    try:
        if args.reference:
            with np.load(args.reference, allow_pickle=False) as npz:
                reference = {k: npz[k] for k in npz.files}
        elif reference_loader is not None:
            reference = reference_loader(args.model)
        else:
            return _error("no training data: pass --reference NPZ")
    except Exception as e:
        # A loader's own user-facing error (anything with an ``exit_code``, like
        # shared.errors.UserError) or a missing file or key: one line. Anything else is a bug.
        if not isinstance(e, (LookupError, OSError, ValueError)) and not hasattr(e, "exit_code"):
            raise
        return _error(f"cannot load the training inputs of '{args.model}': {e}")
    report = compare(reference, logged, kinds, args.threshold_js, args.threshold_psi,
                     model=args.model)
    if not report.features:
        return _error(f"no input of '{args.model}' both logged ({', '.join(sorted(logged))}) "
                      f"and in the training data ({', '.join(sorted(reference))}); "
                      + "; ".join(f"{k}: {v}" for k, v in report.skipped.items()))
    print(report.table())
    for name, why in report.skipped.items():
        print(f"skipped {name}: {why}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    out = Path(args.out)
    print(f"wrote {report.to_json(out / 'skew.json')} and {report.plot(out / 'skew.png')}")
    flagged = [f.feature for f in report.features if f.exceeded]
    if flagged:
        print(f"SKEW: {len(flagged)} feature(s) over the thresholds (JS {args.threshold_js}, "
              f"PSI {args.threshold_psi}): {', '.join(flagged)}")
        return 1
    print(f"no skew: every feature under JS {args.threshold_js} and PSI {args.threshold_psi}")
    return 0
