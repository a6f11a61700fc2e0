"""bench/gpu.py's plan: the steps run in order while the budget holds, a step it cannot hold is
listed as skipped with no figure, and the table lands between the results page's markers."""

from __future__ import annotations

import pytest

from bench.gpu import MARK_END, MARK_START, Done, Step, into_page, run_steps, table
from bench.run import Row


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stepping(clock: FakeClock, name: str, estimate: float, takes: float) -> Step:
    def measure() -> list[Row]:
        clock.now += takes
        return [Row(1, f"{name} figure", takes, "s")]

    return Step(name, estimate, measure)


def test_steps_run_in_order_until_the_budget_cannot_hold_one():
    clock = FakeClock()
    steps = [
        stepping(clock, "a", 10, 30),  # takes longer than its estimate
        stepping(clock, "b", 80, 5),  # 70 s left: skipped
        stepping(clock, "c", 50, 20),  # a later, shorter step still runs
        stepping(clock, "d", 60, 1),  # 50 s left: skipped
    ]
    done = run_steps(steps, 100, clock)
    assert [d.name for d in done] == ["a", "b", "c", "d"]
    assert [d.seconds for d in done] == [30, None, 20, None]
    assert done[1].rows == [] and done[3].rows == []
    assert done[1].note == "skipped: 70 s of the budget left, the step needs about 80 s"
    assert done[3].note == "skipped: 50 s of the budget left, the step needs about 60 s"


def test_the_table_lists_a_skipped_step_without_a_figure_and_goals_only_when_asked():
    rows = [Row(1, "rate", 25.0, "x", ">= 20", True)]
    done = [Done("one", rows, 12.0), Done("two", [], None, "skipped: 3 s left")]
    full = table(done)
    assert full[2] == "| 1 | rate | 25 | x | >= 20 | yes | 12 s |"
    assert full[3] == "| 2 | two | | | | | skipped: 3 s left |"
    assert table(done, goals=False)[2] == "| 1 | rate | 25 | x |  |  | 12 s |"


def test_the_report_replaces_only_the_marked_section(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(f"# Results\nbefore\n{MARK_START}\nold table\n{MARK_END}\nafter\n")
    into_page(page, "new table\n")
    assert page.read_text() == f"# Results\nbefore\n{MARK_START}\nnew table\n{MARK_END}\nafter\n"
    page.write_text("# Results without markers\n")
    with pytest.raises(SystemExit, match="no <!-- bench-gpu:start -->"):
        into_page(page, "new table\n")
