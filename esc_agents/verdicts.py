"""Reading a critic's answer as one verdict, or as none.

Everything RLFF-ESC trains on is a critic's verdict, so a misread answer is a wrong reward without
an error. Searching the answer for each verdict's words reads "No, the issue has not been solved."
as *solved* and "A bit better, but not solved." as option A. The reader here follows stated rules,
the same for every critic prompt:

- An option mark (`A`…`D`, or `1`…`5` for a numbered scale) counts only as the whole answer (or
  its whole first line), or at
  its start followed by `)`, `.` or `:`, or followed by that option's own sentence. A leading
  "Answer:", "The answer is", "Option" or "Verdict:" is passed over. A mark in another form ("B/…"),
  at the start of a later line ("…\nB) …") or standing alone later ("D. Just kidding, A.") makes
  no reading, but one that differs from the reading makes the answer invalid; a mark taken back
  at once ("D. No.", "D) Wrong.") is invalid. "1. … 2. …" is list numbering, not a rating.
- A verdict's phrases (the prompt's `patterns`, its option sentence of three words or more) count
  where they are asserted. A negation (`not`, `no`, `n't`, `never`, `no longer`, `false`,
  `unlikely`, `claims` …) earlier in the sentence, a modal or condition (`would`, `might`, `if` …)
  in its clause, a question mark ending its sentence, a retraction right after it ("… (not
  really)", "just kidding"), a field value other than yes ("Issue solved: False"), or a denial
  inside it ("the issue is not fully solved") makes that mention denied: it never counts as that
  verdict, and an answer that both asserts and denies one verdict is invalid. "No doubt" and an
  opening "No," are not denials.
- Exactly one verdict asserted (by mark and phrases together) is the reading; none, or two
  different ones, is invalid. Hedges such as "I think" or "probably" do not change a reading.

Nothing here calls a model or knows a prompt file's format: `prompts.Prompt` builds the options.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from esc_agents.core.plaintext import fold

MARKS = tuple(string.ascii_uppercase) + tuple(str(digit) for digit in range(10))

# Words that deny what follows them in the same sentence; modals that make it hypothetical.
_NEGATION = re.compile(
    r"\b(?:not|no|never|nor|neither|none|nothing|nobody|without|hardly|barely|cannot|no\s+longer|far\s+from|"
    r"yet\s+to|fail(?:s|ed)?\s+to|false|untrue|unlikely|doubtful|wrong|incorrect|claim(?:s|ed)?|pretend(?:s|ed)?)\b"
    r"|n't\b", re.IGNORECASE)
# Negation words that affirm: "no doubt", and an answer's opening "No," (an answer word, not a denial).
_AFFIRMING = re.compile(r"\b(?:no\s+doubt|without\s+(?:a\s+)?doubt|no\s+question|nothing\s+but)\b"
                        r"|^\W*(?:no|nope|not\s+at\s+all|not\s+really)\s*[,.!]", re.IGNORECASE)
_MODAL = re.compile(r"(?:\b(?:would|could|might|may|should|will|shall|can)|'ll|'d)\b(?!\s+(?:say|argue|guess|think))|"
                    r"\b(?:if|unless|once|until|hope(?:s|fully)?|wish(?:es)?|want(?:s|ed)?\s+to)\b", re.IGNORECASE)
# A retraction right after a verdict: "Solved? No.", "D. Wrong.", "… is solved (not really)", "just kidding".
_DENIED_AFTER = re.compile(
    r"[\s,;:.!?)\-]*(?:\(\s*)?(?:(?:no|not|nope|never|wrong|false|incorrect)(?:\s+(?:really|yet|quite|at\s+all))?"
    r"\s*(?:[.!?,;)]|$)|just\s+kidding|kidding|jk\b)", re.IGNORECASE)
# "Issue solved: False", "Issue solved (0/10)": a field whose one-word value is not a yes.
_FIELD_VALUE = re.compile(r"[ \t]*(?:[:=]|\()[ \t]*([^\s.;,)]+)[ \t]*\)?[ \t]*(?:[.;,!]|$)", re.IGNORECASE | re.MULTILINE)
_YES = re.compile(r"(?:yes|true|correct|right|y|1|\u2713|\u2714|\u2705)$", re.IGNORECASE)
# Words that, taken out, turn a denial inside a phrase ("issue is not solved") into the phrase.
_INNER_DENIAL = re.compile(r"\s*\b(?:not|never|hardly|barely|partially|partly|almost|nearly|only|no\s+longer|"
                           r"not\s+yet|far\s+from|yet\s+to\s+be)\b|n't\b|\bun(?=(?:re)?solved\b)", re.IGNORECASE)
_DEGREE = re.compile(r"\s*\b(?:fully|completely|totally|entirely|really|quite|yet|now|truly|actually)\b", re.IGNORECASE)
_CONTRAST = re.compile(r"\b(?:but|however|although|though|yet|whereas|while|instead)\b", re.IGNORECASE)
# Where a clause ends: sentence punctuation, a line break, or a contrast ("but", "however" …).
_CLAUSE_END = re.compile(r"[.;!?\n]|\b(?:but|however|although|though|yet|whereas|while)\b|[,-]\s*(?=\w)",
                         re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;:!?\n]")
_SENTENCE_STOP = re.compile(r"[.;!?\n]")  # what ends a sentence after a phrase: "?" makes it a question
_PREFIX = re.compile(r"^\W*(?:(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|verdict|option|choice|rating|score)"
                     r"(?:\s+is)?\s*[:\-=]?\s*|i\s+(?:choose|pick|select)\s+(?:option\s+)?)", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#>]+")


def normalise(answer: str) -> str:
    """The answer folded (`core.plaintext.fold`), markup and runs of blanks removed, so rules see plain
    words; a line that stops mid-sentence is joined to the next ("is not\nsolved")."""
    text = _MARKUP.sub("", fold(answer))
    lines = [" ".join(line.split()) for line in text.strip().splitlines() if line.strip()]
    joined: list[str] = []
    for line in lines:
        if joined and re.search(r"\b(?:not|never|is|are|has|have|been|was|isn't|hasn't)$", joined[-1]):
            joined[-1] += " " + line
        else:
            joined.append(line)
    return "\n".join(joined)


def sentence_pattern(sentence: str) -> str:
    """An option's sentence as a pattern: its words in order, any spacing, final punctuation optional."""
    words = re.findall(r"[\w']+", fold(sentence))
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
        # An option sentence of one or two words ("Yes", "Feels worse") names a verdict only as its
        # option line does; as a phrase it would match ordinary words anywhere in an answer.
        self._phrases = [(option.label, re.compile(phrase, re.IGNORECASE))
                         for option in self.options
                         for phrase in (*option.phrases, *([sentence_pattern(option.sentence)]
                                                           if option.sentence and _words(option.sentence) >= 3 else []))]
        self._marks = {option.mark.upper(): option for option in self.options if option.mark}
        # An option's sentence right after its mark ("B The seeker feels the same"), compiled once.
        self._after_mark = {option.label: re.compile(r"\s*" + sentence_pattern(option.sentence), re.IGNORECASE)
                            for option in self.options if option.sentence}

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
            if _DENIED_AFTER.match(body):
                return Reading(None, f"option {option.mark}, then taken back", (), (option.label,))
            asserted[option.label] = f"option {option.mark}"
        # A denial inside a phrase ("the issue is not solved") matches no phrase: taken out, it does.
        plain = _DEGREE.sub("", body)  # "not fully solved" is a denial of "solved" too
        undenied = _INNER_DENIAL.sub("", plain)
        for label, pattern in self._phrases:
            matches = list(pattern.finditer(body))
            if len(list(pattern.finditer(undenied))) > len(list(pattern.finditer(plain))):
                denied.add(label)
            for match in matches:
                last_word = re.findall(r"\w+", match.group(0))[-1]
                if self._is_denied(body, match) or re.search(rf"\bun{re.escape(last_word)}\b", body, re.IGNORECASE):
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
        marks in other places or forms: "B/…", a later `B)` line, a letter standing alone later on
        ("D. Just kidding, A."). Those never make a reading, but one that differs from it makes
        the answer invalid."""
        loose = [self._marks[mark.upper()] for mark in re.findall(r"\n\W{0,4}\(?([A-Za-z0-9])\)", text)
                 if mark.upper() in self._marks]
        loose += [self._marks[mark] for mark in re.findall(r"(?<=[\s\S])(?<![\w'])([A-Z])(?:[).:,!]|(?=\s*$)|$)", text,
                                                            re.MULTILINE) if mark in self._marks]
        match = re.match(r"\W{0,4}\(?([A-Za-z0-9])(?![A-Za-z0-9])", text)
        if match is None or (option := self._marks.get(match.group(1).upper())) is None:
            return None, loose
        rest = text[match.end():]
        if option.mark.isdigit() and re.match(r"[.)]", rest) and re.search(
                rf"(?:^|\n|\s){int(option.mark) + 1}[.)]\s", rest):
            return None, loose  # "1. … 2. …": list numbering, not a rating
        if not rest.split("\n")[0].strip(" \t)(.:!\"'") or re.match(r"\s*[).:](?!\d)", rest):
            return (option, rest), loose
        if option.mark.isdigit() and re.match(r"\s*(?:/\s*\d+|out\s+of\b)", rest):
            return (option, rest), loose
        if option.label in self._after_mark and self._after_mark[option.label].match(rest):
            return (option, rest), loose
        if re.match(r"\s*[^\w\s']", rest):
            loose.insert(0, option)
        return None, loose

    @staticmethod
    def _is_denied(text: str, match: re.Match) -> bool:
        """A negation earlier in the sentence (unless a contrast comes between it and the phrase), a
        modal earlier in the clause, a question, a retraction right after the phrase, or a field
        whose one-word value is not a yes ("Issue solved: False")."""
        start = _last_end(_SENTENCE_END, text, match.start())
        sentence = _AFFIRMING.sub(" ", text[start: match.start()])
        negations = list(_NEGATION.finditer(sentence))
        negated = bool(negations) and not _CONTRAST.search(sentence, negations[-1].end())
        clause = text[_last_end(_CLAUSE_END, text, match.start()): match.start()]
        ending = _SENTENCE_STOP.search(text, match.end())
        question = ending is not None and ending.group(0) == "?"
        field_value = _FIELD_VALUE.match(text, match.end())
        refused_value = field_value is not None and not _YES.match(field_value.group(1))
        return (negated or question or refused_value or bool(_MODAL.search(clause))
                or bool(_DENIED_AFTER.match(text, match.end())))


def _words(sentence: str) -> int:
    return len(re.findall(r"[\w']+", sentence))


def _last_end(boundary: re.Pattern, text: str, before: int) -> int:
    ends = [found.end() for found in boundary.finditer(text, 0, before)]
    return ends[-1] if ends else 0


def option_lines(template: str) -> dict[str, str]:
    """`A) The seeker feels worse.` lines of a prompt template, mark -> sentence: the last block of
    two or more such lines one after another, all lettered or all numbered, so numbered
    instructions above the options ("1. Decide whether …") are not taken for options."""
    blocks: list[dict[str, str]] = []
    previous_kind = None
    for line in template.splitlines():
        match = re.match(r"\s*\(?([A-Z0-9])[).:]\s+(\S.*?)\s*$", line)
        kind = None if match is None else match.group(1).isdigit()
        if match is None:
            previous_kind = None
            continue
        if kind != previous_kind or match.group(1) in blocks[-1]:
            blocks.append({})
        blocks[-1][match.group(1)] = match.group(2)
        previous_kind = kind
    return next((block for block in reversed(blocks) if len(block) >= 2), {})


def pattern_mark(pattern: str) -> str | None:
    """The one option mark a pattern stands for (`^\\W*a\\b` -> "A"), or None for a phrase pattern.
    Such patterns matched "A bit better" as option A; the reader's mark rule replaces them."""
    compiled = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    marks = [mark for mark in MARKS if compiled.search(f"{mark})") and compiled.search(mark)]
    return marks[0] if len(marks) == 1 and not compiled.search("an ordinary sentence") else None
