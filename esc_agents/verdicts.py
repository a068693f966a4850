"""Reading a critic's answer as one verdict, or as none.

Everything RLFF-ESC trains on is a critic's verdict, so a misread answer is a wrong reward without
an error. Searching the answer for each verdict's words reads "No, the issue has not been solved."
as *solved* and "A bit better, but not solved." as option A. The reader here follows stated rules,
the same for every critic prompt:

- An option mark (`A`…`D`, or `1`…`5` for a numbered scale) counts only as the whole answer (or
  its whole first line), or at
  its start followed by `)`, `.` or `:`, or followed by that option's own sentence. A leading
  "Answer:", "The answer is", "Option" or "Verdict:" is passed over. A mark in another form ("B/…")
  or at the start of a later line ("…\nB) …") makes no reading, but one that differs from the
  reading makes the answer invalid.
- A verdict's phrases (the prompt's `patterns`, its option sentence) count where they are asserted.
  A negation (`not`, `no`, `n't`, `never`, `no longer`, `without` …) or a modal (`would`, `could`,
  `might`, `will` …) earlier in the same sentence or clause, or a `no`/`not` right after it, makes
  that mention denied: it never counts as that verdict, and an answer that both asserts and denies
  one verdict is invalid.
- Exactly one verdict asserted (by mark and phrases together) is the reading; none, or two
  different ones, is invalid. Hedges such as "I think" or "probably" do not change a reading.

Nothing here calls a model or knows a prompt file's format: `prompts.Prompt` builds the options.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

MARKS = tuple(string.ascii_uppercase) + tuple(str(digit) for digit in range(10))

# Words that deny what follows them in the same clause; modals that make it hypothetical.
_NEGATION = re.compile(
    r"\b(?:not|no|never|nor|neither|none|nothing|nobody|without|hardly|barely|cannot|no\s+longer|far\s+from|"
    r"yet\s+to|fail(?:s|ed)?\s+to)\b|n't\b",
    re.IGNORECASE)
_MODAL = re.compile(r"(?:\b(?:would|could|might|may|should|will|shall|can)|'ll|'d)\b(?!\s+(?:say|argue|guess|think))|"
                    r"\b(?:if|unless|once|until|hope(?:s|fully)?|wish(?:es)?|want(?:s|ed)?\s+to)\b", re.IGNORECASE)
_DENIED_AFTER = re.compile(r"[\s\W]*(?:no|not|nope|never)(?:\s+(?:really|yet|quite|at\s+all))?\s*(?:[.!?,;]|$)",
                           re.IGNORECASE)
_CONTRAST = re.compile(r"\b(?:but|however|although|though|yet|whereas|while|instead)\b", re.IGNORECASE)
# Where a clause ends: sentence punctuation, a line break, or a contrast ("but", "however" …).
_CLAUSE_END = re.compile(r"[.;!?\n]|\b(?:but|however|although|though|yet|whereas|while)\b|[,–—-]\s*(?=\w)",
                         re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;:!?\n]")
_PREFIX = re.compile(r"^\W*(?:(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|verdict|option|choice|rating|score)"
                     r"(?:\s+is)?\s*[:\-=]?\s*|i\s+(?:choose|pick|select)\s+(?:option\s+)?)", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#>]+")
_LOOKALIKES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\uff1a": ":", "\ufe55": ":",
                             "\u02d0": ":", "\u2236": ":", "\uff09": ")", "\uff08": "(", "\u2013": "-", "\u2014": "-"})


def normalise(answer: str) -> str:
    """Markup, look-alike punctuation and runs of blanks removed, so rules see plain words."""
    text = _MARKUP.sub("", answer.translate(_LOOKALIKES))
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines() if line.strip())


def sentence_pattern(sentence: str) -> str:
    """An option's sentence as a pattern: its words in order, any spacing, final punctuation optional."""
    words = re.findall(r"[\w']+", sentence.translate(_LOOKALIKES))
    return r"\b" + r"\W+".join(re.escape(word) for word in words) + r"\b" if words else r"(?!)"


@dataclass(frozen=True)
class Option:
    """One verdict as the reader knows it: its label, its mark and sentence where the prompt lists
    it as an option, and the phrases (regular expressions) that name it."""

    label: str
    mark: str | None = None
    sentence: str | None = None
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reading:
    """What an answer was read as: `label` (None: invalid) and why, for authors and audits."""

    label: str | None
    why: str
    asserted: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()


@dataclass
class VerdictReader:
    options: list[Option]
    _phrases: list[tuple[str, re.Pattern]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._phrases = [(option.label, re.compile(phrase, re.IGNORECASE | re.MULTILINE))
                         for option in self.options
                         for phrase in (*option.phrases, *([sentence_pattern(option.sentence)] if option.sentence else []))]
        self._marks = {option.mark.upper(): option for option in self.options if option.mark}

    def read(self, answer: str) -> Reading:
        text = normalise(answer)
        if not text:
            return Reading(None, "empty answer")
        asserted: dict[str, str] = {}  # label -> how
        denied: set[str] = set()
        body = _PREFIX.sub("", text, count=1)
        marked, loose = self._marked(body)
        if marked is not None:
            option, body = marked
            asserted[option.label] = f"option {option.mark}"
        for label, pattern in self._phrases:
            for match in pattern.finditer(body):
                if self._is_denied(body, match):
                    denied.add(label)
                else:
                    asserted.setdefault(label, f"says {match.group(0)!r}")
        found, refused = tuple(asserted), tuple(sorted(denied))
        if both := sorted(set(asserted) & denied):
            return Reading(None, f"asserts and denies {both[0]!r}", found, refused)
        if len(asserted) > 1:
            return Reading(None, "names " + " and ".join(repr(label) for label in asserted), found, refused)
        if not asserted:
            why = f"only denies {', '.join(map(repr, refused))}" if denied else "names no verdict"
            if loose:
                why = f"option {loose[0].mark} only in a form that does not count"
            return Reading(None, why, found, refused)
        (label, how), = asserted.items()
        if other := [option for option in loose if option.label != label]:
            return Reading(None, f"{how}, but also option {other[0].mark}", found, refused)
        return Reading(label, how, found, refused)

    def _marked(self, text: str) -> tuple[tuple[Option, str] | None, list[Option]]:
        """The option whose mark opens the answer by the rules above (with the text after it), and
        marks in other places or forms ("B/…", a later `B)` line): those never make a reading, but
        one that differs from it makes the answer invalid."""
        loose = [self._marks[mark.upper()] for mark in re.findall(r"\n\W*\(?([A-Za-z0-9])\)", text)
                 if mark.upper() in self._marks]
        match = re.match(r"\W*\(?([A-Za-z0-9])(?![A-Za-z0-9])", text)
        if match is None or (option := self._marks.get(match.group(1).upper())) is None:
            return None, loose
        rest = text[match.end():]
        if not rest.split("\n")[0].strip(" \t)(.:!\"'") or re.match(r"\s*[).:](?!\d)", rest):
            return (option, rest), loose
        if option.mark.isdigit() and re.match(r"\s*(?:/\s*\d+|out\s+of\b)", rest):
            return (option, rest), loose
        if option.sentence and re.match(r"\s*" + sentence_pattern(option.sentence), rest, re.IGNORECASE):
            return (option, rest), loose
        if re.match(r"\s*[^\w\s']", rest):
            loose.insert(0, option)
        return None, loose

    @staticmethod
    def _is_denied(text: str, match: re.Match) -> bool:
        """A negation earlier in the sentence (unless a contrast comes between it and the phrase), a
        modal earlier in the clause, or a bare "no"/"not" right after the phrase."""
        sentence = text[_last_end(_SENTENCE_END, text, match.start()): match.start()]
        negations = list(_NEGATION.finditer(sentence))
        negated = bool(negations) and not _CONTRAST.search(sentence, negations[-1].end())
        clause = text[_last_end(_CLAUSE_END, text, match.start()): match.start()]
        return negated or bool(_MODAL.search(clause)) or bool(_DENIED_AFTER.match(text, match.end()))


def _last_end(boundary: re.Pattern, text: str, before: int) -> int:
    ends = [found.end() for found in boundary.finditer(text, 0, before)]
    return ends[-1] if ends else 0


def option_lines(template: str) -> dict[str, str]:
    """`A) The seeker feels worse.` lines of a prompt template: mark -> sentence."""
    found = {}
    for match in re.finditer(r"^\s*\(?([A-Z0-9])[).:]\s+(\S.*?)\s*$", template, re.MULTILINE):
        found.setdefault(match.group(1), match.group(2))
    return found


def pattern_mark(pattern: str) -> str | None:
    """The one option mark a pattern stands for (`^\\W*a\\b` -> "A"), or None for a phrase pattern.
    Such patterns matched "A bit better" as option A; the reader's mark rule replaces them."""
    compiled = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    marks = [mark for mark in MARKS if compiled.search(f"{mark})") and compiled.search(mark)]
    return marks[0] if len(marks) == 1 and not compiled.search("an ordinary sentence") else None
