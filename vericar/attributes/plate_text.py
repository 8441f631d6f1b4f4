"""What a plate's read says: the recogniser's text made into a registration, or refused.

A read is normalised to uppercase letters and digits (a German plate's seal read as "o" taken out),
and kept as a plate only when it looks like a registration: 4-8 letters and digits with at least one
of each, and little else in the read. Reads of British plates with look-alike characters are put
right first. ``without_sticker`` takes out, before all that, a letter that a German plate's stickers
were read as (it needs the recogniser's confidence in each character). Every rule was chosen on
labelled train photos (docs/plates.md), never on dev.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

# German plates' registration seal between the district (1-3 letters) and the letters reads as a
# lowercase "o" ("MoAY 4762" for M·AY 4762): that o is dropped; an o anywhere else is kept.
SEAL = re.compile(r"^([A-Z]{1,3})[ ·.:]?o(?=[A-Z]{1,2}[ ·.:-]?[0-9])")
PLATE_TEXT = re.compile(r"^(?=.*[A-Z])(?=.*[0-9])[A-Z0-9]{4,8}$")
# Blurring is for privacy: any plate-shaped line read as 3-10 letters / digits is hidden (a badge
# hidden by mistake costs little; a plate left because it read as "SERIOUS" or "AB1" costs more).
LOOSE_TEXT = re.compile(r"^[A-Z0-9]{3,10}$")
KEPT_SHARE = 0.75  # of the raw read's visible characters must be Latin letters / digits
# Current British plates are 2 letters, 2 digits, 3 letters ("AB12CDE"). At 224 px the recogniser often reads
# their digits as look-alike letters ("TLOBCAL" for TL08CAL: no digit, so not taken for a plate) or an O as 0
# ("DK080AB" for DK08OAB). A 7-character read that fits the format once at most two look-alikes are swapped
# is taken in that form. A letter place takes only 0 -> O: with 5 -> S, 6 -> G, 8 -> B there too, true plates
# of older formats turned wrong on train ("DY165TS" -> "DY16STS"). Chosen on the 643 train photos
# (docs/plates.md): 148 -> 156 of 191 plates read right, 79 -> 86 false plates. The price: a 7-letter word
# whose 3rd and 4th letters look like digits passes as a plate ("DESIGNS" -> "DE51GNS", 2 of the 7 new false
# plates on train were such words), and a letters-only vanity plate can be misread ("HALSCAR" -> "HA15CAR").
BRITISH = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z]{3}$")
AS_DIGIT, AS_LETTER = str.maketrans("OQDILZSGB", "000112568"), str.maketrans("0", "O")
MAX_SWAPS = 2
# A German plate's two round stickers between the district and the letters are often read as one unsure
# letter ("SIMA6307" for S·MA 6307, the I at 0.77). A letter I, E or P read at under 0.80 in 2nd-4th place,
# after letters only, is dropped when what is left has the German layout (2-5 letters, 1-4 digits, at most 8).
# Chosen on the 643 train photos (docs/plates.md): 156 -> 162 of 191 read right, false plates unchanged.
STICKER_LETTERS, STICKER_MAX = "IEP", 0.80
GERMAN = re.compile(r"^(?=[A-Z0-9]{3,8}$)[A-Z]{2,5}[0-9]{1,4}$")


def _unsealed(raw: str) -> str:
    """The read in NFKC, a German seal read as "o" taken out (it is not a character)."""
    return SEAL.sub(r"\1", unicodedata.normalize("NFKC", raw).strip())


def normalise_text(raw: str) -> str:
    """A read as plate text: NFKC, a seal read as "o" dropped, uppercase, only A-Z and 0-9 kept
    (``"m·pe 3389"`` -> ``"MPE3389"``, ``"MoAY 4762"`` -> ``"MAY4762"``); no look-alike is swapped
    (labels are written as seen)."""
    return _plate_chars(_unsealed(raw))


def _plate_chars(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def british(text: str) -> str | None:
    """``text`` (normalised) as a current British registration once at most ``MAX_SWAPS`` look-alikes
    are swapped (``"TLOBCAL"`` -> ``"TL08CAL"``), or None when it does not fit that format."""
    if len(text) != 7:
        return None
    fixed = text[:2].translate(AS_LETTER) + text[2:4].translate(AS_DIGIT) + text[4:].translate(AS_LETTER)
    return fixed if BRITISH.match(fixed) and sum(a != b for a, b in zip(text, fixed)) <= MAX_SWAPS else None


def without_sticker(read: str, confs: Sequence[float]) -> str | None:
    """``read`` (the recogniser's text, and its confidence in each character, spaces included) less the
    unsure letter that a German plate's stickers were read as, for ``plate_like_text`` to check as any
    read; None when there is none to drop (``STICKER_LETTERS``) or the confidences do not match the read.
    The places are counted over the read's letters and digits (NFKC, so a full-width letter counts)."""
    if len(read) != len(confs):
        return None
    kept = [(at, unicodedata.normalize("NFKC", c).upper(), float(p)) for at, (c, p) in enumerate(zip(read, confs))]
    kept = [(at, c, p) for at, c, p in kept if len(c) == 1 and c.isascii() and c.isalnum()]
    text = "".join(c for _, c, _ in kept)
    unsure = [(p, at) for i, (at, c, p) in enumerate(kept[1:4], 1) if c in STICKER_LETTERS and p < STICKER_MAX
              and text[:i].isalpha() and GERMAN.match(text[:i] + text[i + 1:])]
    if not unsure:
        return None
    at = min(unsure)[1]  # the least sure of them
    return read[:at] + read[at + 1:]


def plate_like_text(raw: str, strict: bool = True) -> str | None:
    """The normalised text when ``raw`` reads like a registration, else None: 4-8 letters and
    digits with at least one of each (``strict=False``: any 3-10), and little else in the read (a
    Chinese or symbol-heavy read of a badge is not a plate with the odd character dropped). A read
    that fits the British format with look-alikes swapped is given in that form (``british``)."""
    raw = _unsealed(raw)
    text = _plate_chars(raw)
    visible = re.sub(r"[\s\-·.:|_'\"]", "", raw)
    if not visible or len(text) < KEPT_SHARE * len(visible):
        return None
    text = british(text) or text
    return text if (PLATE_TEXT if strict else LOOSE_TEXT).match(text) else None
