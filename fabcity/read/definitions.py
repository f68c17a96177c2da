"""What each metric means, for the people who read it: a plain name, what it says, its formula,
the events it is made from, and what to keep in mind. Served at `/v1/definitions` and drawn by
the dashboard's explanation page; every metric of `fabcity.read.metrics.METRICS` has one (a
test holds them together).

The figures count what the city's labs report, not the whole city: the material accounts
(DE, IMP, EXP, DMC) are those of the labs' own material, in the Eurostat method's terms, and
are named so; a city's official accounts come from its statistics (`/v1/cities/{city}/statistics`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fabcity.read.metrics import DIDO_TERMS, METRICS


@dataclass(frozen=True)
class Definition:
    name: str
    title: str
    unit: str
    says: str
    formula: str
    sources: str
    notes: str = ""


# What a value carries besides its number: the same for every metric.
CONCEPTS: dict[str, str] = {
    "state": "How the figure was obtained, the weakest of what stands behind it: measured by a "
    "device (a meter, a scale), reported by people (a lab's post or spreadsheet), or modelled "
    "from other figures (a part's mass from its design, a slicer's estimate, a job's hours "
    "from receive times).",
    "null": "A figure that was not recorded is null, with the reason, and shown as not "
    "recorded: never as 0. A window with no events has no DIDO and no FCI.",
    "range": "Where a figure leans on terms nobody recorded (DIDO without a design share, FCI "
    "without PITO), it comes with the range those terms allow: the missing terms at 0 and at "
    "1. Absence is not zero, and not one either.",
    "confidence": "How far a figure can be trusted as a picture of the city. Low: the window "
    "is not over, or fewer than 10 events, or fewer than half of the active sites reported. "
    "High: the window is over, at least 30 events, at least 80 % of the active sites reported "
    "and, for DIDO and FCI, every term recorded. Medium: in between.",
    "partial": "The window is not over yet: its figures will still change, and a week with "
    "two days of events is not a quiet week.",
    "coverage": "The events behind the figure, and how many of the city's active sites "
    "reported in the window.",
}

_MASS_INPUTS = "`consume` flows of mass resources (kg), by the ring they came from"
_WASTE = "`discard` flows of mass resources, with their `fate`"
_PER_PERSON = "The city's population is its registered one; without it the figure is not recorded."
_LABS_ONLY = (
    "Counts the material of the labs that report, not the whole city's: it is not the "
    "official figure of the same name, which comes from the city's statistics."
)

_DEFINITIONS = [
    Definition(
        "input_kg", "Material used", "kg",
        "How much material the labs took in to make, repair and recycle things.",
        "Σ inputs", _MASS_INPUTS,
    ),
    Definition(
        "local_input_share", "Local input share", "ratio",
        "Of the material the labs used, the share that came from the lab itself or the city.",
        "(inputs from site + city) / all inputs", _MASS_INPUTS,
    ),
    Definition(
        "regional_input_share", "Regional input share", "ratio",
        "Of the material used, the share from the lab, the city or its region.",
        "(inputs from site + city + region) / all inputs", _MASS_INPUTS,
    ),
    Definition(
        "recycled_input_share", "Recycled input share", "ratio",
        "Of the material used, the share that was recycled or reused material.",
        "inputs marked recycled (or of a secondary resource) / all inputs", _MASS_INPUTS,
    ),
    Definition(
        "produced_count", "Things made", "count",
        "How many things the labs made.",
        "Σ produce (counted things)", "`produce` flows",
    ),
    Definition(
        "produced_kg", "Mass of things made", "kg",
        "The mass of what the labs made.",
        "Σ produce by mass; else count × the design's mass (then modelled)",
        "`produce` flows, and the mass of their registered designs (OKH manifests)",
        "Things of a design with no known mass are counted, not weighed.",
    ),
    Definition(
        "repaired_count", "Things repaired", "count",
        "How many things were repaired or modified instead of replaced.",
        "Σ modify", "`modify` flows",
    ),
    Definition(
        "open_design_share", "Open design share", "ratio",
        "Of the things made, the share made from a design anyone may use (an open licence).",
        "things made from an open design / things made",
        "`produce` flows and the licences of the designs they name",
        "A design with no licence, or one that could not be read, is neither open nor closed.",
    ),
    Definition(
        "designs_cited", "Designs taken in", "count",
        "Designs the labs took from elsewhere: data in.", "Σ cite", "`cite` flows",
    ),
    Definition(
        "designs_published", "Designs shared", "count",
        "Designs the labs published for others: data out.", "Σ publish", "`publish` flows",
    ),
    Definition(
        "waste_kg", "Waste", "kg",
        "What the labs threw away, whatever became of it.", "Σ discard", _WASTE,
    ),
    Definition(
        "waste_kg_per_person", "Labs' waste per person", "kg/person",
        "The labs' waste divided among the city's people.",
        "waste_kg / population", _WASTE,
        f"{_PER_PERSON} Over a year it can be set beside the city's official municipal waste "
        "per person, to see how small a part the labs' waste is.",
    ),
    Definition(
        "diversion_rate", "Waste diverted", "ratio",
        "Of the waste, the share reused, recycled or composted rather than burnt or buried.",
        "waste with fate reuse, recycle or compost / waste_kg", _WASTE,
    ),
    Definition(
        "energy_kwh", "Electricity used", "kWh",
        "The electricity the labs' machines and workshops used.",
        "Σ consume electricity", "`consume electricity` flows and energy meters' readings",
    ),
    Definition(
        "energy_per_kg", "Electricity per kg made", "kWh/kg",
        "How much electricity each kilogram of things made took.",
        "energy_kwh / produced_kg", "the two metrics it divides",
    ),
    Definition(
        "local_energy_share", "Local electricity share", "ratio",
        "Of the electricity used, the share generated at the lab or in the city.",
        "electricity from site or city / energy_kwh", "`consume electricity` flows by ring",
    ),
    Definition(
        "work_hours", "Hours of work", "h",
        "The people behind local production.", "Σ work on work_hours", "`work` flows",
    ),
    Definition(
        "training_hours", "Hours of training", "h",
        "The capacity building the labs do.", "Σ work on training_hours", "`work` flows",
    ),
    Definition(
        "machine_hours", "Machine hours", "h",
        "How long the machines ran.", "Σ use machine_hours",
        "`use` flows and machines' job reports (OctoPrint, Klipper, Bambu, PrusaLink)",
    ),
    Definition(
        "utilization", "Machine utilization", "ratio",
        "How much of the time the machines were running.",
        "per device, machine hours / hours in the window",
        "machine hours, and the true length of the window",
        "A day the clocks change has 23 or 25 hours.",
    ),
    Definition(
        "reporting_coverage", "Sites reporting", "ratio",
        "Of the city's active sites, the share that reported anything in the window.",
        "sites with at least one event / active sites", "every event, by its site",
    ),
    Definition(
        "de", "Labs' domestic extraction (DE)", "kg",
        "Material the labs took from the city itself that was not recycled.",
        "inputs from site or city that are not recycled", _MASS_INPUTS, _LABS_ONLY,
    ),
    Definition(
        "imp", "Labs' imports (IMP)", "kg",
        "Material the labs brought in from the region or further away.",
        "inputs from region or beyond", _MASS_INPUTS, _LABS_ONLY,
    ),
    Definition(
        "exp", "Labs' exports (EXP)", "kg",
        "What the labs made, repaired or threw away that left the city.",
        "produce, modify and discard with mass, to region or beyond",
        "`produce`, `modify` and `discard` flows by ring", _LABS_ONLY,
    ),
    Definition(
        "dmi", "Labs' direct material input (DMI)", "kg",
        "All the material that entered the labs' making.", "DE + IMP", _MASS_INPUTS, _LABS_ONLY,
    ),
    Definition(
        "dmc", "Labs' material consumption (DMC)", "kg",
        "The material the labs' making used up in the city: what came in less what went out.",
        "DE + IMP − EXP", "inputs and exports", _LABS_ONLY,
    ),
    Definition(
        "ptb", "Labs' trade balance (PTB)", "kg",
        "Material the labs brought in, less what they sent out.", "IMP − EXP",
        "inputs and exports", _LABS_ONLY,
    ),
    Definition(
        "dmi_per_person", "Labs' material input per person", "kg/person",
        "DMI divided among the city's people.", "DMI / population", _MASS_INPUTS,
        f"{_PER_PERSON} {_LABS_ONLY}",
    ),
    Definition(
        "dmc_per_person", "Labs' material consumption per person", "kg/person",
        "DMC divided among the city's people.", "DMC / population", "inputs and exports",
        f"{_PER_PERSON} {_LABS_ONLY}",
    ),
    Definition(
        "u", "Material recovered (U)", "kg",
        "Waste made into secondary material in the city.", "Σ recover", "`recover` flows",
    ),
    Definition(
        "cmu", "Circular material use (CMU)", "ratio",
        "Of the material used, the share that was recovered waste.", "U / (DMC + U)",
        "`recover` flows, inputs and exports",
        "The Eurostat indicator's identity, applied to the labs' flows.",
    ),
    Definition(
        "pito", "PITO: how linear", "ratio",
        "How much of what passes through the labs comes from far away or ends burnt or buried.",
        "(inputs from beyond + waste landfilled or incinerated) / (all inputs + waste_kg)",
        "inputs and waste",
        "Lower is better: 0 is a metabolism with nothing from beyond and nothing landfilled.",
    ),
    Definition(
        "dido", "DIDO: how local and open", "ratio",
        "How far the city makes and keeps things locally, from shared designs.",
        f"the mean of the recorded terms among {', '.join(DIDO_TERMS)}",
        "the four metrics it averages",
        "With terms not recorded it is modelled, says which terms it used, and carries the "
        "range the missing terms allow (at 0 and at 1).",
    ),
    Definition(
        "fci", "Fab City Index (FCI)", "ratio",
        "How far the city is from a Fab City: locally productive, globally connected. "
        "From 0 to 1; an index, not a percentage.",
        "DIDO × (1 − PITO)", "DIDO and PITO",
        "With DIDO known and PITO not, there is no single number: the range [0, DIDO]. Where "
        "DIDO carries a range, so does FCI.",
    ),
]  # fmt: skip

DEFINITIONS: dict[str, Definition] = {d.name: d for d in _DEFINITIONS}


def definitions() -> list[Definition]:
    """Every metric's definition, in the order the metrics are listed."""
    return [DEFINITIONS[name] for name in METRICS if name in DEFINITIONS]
