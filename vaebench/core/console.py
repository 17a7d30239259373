"""Where vaebench's output goes: wrapped to the terminal on a terminal, never hard-wrapped anywhere else.

Without a terminal rich assumes 80 columns (or $COLUMNS) and breaks every longer line, so a message
such as `ok: <a long path> expands to 2 valid variant(s).` reaches a CI log, a SLURM log or a pipe
split mid-phrase, which defeats grep and any test that reads the output. `make_console` gives a rich
Console that, when its file is not a terminal, renders each printed object at the width it needs:
long messages and wide tables stay whole lines, while rules and anything that fits keep rich's usual
width. On a terminal it is rich's own Console (wrapping at the terminal's width, live displays).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console, ConsoleDimensions, ConsoleOptions, RenderableType
from rich.live_render import LiveRender
from rich.measure import Measurement
from rich.segment import Segment

UNBOUNDED = 1_000_000
"""The width of a console whose file is not a terminal: wider than any line vaebench prints."""


def is_terminal(stream: IO[Any] | None) -> bool:
    """Whether `stream` is an interactive terminal (FORCE_COLOR and the like do not make a pipe one)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed file
        return False


class LogConsole(Console):
    """A rich Console that never hard-wraps output that is not going to a terminal (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fixed_width = kwargs.get("width") is not None  # given, not read from $COLUMNS

    def _unwrapped(self) -> bool:
        return not self._fixed_width and not is_terminal(self.file)

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return ConsoleDimensions(UNBOUNDED, size.height) if self._unwrapped() else size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
        self._fixed_width = True

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        """Render at the width the object needs (at least rich's usual width) when not on a terminal.

        Only objects rendered at the console's full width are narrowed; what a table, panel or live
        display renders inside itself gets the width its container gives, as usual.
        """
        options = options or self.options
        if options.max_width == UNBOUNDED and self._unwrapped() and not isinstance(renderable, LiveRender):
            usual = Console.size.fget(self).width  # type: ignore[attr-defined]  # $COLUMNS or 80
            if isinstance(renderable, str):
                renderable = self.render_str(renderable, markup=options.markup)
            measured = getattr(renderable, "__rich_measure__", None)
            needed = Measurement.get(self, options, renderable).maximum if measured is not None else 0
            options = options.update_width(max(needed, usual))
        return super().render(renderable, options)


def make_console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """A rich Console for vaebench's own output on stdout (or stderr): see `LogConsole`."""
    return LogConsole(stderr=stderr, **kwargs)


def on_terminals() -> bool:
    """Whether both stdout and stderr are terminals (where rich help and error panels are wanted)."""
    return is_terminal(sys.stdout) and is_terminal(sys.stderr)
