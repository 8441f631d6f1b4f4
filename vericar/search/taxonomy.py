"""Class name -> make / model / type (body) / year, so predictions and votes work per level.

Stanford-Cars-style names are ``"<Make> <Model> <Body type> <Year>"`` ("AM General Hummer SUV
2000"). They are parsed by rule: a known multi-word make or else the first token, a trailing
4-digit year, and a trailing known body designation; the few names that carry no body word
("Acura TL Type-S 2008") are looked up in :data:`OVERRIDES`, which gives their real body type.
Any other label ("cat", "my_truck_1") gets a *flat* hierarchy: every level is the label itself,
so a kNN vote at make or type level degrades to a vote on the label rather than pooling
unrelated classes under a shared "unknown".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

__all__ = [
    "LEVELS", "COARSE_TO_FINE", "BODY_TYPES", "MULTI_WORD_MAKES", "OVERRIDES", "VehicleName", "parse_class_name",
    "Taxonomy", "vehicle_label",
]

#: Prediction levels, finest first. "model" is the full class label (make + model + type + year).
LEVELS: tuple[str, ...] = ("model", "make", "type", "year")
#: The hierarchy the embedding is trained on (HiMS-Min), coarse to fine.
COARSE_TO_FINE: tuple[str, ...] = ("make", "type", "model")

#: Body designations recognised at the end of a name (before the year), canonical spelling.
#: Longest match wins, so "Crew Cab" beats "Cab" and "Wagon Van" reads as model "... Wagon" + "Van".
BODY_TYPES: tuple[str, ...] = (
    # the Stanford Cars vocabulary
    "Sedan", "SUV", "Coupe", "Convertible", "Hatchback", "Wagon", "Minivan", "Van",
    "Crew Cab", "Extended Cab", "Regular Cab", "Quad Cab", "Club Cab", "SuperCab",
    # common in user labels
    "Double Cab", "King Cab", "Access Cab", "Mega Cab", "SuperCrew", "Cab", "Pickup", "Truck",
    "Roadster", "Cabriolet", "Crossover", "Liftback", "Fastback", "Estate", "Limousine", "Bus",
)
_BODY_BY_WORDS = {tuple(b.lower().split()): b for b in BODY_TYPES}
_MAX_BODY_WORDS = max(len(k) for k in _BODY_BY_WORDS)

#: Makes spelled as more than one token. Hyphenated makes (Rolls-Royce, Mercedes-Benz) are one
#: token already; "Eagle" and "Ram" are one-word makes ("Eagle Talon", "Ram C/V").
MULTI_WORD_MAKES: tuple[str, ...] = (
    "AM General", "Aston Martin", "Land Rover",
    "Alfa Romeo", "Austin Healey", "De Tomaso", "Great Wall", "Lynk & Co",
    "Mercedes Benz", "Rolls Royce",
)
_MAKES_BY_WORDS = sorted((tuple(m.lower().split()) for m in MULTI_WORD_MAKES), key=len, reverse=True)

#: Canonical spelling of known makes (the 49 Stanford Cars makes and a few others), so a user
#: label written "bmw ..." or "Mercedes Benz ..." pools with the gallery's "BMW" / "Mercedes-Benz".
_CANONICAL_MAKES = {
    m.lower(): m
    for m in (
        "AM General", "Acura", "Aston Martin", "Audi", "BMW", "Bentley", "Bugatti", "Buick",
        "Cadillac", "Chevrolet", "Chrysler", "Daewoo", "Dodge", "Eagle", "FIAT", "Ferrari",
        "Fisker", "Ford", "GMC", "Geo", "HUMMER", "Honda", "Hyundai", "Infiniti", "Isuzu",
        "Jaguar", "Jeep", "Lamborghini", "Land Rover", "Lincoln", "MINI", "Maybach", "Mazda",
        "McLaren", "Mercedes-Benz", "Mitsubishi", "Nissan", "Plymouth", "Porsche", "Ram",
        "Rolls-Royce", "Scion", "Spyker", "Suzuki", "Tesla", "Toyota", "Volkswagen", "Volvo",
        "smart", "Alfa Romeo", "Kia", "Lexus", "Subaru", "Genesis", "Polestar", "Rivian",
    )
}
_CANONICAL_MAKES.update({"mercedes benz": "Mercedes-Benz", "rolls royce": "Rolls-Royce",
                         "aston-martin": "Aston Martin", "vw": "Volkswagen"})

_YEAR = re.compile(r"^(18|19|20)\d\d$")

#: Stanford Cars names with no body word: real-world body type, checked by hand.
#: label -> (make, model, type, year)
OVERRIDES: dict[str, tuple[str, str, str, str]] = {
    "Acura TL Type-S 2008": ("Acura", "TL Type-S", "Sedan", "2008"),
    # US Integra Type R: 3-door liftback; Stanford calls such cars (Eagle Talon, Audi TT) Hatchback
    "Acura Integra Type R 2001": ("Acura", "Integra Type R", "Hatchback", "2001"),
    "Buick Regal GS 2012": ("Buick", "Regal GS", "Sedan", "2012"),
    "Chevrolet Corvette ZR1 2012": ("Chevrolet", "Corvette ZR1", "Coupe", "2012"),
    "Chevrolet Corvette Ron Fellows Edition Z06 2007": (
        "Chevrolet", "Corvette Ron Fellows Edition Z06", "Coupe", "2007"),
    "Chevrolet HHR SS 2010": ("Chevrolet", "HHR SS", "Wagon", "2010"),
    "Chevrolet Cobalt SS 2010": ("Chevrolet", "Cobalt SS", "Coupe", "2010"),
    "Chevrolet TrailBlazer SS 2009": ("Chevrolet", "TrailBlazer SS", "SUV", "2009"),
    "Chrysler 300 SRT-8 2010": ("Chrysler", "300 SRT-8", "Sedan", "2010"),
    "Dodge Challenger SRT8 2011": ("Dodge", "Challenger SRT8", "Coupe", "2011"),
    "Dodge Charger SRT-8 2009": ("Dodge", "Charger SRT-8", "Sedan", "2009"),
    "FIAT 500 Abarth 2012": ("FIAT", "500 Abarth", "Hatchback", "2012"),
    # the body word sits mid-name ("IPL G Coupe" in Infiniti's own naming)
    "Infiniti G Coupe IPL 2012": ("Infiniti", "G IPL", "Coupe", "2012"),
    "Jaguar XK XKR 2012": ("Jaguar", "XK XKR", "Coupe", "2012"),
    "Lamborghini Gallardo LP 570-4 Superleggera 2012": (
        "Lamborghini", "Gallardo LP 570-4 Superleggera", "Coupe", "2012"),
}


@dataclass(frozen=True)
class VehicleName:
    """One label split into levels. For a flat label, make/type/year are None and model == label."""

    label: str
    make: str | None
    model: str | None
    type: str | None
    year: str | None

    @property
    def is_hierarchical(self) -> bool:
        """True when the label was understood as make / model / type / year."""
        return self.make is not None


def _flat(label: str) -> VehicleName:
    return VehicleName(label=label, make=None, model=label, type=None, year=None)


def parse_class_name(name: str) -> VehicleName:
    """Split ``"Make Model Type Year"`` into levels; anything else becomes a flat name.

    Hierarchical only when all four parts are found: a trailing year (1800-2099), a body
    designation from :data:`BODY_TYPES` just before it, a make, and a non-empty model.
    """
    if not isinstance(name, str):
        raise TypeError(f"a class name must be a str, got {type(name).__name__}")
    label = " ".join(name.split())  # tolerate doubled / trailing spaces in user input
    if label in OVERRIDES:
        return VehicleName(label, *OVERRIDES[label])
    tokens = label.split(" ")
    if len(tokens) < 4 or not _YEAR.match(tokens[-1]):
        return _flat(label)
    year, words = tokens[-1], tokens[:-1]
    body = None
    for n in range(min(_MAX_BODY_WORDS, len(words) - 2), 0, -1):  # longest designation first
        body = _BODY_BY_WORDS.get(tuple(w.lower() for w in words[-n:]))
        if body is not None:
            words = words[:-n]
            break
    if body is None:
        return _flat(label)
    n_make = 1
    lowered = tuple(w.lower() for w in words)
    for make_words in _MAKES_BY_WORDS:
        if lowered[: len(make_words)] == make_words:
            n_make = len(make_words)
            break
    make, model = " ".join(words[:n_make]), " ".join(words[n_make:])
    if not model:
        return _flat(label)
    make = _CANONICAL_MAKES.get(make.lower(), make)
    return VehicleName(label=label, make=make, model=model, type=body, year=year)


def vehicle_label(make: str, model: str, type: str, year: str | int) -> str:  # noqa: A002 - contract name
    """Build ``"Make Model Type Year"`` and check that it parses back into the same four parts."""
    parts = {"make": make, "model": model, "type": type, "year": str(year)}
    clean = {k: " ".join(str(v or "").split()) for k, v in parts.items()}
    missing = [k for k, v in clean.items() if not v]
    if missing:
        raise ValueError(f"vehicle label needs {', '.join(missing)}; e.g. make='Tesla', "
                         "model='Model 3', type='Sedan', year='2021'.")
    if not _YEAR.match(clean["year"]):
        raise ValueError(f"year must be four digits such as 2021, got {clean['year']!r}.")
    body = _BODY_BY_WORDS.get(tuple(clean["type"].lower().split()))
    if body is None:
        raise ValueError(f"unknown body type {clean['type']!r}; use one of: {', '.join(BODY_TYPES)}.")
    label = f"{clean['make']} {clean['model']} {body} {clean['year']}"
    got = parse_class_name(label)
    same_make = (got.make or "").lower().replace("-", " ") == _CANONICAL_MAKES.get(
        clean["make"].lower(), clean["make"]).lower().replace("-", " ")
    if not same_make or (got.model, got.type, got.year) != (clean["model"], body, clean["year"]):
        raise ValueError(
            f"'{label}' would be read as make={got.make!r}, model={got.model!r}, type={got.type!r}; "
            "write a multi-word make with hyphens (e.g. 'Lynk-&-Co') and keep body words out of "
            "the model name."
        )
    return f"{got.make} {got.model} {got.type} {got.year}"  # canonical make spelling


class Taxonomy:
    """Label -> :class:`VehicleName` for a set of labels, with per-level lookups for kNN votes."""

    def __init__(self, names: Iterable[VehicleName] = ()) -> None:
        self._names: dict[str, VehicleName] = {}
        for n in names:
            self._names[n.label] = n

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "Taxonomy":
        """Parse every label (duplicates are fine) into a taxonomy."""
        out = cls()
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"labels must be non-empty strings, got {label!r}; fix the gallery labels.")
            out._names[label] = _relabel(parse_class_name(label), label)
        return out

    def name(self, label: str) -> VehicleName:
        """The parsed name of ``label`` (parsed on the fly when the label is new)."""
        found = self._names.get(label)
        return found if found is not None else _relabel(parse_class_name(label), label)

    def level_value(self, label: str, level: str) -> str:
        """Value of ``label`` at ``level`` ("model" = the label; flat labels give the label)."""
        if level not in LEVELS:
            raise ValueError(f"unknown taxonomy level {level!r}; expected one of {LEVELS}.")
        if level == "model":
            return label
        value = getattr(self.name(label), level)
        return label if value is None else value

    def is_hierarchical(self, label: str) -> bool:
        """True when ``label`` has real make / type / year levels (not a flat fallback)."""
        return self.name(label).is_hierarchical

    def values(self, level: str) -> list[str]:
        """Sorted distinct values at ``level`` over this taxonomy's labels (e.g. all makes)."""
        return sorted({self.level_value(label, level) for label in self._names})

    @property
    def labels(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, label: object) -> bool:
        return label in self._names

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; stores the parsed parts so a later rule change cannot relabel a gallery."""
        return {"format_version": 1, "names": [asdict(n) for n in self._names.values()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Taxonomy":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or d.get("format_version") != 1 or not isinstance(d.get("names"), list):
            raise ValueError("not a vericar taxonomy dict (format_version 1 with a 'names' list); "
                             "rebuild it with Taxonomy.from_labels(labels).")
        fields = ("label", "make", "model", "type", "year")
        try:
            return cls(VehicleName(**{f: n[f] for f in fields}) for n in d["names"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"taxonomy entry is missing a field ({exc}); expected {fields}.") from exc


def _relabel(name: VehicleName, label: str) -> VehicleName:
    """Keep the caller's exact label string as the key (parse_class_name normalises spaces)."""
    if name.label == label:
        return name
    model = label if name.make is None else name.model
    return VehicleName(label=label, make=name.make, model=model, type=name.type, year=name.year)
