"""Named training budgets per app: the flags a benchmark run adds, and the metric it reports.

``default`` is the app's own default configuration (what the issue's quality target is about);
``small`` is a quick smoke-sized run. Every budget trains on the real data from the mirror.
"""

BUDGETS: dict[str, dict] = {
    "mnist_mlp": {
        "metric": "accuracy",
        "budgets": {
            "default": [],
            "small": ["--epochs", "3"],
            "tiny": ["--epochs", "1", "--limit", "5000"],
        },
    },
}
