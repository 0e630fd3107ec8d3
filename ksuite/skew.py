"""``ksuite skew MODEL --log DIR``: training-serving skew of a served model.

serving/skew/ computes the statistics and distances; this glue finds the app that exports
``MODEL`` in the registry and asks it for its training inputs as the serving signature sees them
(``App.reference_inputs``).
"""

from __future__ import annotations


def reference_loader(model_name: str) -> dict:
    from apps import registry
    from shared.errors import UserError

    for app in registry().values():
        if model_name in app.model_names:
            return app.reference_inputs(model_name)
    raise UserError(f"no app exports a model called {model_name!r}")


def main(argv=None) -> int:
    from serving import skew

    return skew.main(argv, reference_loader=reference_loader)
