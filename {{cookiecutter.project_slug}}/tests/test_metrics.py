"""The one set of metrics: which decides, in which direction, and on logged answers."""

import pytest

from {{ cookiecutter.package_name }}.metrics import drop, is_better, live_scores, primary_metric


def test_primary_metric_direction() -> None:
    assert primary_metric("classification") == "f1_macro"
    assert is_better("classification", 0.9, 0.8) and not is_better("classification", 0.8, 0.8)
    assert is_better("regression", 1.0, 2.0) and not is_better("regression", 2.0, 1.0)
    assert not is_better("regression", 1.0, 1.0 + 1e-15)  # parallel float sums are not a win


def test_drop_is_the_share_by_which_the_primary_metric_got_worse() -> None:
    assert drop("classification", 0.72, 0.9) == pytest.approx(0.2)
    assert drop("regression", 12.0, 10.0) == pytest.approx(0.2)
    assert drop("regression", 8.0, 10.0) == pytest.approx(-0.2)  # better


def test_class_labels_compare_as_text() -> None:
    live = live_scores("classification", [1, 0, 1], ["1", "0", "0"])

    assert live["accuracy"] == pytest.approx(2 / 3)
    assert set(live) == {"accuracy", "f1_macro"}


def test_regression_answers_are_numbers() -> None:
    live = live_scores("regression", [1, 2, 3], [1.5, 2.0, 2.5])

    assert live["mae"] == pytest.approx(1 / 3)
    assert set(live) == {"rmse", "mae", "r2"}
