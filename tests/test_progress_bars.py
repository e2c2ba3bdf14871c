"""Progress bars in a terminal end cleanly: a finished task reads 100 % and done, a log line
never lands behind a bar, nested bars leave nothing behind."""

from __future__ import annotations

import io
import logging
import re

import pytest

from depthcard.analysis.progress import Progress, reporting, stage_events, task
from depthcard.cli.logs import BarSafeHandler


class Terminal(io.StringIO):
    """What tqdm writes to: a stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """The lines a terminal shows after `text`: carriage return, newline and cursor-up
    (`ESC [ A`, what tqdm moves between bars with) applied, later writes over earlier ones."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[A|.|\n", text, flags=re.S):
        if token == "\x1b[A":
            row = max(0, row - 1)
        elif token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
        else:
            line = lines[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = token
            col += 1
        lines.extend([] for _ in range(row + 1 - len(lines)))
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture
def logged_to():
    """Log records of `depthcard` go to the given stream through the CLI's handler."""
    logger = logging.getLogger("depthcard.test")
    handlers, level = logger.handlers[:], logger.level

    def to(stream):
        logger.handlers = [BarSafeHandler(stream)]
        logger.setLevel(logging.INFO)
        return logger

    yield to
    logger.handlers, logger.level = handlers, level


def _audit_like(out: Terminal, log: logging.Logger) -> None:
    with reporting(Progress("bar", stream=out)):
        with stage_events("ablation"):
            with task("curve", total=25, unit="point") as curve:
                for _ in range(8):
                    curve.advance()
                with task("generate", total=4, unit="answer") as answers:
                    for _ in range(4):
                        answers.advance()
                    log.warning("a warning while two bars are drawn")
            # the curve ends at 8 of 25 points: the search found its answer
        with stage_events("fragility"), task("power iteration", total=20, unit="HVP") as it:
            for _ in range(5):
                it.advance()


def test_a_stage_that_ends_early_leaves_a_complete_bar_and_whole_log_lines(logged_to) -> None:
    out = Terminal()
    _audit_like(out, logged_to(out))
    shown = screen(out.getvalue())
    bars = [line for line in shown if "%|" in line]
    assert len(bars) == 2, shown  # the nested generate bar was cleared
    for line in bars:
        assert re.search(r": 100%\|", line) and "done" in line, line
    assert any("8/8" in line and "8 of 25 planned" in line for line in bars)
    assert any("5/5" in line and "5 of 20 planned" in line for line in bars)
    assert "a warning while two bars are drawn" in shown  # a line of its own, whole
    assert [line.split(" done in")[0] for line in shown if " done in " in line] == [
        "  ablation",
        "  fragility",
    ]


def test_a_failed_task_is_not_drawn_as_done() -> None:
    out = Terminal()
    with pytest.raises(RuntimeError), reporting(Progress("bar", stream=out)):
        with task("curve", total=25, unit="point") as curve:
            for _ in range(8):
                curve.advance()
            raise RuntimeError("out of memory")
    (bar,) = [line for line in screen(out.getvalue()) if "%|" in line]
    assert "done" not in bar and "100%" not in bar
