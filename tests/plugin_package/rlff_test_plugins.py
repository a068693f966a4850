"""A plugin package as a user would write one: a critic and a seeker in Python, registered
through the `rlff_esc.roles` entry points of its dist-info (as `pip install` would make it), an
R_fut formula under `rlff_esc.formulas`, a dataset under `rlff_esc.datasets` and a GRPO reward
term under `rlff_esc.rewards`."""

from esc_agents.core.types import Case, CriticScore, Message
from esc_agents.roles.plugins import PythonRole, transcript_key


class LengthCritic(PythonRole):
    """Scores the last supporter reply by its length: 1 from `long_words` words on, else -1."""

    score_range = (-1.0, 1.0)

    def __init__(self, long_words: int = 8):
        super().__init__(long_words=long_words)
        self.long_words = long_words

    async def judge(self, case, history, samples):
        replies = [m.content for m in history if m.speaker == "supporter"]
        score = 1.0 if replies and len(replies[-1].split()) >= self.long_words else -1.0
        rng = self.rng(transcript_key(case, history))
        noisy = [score if rng.random() > 0.1 else -score for _ in range(samples)]
        return CriticScore(samples=noisy, verdicts=["long" if s > 0 else "short" for s in noisy],
                           mean=sum(noisy) / samples)


class EchoSeeker(PythonRole):
    """Repeats the first words of its situation."""

    async def reply(self, case, history):
        return Message(speaker="seeker", content=" ".join(case.situation.split()[:8]) + ".")


def final_score_halved(outcome, params):
    """Half the final critic score."""
    return None if outcome.final_score is None else outcome.final_score / 2


def tiny_cases(split):
    """Two cases per split, named `tiny_<split>-<i>`."""
    return [Case(id=f"tiny_{split}-{i}", situation=f"Tiny situation {i} of {split}.", emotion="anxiety")
            for i in range(2)]


def brevity(prompts, completions, replies, **kwargs):
    """A GRPO reward term: 1 for a reply of at most ten words, else 0."""
    return [float(len(reply.split()) <= 10) for reply in replies]
