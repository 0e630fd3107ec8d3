"""Errors a user can cause. Entry points print them as one line and exit non-zero."""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, bad request): one clear line."""

    exit_code = 2


def exit_on_user_error(main):
    """Decorate an entry point: a UserError becomes ``error: <message>`` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
