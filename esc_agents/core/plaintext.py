"""Model text folded to the plain letters and punctuation a reader sees.

A label or a verdict can be spelt so that a pattern misses it while a model reads it the same:
`Seeker：` (a full-width colon), `Sееker:` (Cyrillic е), `Seeker&#58;`, `See\u200bker:` (an invisible
character), `S e e k e r :`, `The seeker’s issue` (a curly apostrophe). The critic's answer and a
supporter's reply are both checked on this folded form, and a reply is passed on in it, so what
the checks saw is what every other role reads.
"""

from __future__ import annotations

import html
import re
import unicodedata

# Letters of other scripts drawn like Latin ones; folded only inside a word that has Latin letters too.
_CONFUSABLE = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ѵ": "v", "һ": "h", "ɡ": "g",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y",
    "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    "α": "a", "ο": "o", "ν": "v", "ι": "i", "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ε": "e",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
})
# Punctuation NFKC leaves as it is: colons, apostrophes, quotes and dashes of other forms.
_PUNCTUATION = str.maketrans({
    "\u2236": ":", "\ua789": ":", "\u02d0": ":", "\u02f8": ":", "\u0589": ":", "\u05c3": ":", "\u0703": ":",
    "\u0704": ":", "\u16ec": ":", "\u1804": ":", "\u2806": ":", "\u205a": ":", "\u205d": ":", "\u2982": ":",
    "\u1367": ":", "\U000e003a": ":", "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2028": "\n", "\u2029": "\n",
})
# Characters that show as nothing, or as a blank inside a word.
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u180e"}
_MIXED_WORD = re.compile(r"\w*[A-Za-z]\w*")
_SPACED_LETTERS = re.compile(r"(?<![\w.])(?:[A-Za-z] ){3,}[A-Za-z](?![\w])")


def _visible(char: str) -> bool:
    category = unicodedata.category(char)
    return not (category in ("Cf", "Mn", "Me", "Cc") and char not in "\n\t") and char not in _INVISIBLE


def fold(text: str) -> str:
    """`text` with HTML entities decoded, compatibility forms and look-alike punctuation folded,
    invisible characters and combining marks dropped, confusable letters inside Latin words made
    Latin, and single letters spaced out (`S e e k e r`) joined."""
    text = unicodedata.normalize("NFKC", html.unescape(text)).translate(_PUNCTUATION)
    text = "".join(char for char in text if _visible(char))
    text = _MIXED_WORD.sub(lambda word: word.group(0).translate(_CONFUSABLE), text)
    return _SPACED_LETTERS.sub(lambda letters: letters.group(0).replace(" ", ""), text)
