"""Every metric is explained, in its own unit, and the labs' material accounts say they are
the labs' and not the city's official ones."""

from __future__ import annotations

from fabcity.read.definitions import CONCEPTS, DEFINITIONS, definitions
from fabcity.read.metrics import METRICS


def test_every_metric_has_a_definition_in_its_unit() -> None:
    assert set(DEFINITIONS) == set(METRICS), set(METRICS) ^ set(DEFINITIONS)
    for name, metric in METRICS.items():
        d = DEFINITIONS[name]
        assert d.unit == metric.unit, name
        assert d.title and d.says and d.formula and d.sources, name
    assert [d.name for d in definitions()] == list(METRICS)


def test_the_labs_accounts_are_named_for_what_they_are() -> None:
    """The label "material consumption per person" read like the city's official figure."""
    for name in ("de", "imp", "exp", "dmi", "dmc", "ptb", "dmi_per_person", "dmc_per_person"):
        assert DEFINITIONS[name].title.startswith("Labs'"), name
        assert "not the official figure" in DEFINITIONS[name].notes, name


def test_the_index_is_not_a_percentage_and_what_a_value_carries_is_said() -> None:
    assert "not a percentage" in DEFINITIONS["fci"].says
    assert {"state", "range", "confidence", "partial", "coverage", "null"} <= set(CONCEPTS)
