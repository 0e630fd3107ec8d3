"""Write one Markdown page from the benchmark records.

    python -m benchmarks.report                 # -> benchmarks/REPORT.md (+ benchmarks/report_img/)
    ksuite report --results /tmp/results --out /tmp/report/REPORT.md

The page starts with a summary table (one row per app: target, anchor and its source, our best
value at its budget, whether the target is met, epochs or env steps, wall time, throughput, peak
memory). Then one section per app: the anchor, a table of its ``benchmarks.run`` records, its side
benchmarks (each script declares its section and renderer: benchmarks/side.py), the app's notes
(``benchmarks/notes/<app>.md``), and the images of its latest run (learning curves, sample
grids, GIFs; the last generated text as an excerpt), copied to ``report_img/`` next to the page
as ``<app>_<budget>_<file>``. Serving load gets its own section.

Inputs: every ``<results>/*.jsonl`` file (one JSON object per line). Records of the main runner
(``benchmarks.run``) sit in ``<app>.jsonl`` and carry ``budget``, ``metric``, ``value``; every
other file holds a side benchmark's records, named after the script that wrote them.
Run directories are not kept in git: when a record's run directory is gone (or now holds a
different run) the images copied earlier into ``report_img/`` are kept and linked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

from apps import APPS
from benchmarks.run import wall_seconds_of as wall_seconds
from shared.errors import UserError, exit_on_user_error
from shared.io import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "benchmarks" / "REPORT.md"
# Hand-written notes per app (benchmarks/notes/<app>.md: e.g. measurements of options an app no
# longer has), appended to its section: the page itself is generated and would lose them.
NOTES = ROOT / "benchmarks" / "notes"
MAX_IMAGE_BYTES = 2**20  # larger files (long GIFs) are not copied next to the page: the
# repository keeps tracked files under 1 MiB; they stay in the run directory
# Run-directory files shown next to an app, in this order, with their captions. Any other
# top-level PNG (e.g. word2vec's pca_map.png) follows, captioned by its name.
ARTIFACTS = {
    "learning_curves.png": "learning curves",
    "vs_published.png": "evaluation return beside the published runs' points",
    "gan_losses.png": "generator and discriminator losses",
    "samples_last.png": "samples after the last epoch",
    "progress.gif": "samples over training",
    "returns.png": "episode returns",
    "eval_episode.gif": "an evaluation episode",
    "augmented_batch.png": "an augmented training batch",
}
SAMPLE_TEXT = "sample_last.txt"  # the last generated text (shown as an excerpt, not an image)


# ---------------------------------------------------------------------------------- records

def load_records(results: Path = RESULTS) -> dict[str, list[dict]]:
    """``{file stem: [record, ...]}`` for every ``results/*.jsonl``."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(results).glob("*.jsonl")):
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n} is not JSON ({exc})") from None
        if rows:
            out[path.stem] = rows
    return out


def split_records(records: dict[str, list[dict]]) -> tuple[dict[str, list], dict[str, list]]:
    """(runner records by app, side-benchmark records by the script that wrote them: the file
    stem)."""
    runs: dict[str, list[dict]] = {}
    side: dict[str, list[dict]] = {}
    for stem, rows in records.items():
        for r in rows:
            if stem in APPS and "benchmark" not in r and "metric" in r:
                runs.setdefault(stem, []).append(r)
            else:
                side.setdefault(stem, []).append(r)
    return runs, side


def benchmark_specs() -> dict[str, dict]:
    """Each declared app's benchmark view (metric and direction, anchor, budgets)."""
    try:
        from benchmarks.budgets import BUDGETS
    except ImportError:  # pragma: no cover - an app failing to import should not stop a report
        return {}
    return BUDGETS


# ---------------------------------------------------------------------------------- formatting

def num(value, unit: str = "") -> str:
    """A number as a reader wants it: 0.9855, 1.4287, 75.1, 13,770; '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "✅" if value else "❌"
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        if abs(value) >= 1000:
            text = f"{value:,.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}".removesuffix(".0")
        else:
            text = f"{value:.4f}".rstrip("0").rstrip(".")
    else:
        return str(value)
    return f"{text} {unit}".rstrip()


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def mb(value) -> str:
    return "–" if value is None else f"{value:,.0f} MB"


def count(value) -> str:
    """10253116 -> '10.3M'."""
    if value is None:
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    return f"{value / 1e3:.0f}k" if value >= 1e4 else str(value)


def load(record: dict, *keys) -> str:
    """The 1-min load average a side benchmark recorded (the machine is shared)."""
    for key in keys:
        value = record.get(key)
        if isinstance(value, list) and value:
            return f"{value[0]:.1f}"
        if isinstance(value, (int, float)):
            return f"{value:.1f}"
    return "–"


def minutes(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def when(record: dict) -> str:
    return str(record.get("time", "–"))[:16].replace("T", " ")


def get(record: dict, *path, default=None):
    """``record[a][b]...`` or ``default`` when any level is missing."""
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return default
        record = record[key]
    return record


def table(headers: list[str], rows: list[list]) -> list[str]:
    def cell(v) -> str:
        return (v if isinstance(v, str) else num(v)).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(headers) + " |",
            "| " + " | ".join("---" for _ in headers) + " |",
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows), ""]


def short_command(command: str | None) -> str:
    return f"`{command.replace(str(ROOT) + '/', '')}`" if command else "–"


# ---------------------------------------------------------------------------------- targets

def target_met(record: dict, target: str) -> bool | None:
    """Whether a runner record meets the app's target text (``'>= 0.984 in <= 15 epochs'``,
    ``'>= 475 over 100 episodes within 100,000 steps'``, ...) and every ``target_*`` flag the app
    recorded in its metrics (dcgan's IS and FD checks). None when the target is not checkable."""
    value = record.get("value")
    m = re.search(r"(>=|<=)\s*([\d.,]+\d)", target or "")
    if value is None or not m:
        return None
    threshold = float(m[2].replace(",", ""))
    met = value >= threshold if m[1] == ">=" else value <= threshold
    metrics = record.get("metrics") or {}
    if n := re.search(r"in <= (\d+) epochs", target):
        met = met and (record.get("epochs") or math.inf) <= int(n[1])
    if n := re.search(r"in <= (\d+) min", target):
        met = met and (wall_seconds(record) or math.inf) <= 60 * int(n[1])
    if n := re.search(r"mean of (\d+) seeds", target):
        met = met and len(record.get("seeds") or ()) >= int(n[1])
    if n := re.search(r"over ([\d,]+) episodes", target):
        met = met and metrics.get("eval_episodes", 0) >= int(n[1].replace(",", ""))
    if n := re.search(r"within ([\d,]+) steps", target):
        met = met and metrics.get("env_steps", math.inf) <= int(n[1].replace(",", ""))
    return met and all(v for k, v in metrics.items() if k.startswith("target_"))


def verdict(met: bool | None, budget: str | None) -> str:
    if met is None:
        return "not measured"
    text = "✅" if met else "❌"
    return text if met or budget in (None, "default") else f"{text} ({budget} budget only)"


def budget_rank(spec: dict, budget: str) -> int:
    """default first, then the app's budgets in the order it declares them."""
    order = ["default", *[b for b in spec.get("budgets", {}) if b != "default"]]
    return order.index(budget) if budget in order else len(order)


def extra_flags(record: dict, spec: dict) -> list[str]:
    """Flags a runner record was trained with beyond its budget's (``--dropout 0.25`` ...)."""
    words = (record.get("command") or "").split()
    if "-m" not in words:
        return []
    flags = words[words.index("-m") + 2:]
    budget_flags = spec.get("budgets", {}).get(record.get("budget"), [])
    if flags[:len(budget_flags)] == budget_flags:
        flags = flags[len(budget_flags):]
    out, skip = [], False
    for word in flags:
        if skip:
            skip = False
        elif word == "--run-dir":
            skip = True
        elif word != "--no-export":
            out.append(word)
    return out


def budget_label(record: dict, spec: dict) -> str:
    extra = extra_flags(record, spec)
    budget = record.get("budget", "–")
    return f"{budget} + `{' '.join(extra)}`" if extra else budget


# ---------------------------------------------------------------------------------- images

def run_dir_of(record: dict) -> Path | None:
    """The record's run directory: ``run_dir``, else ``--run-dir`` in its command or app flags."""
    run_dir = record.get("run_dir")
    if not run_dir:
        words = (record.get("command") or "").split() or list(record.get("app_flags") or [])
        if "--run-dir" in words[:-1]:
            run_dir = words[words.index("--run-dir") + 1]
    if not run_dir:
        return None
    path = Path(run_dir)
    return path if path.is_absolute() else ROOT / path


def holds_run_of(run_dir: Path | None, metrics: dict | None) -> bool:
    """Whether ``run_dir`` still holds the finished run a record describes (run directories are
    reused: a later run of the same budget, or one still in progress, must not be shown)."""
    if run_dir is None or not (run_dir / "metrics.json").is_file():
        return False
    try:
        on_disk = json.loads((run_dir / "metrics.json").read_text()).get("metrics")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    return not metrics or on_disk == metrics


def artifacts(run_dir: Path) -> dict[str, Path]:
    """``{stable name: source file}`` of the images and last sample text in a run directory."""
    found = {name: run_dir / name for name in ARTIFACTS if (run_dir / name).is_file()}
    for png in sorted(run_dir.glob("*.png")):
        found.setdefault(png.name, png)
    samples = run_dir / "samples"
    if pngs := sorted(samples.glob("*.png")):
        found["samples_last.png"] = pngs[-1]
    if texts := sorted(samples.glob("*.txt")):
        found[SAMPLE_TEXT] = texts[-1]
    return {name: src for name, src in found.items() if src.stat().st_size <= MAX_IMAGE_BYTES}


def copy_artifacts(prefix: str, records: list[dict], metrics_of, img_dir: Path) -> list[Path]:
    """Copy the artifacts of the latest record whose run directory still holds its run to
    ``img_dir/<prefix>_<name>``; return the copies for ``prefix`` (old copies when none could be
    made)."""
    for r in reversed(records):
        run_dir = run_dir_of(r)
        if holds_run_of(run_dir, metrics_of(r)):
            for name, src in artifacts(run_dir).items():
                dst = img_dir / f"{prefix}_{name}"
                data = src.read_bytes()
                if not dst.is_file() or dst.read_bytes() != data:
                    atomic_write_bytes(dst, data)
                    os.chmod(dst, 0o644)  # mkstemp's 0600 would hide it from a web server
            break
    copies = sorted(img_dir.glob(f"{prefix}_*")) if img_dir.is_dir() else []
    order = list(ARTIFACTS)
    return sorted(copies, key=lambda p: (order.index(p.name[len(prefix) + 1:])
                                         if p.name[len(prefix) + 1:] in order else len(order),
                                         p.name))


def image_lines(copies: list[Path], page_dir: Path, prefix: str) -> list[str]:
    lines = []
    for path in copies:
        name = path.name[len(prefix) + 1:]
        rel = Path(os.path.relpath(path, page_dir)).as_posix()
        if name == SAMPLE_TEXT:
            text = path.read_text(errors="replace").strip().splitlines()[:14]
            lines += ["Last generated sample (excerpt):", "", "```text", *text, "```", ""]
        elif path.suffix.lower() in (".png", ".gif", ".jpg", ".jpeg"):
            caption = ARTIFACTS.get(name, name.rsplit(".", 1)[0].replace("_", " "))
            lines += [f"![{prefix.replace('_', ' ')}: {caption}]({rel})", "", f"*{caption}*", ""]
    return lines


# ---------------------------------------------------------------------------------- side benchmarks
# Each renderer turns the records of one kind into Markdown lines: a heading and a table.

def times(value) -> str:
    """A speed ratio: 2.446 -> '2.45x'."""
    return "–" if value is None else f"{value:.3g}x"


def commit(record: dict) -> str:
    return record.get("git_commit") or "–"


def side_generic(name, rows):
    """A record kind this module does not know: its first ten scalar fields."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (dict, list))
                 and k not in ("cpu", "app", "cores", "benchmark")]
    keys = keys[:10]
    return [f"### {name}", "", *table(keys, [[r.get(k) for k in keys] for r in rows])]


def side_benchmarks() -> dict:
    """name -> Side for every side benchmark script (benchmarks/side.py)."""
    from benchmarks.side import discover

    return discover()


# ---------------------------------------------------------------------------------- per app

def is_dqn(record: dict) -> bool:
    return "env_steps" in (record.get("metrics") or {})


def progress(record: dict) -> str:
    """Epochs, or env steps for a reinforcement-learning run."""
    if is_dqn(record):
        return f"{num(record['metrics']['env_steps'])} env steps ({epochs(record.get('epochs'))})"
    return epochs(record.get("epochs"))


def epochs(n) -> str:
    return "–" if n is None else f"{n} epoch{'' if n == 1 else 's'}"


def throughput(record: dict) -> str:
    if is_dqn(record):
        return num(record["metrics"].get("env_steps_per_sec"), "env steps/s")
    return num(record.get("examples_per_sec"), "examples/s")


def best_run(rows: list[dict], spec: dict) -> dict:
    """The best value at the most complete budget measured (default first); ties -> latest.
    A headline comes from the budget's own command: runs with extra flags (probes such as
    ``default + --l2 1e-4``) count only where the budget has no plain run."""
    top = min(budget_rank(spec, r.get("budget")) for r in rows)
    candidates = [r for r in rows if budget_rank(spec, r.get("budget")) == top
                  and r.get("value") is not None] or rows
    candidates = [r for r in candidates if not extra_flags(r, spec)] or candidates
    sign = 1 if spec.get("higher_is_better", True) else -1  # the app's declared direction
    return max(enumerate(candidates), key=lambda ir: (sign * (ir[1].get("value") or 0), ir[0]))[1]


def best_word2vec(rows: list[dict]) -> dict:
    """The word2vec-vs-gensim record on the largest corpus (latest among equals)."""
    return max(enumerate(rows), key=lambda ir: (ir[1].get("tokens") or 0, ir[0]))[1]


def anchor_text(anchor: dict) -> str:
    if not anchor:
        return "–"
    value, metric = num(anchor.get("value")), anchor.get("metric", "")
    text = f"{value} {metric} — {anchor.get('source', '–')}"
    if anchor.get("previous"):  # the classic anchor the new one replaced
        text += f" (was: {anchor_text(anchor['previous'])})"
    return text




def anchored(record: dict, anchor: dict) -> dict:
    """The record as its anchor measures it: an anchor with a ``key`` is compared with that
    entry of the record's metrics (Shakespeare's nanoGPT figure is on nanoGPT's split, not on
    the app's headline split), so ``value`` becomes that entry (None where it was not logged)."""
    key = anchor.get("key")
    return {**record, "value": get(record, "metrics", key)} if key else record


def keyed_text(record: dict, anchor: dict) -> str:
    """`` (1.5116 on nanoGPT's split)`` beside a headline whose anchor has a ``key``."""
    if not anchor.get("key"):
        return ""
    value = anchored(record, anchor)["value"]
    return f" ({num(value)} {anchor.get('key_label', anchor['key'])})"


def summary_row(app: str, spec: dict, runs: list[dict], side: dict[str, list[dict]]) -> list:
    anchor = spec.get("anchor", {})
    head = [f"[{app}](#{app})", anchor.get("target", "–"), anchor_text(anchor)]
    if app == "word2vec" and side.get("word2vec_vs_gensim"):
        r = best_word2vec(side["word2vec_vs_gensim"])
        ours = (f"**{pct(get(r, 'word2vec', 'analogy_accuracy'))}** analogy vs gensim "
                f"{pct(get(r, 'gensim', 'analogy_accuracy'))} ({r.get('corpus', '?')}, "
                f"{count(r.get('tokens'))} tokens)")
        return head + [ours, verdict(get(r, "targets", "analogy_within_2_points"), None),
                       epochs(get(r, "settings", "epochs")),
                       minutes(r.get("app_wall_seconds")),
                       num(get(r, "word2vec", "words_per_sec"), "words/s"), "–"]
    if not runs:
        return head + ["not measured"] * 2 + ["–"] * 4
    r = best_run(runs, spec)
    ours = (f"**{num(r.get('value'))}** {r.get('metric', '')}{seeds_text(r)}"
            f"{keyed_text(r, anchor)} ({budget_label(r, spec)})")
    met = target_met(anchored(r, anchor), anchor.get("target", ""))
    return head + [ours, verdict(met, r.get("budget")),
                   progress(r), minutes(wall_seconds(r)), throughput(r),
                   mb(r.get("peak_rss_mb"))]


def seeds_text(r: dict) -> str:
    """`` (mean of 3 seeds: a, b, c)`` for a ``--seeds N`` record, else nothing."""
    seeds = r.get("seeds")
    if not seeds:
        return ""
    values = ", ".join(num(v.get("value")) for v in seeds.values())
    return f" (mean of {len(seeds)} seeds: {values})"


def budget_anchor(spec: dict, budget) -> dict:
    """The anchor a budget is measured against: the app's, unless its ``budget_anchors``
    names one for that budget (DQN's Pong run against the random policy, not CartPole's 475)."""
    return spec.get("budget_anchors", {}).get(budget) or spec.get("anchor", {})


def runs_table(app: str, rows: list[dict], spec: dict) -> list[str]:
    dqn = any(map(is_dqn, rows))
    rows = sorted(rows, key=lambda r: (budget_rank(spec, r.get("budget")), str(r.get("time"))))
    return table(
        ["budget", "metric", "ours", "anchor", "env steps" if dqn else "epochs", "wall s",
         "env steps/s" if dqn else "examples/s", "peak RSS MB", "date", "commit", "command"],
        [[budget_label(r, spec), r.get("metric", "–"),
          f"**{num(r.get('value'))}**{seeds_text(r)}"
          f"{keyed_text(r, budget_anchor(spec, r.get('budget')))}",
          budget_anchor(spec, r.get("budget")).get("value"),
          get(r, "metrics", "env_steps") if dqn else r.get("epochs"), wall_seconds(r),
          get(r, "metrics", "env_steps_per_sec") if dqn else r.get("examples_per_sec"),
          r.get("peak_rss_mb"), when(r), commit(r), short_command(r.get("command"))]
         for r in rows])


def probe_records(rows: list[dict], spec: dict) -> list[dict]:
    """The latest record of each set of extra flags among a budget's ``rows`` (``pong +
    --double``), in the order the flag sets first appear; the budget's plain runs are left out."""
    latest: dict[str, dict] = {}
    for r in rows:
        flags = " ".join(extra_flags(r, spec))
        if flags:
            latest[flags] = r  # later records replace earlier ones, first-seen order is kept
    return list(latest.values())


def reference_plot(app: str, budget: str, record: dict, anchor: dict, img_dir: Path,
                   probes: list[tuple[str, dict]] = ()) -> Path | None:
    """The record's evaluation curve (``metrics.eval_curve``: steps, returns) beside the published
    points of its budget's anchor (``anchor["curve"]``: label -> steps, returns) and its target
    value, on a log step axis (published runs are 3-12x longer); ``probes`` (label, record) add
    the curves of the same budget run with other flags. None without a curve and points."""
    curve, published = get(record, "metrics", "eval_curve"), anchor.get("curve")
    if not curve or not curve.get("steps") or not published:
        return None
    from shared.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve["steps"], curve["returns"], "o-", ms=3, color="tab:red",
            label=f"ours, each period's evaluation ({record.get('git_commit') or '?'}, "
                  f"{when(record)[:10]})")
    for (label, probe), color in zip(probes, ["tab:orange", "tab:purple", "tab:brown"]):
        other = get(probe, "metrics", "eval_curve") or {}
        if other.get("steps"):
            ax.plot(other["steps"], other["returns"], "o-", ms=3, color=color, alpha=0.8,
                    label=f"{label} ({probe.get('git_commit') or '?'}, {when(probe)[:10]})")
    for (label, points), marker in zip(published.items(), "s^Dv"):
        ax.plot(points["steps"], points["returns"], marker + "--", color="tab:blue", ms=7,
                alpha=0.8 if marker == "s" else 0.5, label=label)
    if isinstance(anchor.get("value"), (int, float)):  # a budget with no target: its anchor
        kind = "anchor" if str(anchor.get("target", "")).startswith("none") else "target"
        ax.axhline(anchor["value"], color="green", ls=":", lw=1,
                   label=f"{kind} {anchor['value']:g}")
    ax.set_xscale("log")
    ax.set_xlabel("agent (environment) steps, log scale")
    ax.set_ylabel("mean evaluation return")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, img_dir / f"{app}_{budget}_vs_published.png",
                       title=f"{app} {budget}: evaluation return vs published runs")


def app_section(app: str, spec: dict, runs: list[dict], side: dict[str, list[dict]],
                img_dir: Path, page_dir: Path, sides: dict | None = None) -> list[str]:
    anchor = spec.get("anchor", {})
    what = APPS.get(app, "")
    lines = [f"## {app}", "", f"{what[:1].upper()}{what[1:]}.", ""] if what else [f"## {app}", ""]
    if anchor:
        lines += [f"Anchor: **{num(anchor.get('value'))}** {anchor.get('metric', '')} — "
                  f"{anchor.get('source', '–')}. Target: {anchor.get('target', '–')}.", ""]
        if anchor.get("previous"):
            lines += [f"Previous anchor: {anchor_text(anchor['previous'])}.", ""]
    for budget, other in spec.get("budget_anchors", {}).items():
        lines += [f"Budget `{budget}` — anchor: **{num(other.get('value'))}** "
                  f"{other.get('metric', '')} — {other.get('source', '–')}. Target: "
                  f"{other.get('target', '–')}.", ""]
    if runs:
        lines += ["### Runs (`ksuite bench`)", "", *runs_table(app, runs, spec)]
    else:
        lines += ["No `ksuite bench` records yet.", ""]
    for kind, rows in side.items():
        if kind in (sides or {}) and sides[kind].app == app:
            lines += sides[kind].render(rows)
    if (NOTES / f"{app}.md").is_file():
        lines += [(NOTES / f"{app}.md").read_text().rstrip(), ""]

    # Images: per budget, from the latest record whose run directory still holds its run --
    # among the budget's plain runs when it has any: a probe with extra flags (`default +
    # --batch-size 64`) must not replace the pictures of the configuration the budget names.
    groups: dict[str, tuple[list[dict], object]] = {}
    for budget in sorted({r.get("budget", "?") for r in runs}, key=lambda b: budget_rank(spec, b)):
        same = [r for r in runs if r.get("budget", "?") == budget]
        groups[budget] = ([r for r in same if not extra_flags(r, spec)] or same,
                          lambda r: r.get("metrics"))
    if app == "word2vec" and side.get("word2vec_vs_gensim"):
        groups["vs_gensim"] = (side["word2vec_vs_gensim"], lambda r: r.get("word2vec"))
    for budget, (rows, metrics_of) in groups.items():
        if budget != "vs_gensim":  # drawn from the latest records themselves (no run directory)
            same = [r for r in runs if r.get("budget", "?") == budget]
            probes = [(f"ours + {' '.join(extra_flags(r, spec))}", r)
                      for r in probe_records(same, spec) if r is not rows[-1]]
            reference_plot(app, budget, rows[-1], budget_anchor(spec, budget), img_dir, probes)
        copies = copy_artifacts(f"{app}_{budget}", rows, metrics_of, img_dir)
        if copies:
            lines += [f"### Images ({budget} budget)" if budget != "vs_gensim"
                      else "### Images (the run of the latest comparison with gensim)", "",
                      *image_lines(copies, page_dir, f"{app}_{budget}")]
    return lines


# ---------------------------------------------------------------------------------- page

def render(records: dict[str, list[dict]], out: Path, img_dir: Path | None = None) -> str:
    out = Path(out)
    img_dir = Path(img_dir) if img_dir else out.parent / "report_img"
    specs = benchmark_specs()
    runs, side = split_records(records)
    sides = side_benchmarks()
    everything = [r for rows in records.values() for r in rows]
    cpus = [r.get("cpu") or get(r, "machine", "cpu") for r in everything]
    cpu = ", ".join(dict.fromkeys(c for c in cpus if c)) or "?"
    cores = next((r.get("cores") for r in everything if r.get("cores")), "?")
    latest = max((str(r.get("time", "")) for r in everything), default="")[:10] or "?"
    lines = ["# Benchmark report", "",
             f"Generated by `python -m benchmarks.report` (`ksuite report`) from "
             f"`benchmarks/results/*.jsonl`; records up to {latest}. Machines: {cpu}, {cores} "
             "cores, shared with other jobs (wall times and throughput move with the load).", "",
             "## Summary", "",
             "Our best value at the most complete budget measured (default first). A "
             "smaller-budget run counts as meeting a target only if its value does.", "",
             *table(["app", "target", "anchor (source)", "ours (budget)", "target met",
                     "epochs / env steps", "wall", "throughput", "peak RSS"],
                    [summary_row(app, specs.get(app, {}), runs.get(app, []), side)
                     for app in APPS])]
    for app in APPS:
        lines += app_section(app, specs.get(app, {}), runs.get(app, []), side, img_dir, out.parent,
                             sides)
    for kind, bench in sides.items():
        if bench.app not in APPS and side.get(kind):  # sections of their own (serving)
            lines += bench.render(side[kind])
    others = {k: v for k, v in side.items() if k not in sides}
    if others:
        lines += ["## Other records", ""]
        for name, rows in others.items():
            lines += side_generic(name, rows)
    return "\n".join(lines).rstrip() + "\n"


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(prog="ksuite report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of *.jsonl benchmark records (default benchmarks/results)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="Markdown page to write (default benchmarks/REPORT.md)")
    parser.add_argument("--img-dir", type=Path, default=None,
                        help="where images are copied (default report_img/ next to --out)")
    args = parser.parse_args(argv)
    records = load_records(args.results)
    if not records:
        raise UserError(f"no benchmark records in {args.results}: run ksuite bench APP first")
    atomic_write_text(args.out, render(records, args.out, args.img_dir))
    os.chmod(args.out, 0o644)
    print(f"wrote {args.out} ({sum(len(v) for v in records.values())} records)")
    return 0


if __name__ == "__main__":
    main()
