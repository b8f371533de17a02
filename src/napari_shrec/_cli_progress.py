"""Progress bars for CLI subcommands: tqdm on stderr when it is a terminal, silent otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["progress_bar"]


def progress_bar(name: str) -> tuple[Callable[[int, int, str], None] | None, Callable[[], None]]:
    """A ``progress(done, total, message)`` callback drawing a tqdm bar on stderr when it is a
    terminal, else ``None``; and a function that closes the bar."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=1, desc=name, file=sys.stderr, leave=False, unit="step")

    def update(done: int, total: int, message: str) -> None:
        bar.total = max(total, 1)
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return update, bar.close
