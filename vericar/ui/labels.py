"""Vehicle labels in the app: the text rules (vericar.search.labels) and escaping wherever they are shown.

    label = normalise_label(" Tesla  Model 3 Sedan 2021 ")          # NFKC, whitespace collapsed
    check_not_confusable(label, existing_labels)                       # VericarError on a look-alike
    md_text(label), html_text(label)                                   # safe to put in Markdown / HTML

The rules live in ``vericar.search.labels`` so that the library's ``Recognizer.enroll`` applies
them too; they are re-exported here for the app's modules.
"""
from __future__ import annotations

import re

from vericar.search.labels import (
    MAX_LABEL_LEN,
    REFUSED_CATEGORIES,
    LabelError,
    check_not_confusable,
    html_text,
    normalise_label,
    skeleton,
)

__all__ = ["MAX_LABEL_LEN", "REFUSED_CATEGORIES", "LabelError", "check_not_confusable", "html_text", "md_text",
           "normalise_label", "skeleton"]
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>:$=\"'<&])")


def md_text(label: str) -> str:
    """``label`` as literal text inside Markdown: HTML-escaped, then Markdown punctuation backslashed.

    Gradio's Markdown keeps tags such as <img> after sanitising, and would turn ``[x](url)`` into a
    link; escaped, a hostile label shows as the characters that were typed and nothing else.
    """
    return _MD_SPECIAL.sub(r"\\\1", str(label)).replace("\\<", "&lt;").replace("\\&", "&amp;")
