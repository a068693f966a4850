"""How the embedded critic's own answers read: its invalid rate under the verdict reader, and the
share of answers the reader reads otherwise than a search of each verdict's patterns does (how
critic answers were read before `esc_agents/verdicts.py`).

The critic (the shipped `default` prompt, its configured temperature and max_tokens, one answer
per request, no re-asking, cache off) judges prefixes of real ESConv dialogues, drawn with a
fixed seed. `--save FILE` keeps the raw answers as JSONL (`rlff-esc prompts check default
--answers FILE` then shows how each reads); `--answers FILE` reads such a file again, no model. Last line: `invalid=<x> changed=<y> n=<answers>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
from pathlib import Path

from esc_agents.config import build_config
from esc_agents.datasets import load_cases
from esc_agents.engine import Engine
from esc_agents.prompts import load_prompt


LEGACY_LETTERS = {"feels worse": r"^\W*a\b", "feels the same": r"^\W*b\b", "feels better": r"^\W*c\b",
                  "issue solved": r"^\W*d\b"}
LEGACY_PHRASES = {"feels worse": ["feels worse", "feel worse"], "feels the same": ["feels the same", "feel the same"],
                  "feels better": ["feels better", "feel better"],
                  "issue solved": ["issue is solved", "issue solved", "been solved"]}


def legacy(answer: str) -> str | None:
    """The shipped critic's patterns before the reader, searched as they were."""
    text = answer.strip().lower()
    found = {label for label in LEGACY_PHRASES
             if any(re.search(p, text, re.IGNORECASE | re.MULTILINE) for p in [*LEGACY_PHRASES[label], LEGACY_LETTERS[label]])}
    return found.pop() if len(found) == 1 else None


async def collect(contexts: int, samples: int, seed: int) -> list[str]:
    config = build_config(None, {"episode": {"critic_samples": samples}})
    rng = random.Random(seed)
    cases = rng.sample(load_cases("esconv:ppdpp_test"), contexts)
    async with Engine(config, use_cache=False) as engine:
        critic = engine.critic

        async def answers(case) -> list[str]:
            history = case.dialog[: rng.choice([2, 4, 6, 8])] or case.dialog
            completions = await critic.endpoint.complete(
                "critic", critic.chat(case, history), temperature=critic.settings.temperature,
                max_tokens=critic.settings.max_tokens, indices=list(range(samples)), seed=seed, use_cache=False)
            return [completion.text for completion in completions]

        return [answer for group in await asyncio.gather(*(answers(case) for case in cases)) for answer in group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=30)
    parser.add_argument("--samples", type=int, default=8, help="answers per context")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save", type=Path, help="write the raw answers here (JSONL)")
    parser.add_argument("--answers", type=Path, help="read answers saved by --save instead of asking the critic")
    args = parser.parse_args()
    if args.answers:
        answers = [json.loads(line)["answer"] for line in args.answers.read_text().splitlines() if line.strip()]
    else:
        answers = asyncio.run(collect(args.contexts, args.samples, args.seed))
    critic = load_prompt("critic", "default")
    read = [critic.read(answer).label for answer in answers]
    before = [legacy(answer) for answer in answers]
    if args.save:
        args.save.write_text("".join(json.dumps({"answer": a}, ensure_ascii=False) + "\n" for a in answers))
    n = len(answers)
    invalid = sum(label is None for label in read) / n
    changed = sum(a != b for a, b in zip(read, before)) / n
    print(f"answers: {n}; invalid: reader {invalid:.3f}, pattern search {sum(b is None for b in before) / n:.3f}")
    for label in sorted({*read, *before} - {None}):
        print(f"  {label:16s} reader {read.count(label):4d}  pattern search {before.count(label):4d}")
    print(f"invalid={invalid:.3f} changed={changed:.3f} n={n}")


if __name__ == "__main__":
    main()
