"""What a command's result means for its exit code: failed jobs (2) and answers too often
unparsable to trust the numbers (3), said on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path


def usage_columns(usage: dict[str, int], per: int = 1) -> str:
    """One role's usage (as `UsageMeter.as_dict` gives it), one unit per column: requests sent,
    samples the server returned, samples replayed from the cache, tokens; divided by `per` (e.g.
    per step). A total from before samples were counted shows `-` for them."""
    def column(key: str, width: int) -> str:
        if key not in usage:
            return f"{'-':>{width}s}"
        return f"{usage[key]:{width}d}" if per == 1 else f"{usage[key] / per:{width}.1f}"

    return (f"requests {column('calls', 6)}  samples {column('samples', 6)} fresh {column('cached', 6)} cached  "
            f"tokens in {column('prompt_tokens', 8)} out {column('completion_tokens', 7)}")


def print_usage(meter) -> None:
    for role, usage in meter.as_dict().items():
        print(f"  {role:16s} {usage_columns(usage)}")


def report_failures(failed: dict[str, str], what: str) -> int:
    """Failed jobs are listed and make the exit code 2; everything else was saved."""
    if not failed:
        return 0
    for key, error in failed.items():
        print(f"failed {key}: {error}", file=sys.stderr)
    print(f"rlff-esc: error: {len(failed)} {what} failed; rerun the same command to retry them", file=sys.stderr)
    return 2


def too_many_invalid(what: str, rate: float, limit: float) -> bool:
    """Unparsable verdicts leave a metric resting on the parsable rest: loud above the limit."""
    if rate <= limit:
        return False
    print(f"rlff-esc: error: {rate:.1%} of {what} answers matched no verdict (above --max-invalid-rate {limit:g}); "
          "the numbers above rest on the rest; check the prompt's verdict patterns or the model", file=sys.stderr)
    return True


def critic_trust(folders: Iterable[Path], limit: float) -> int:
    """3 when any simulate run's critic answers are unparsable above the limit, else 0."""
    from esc_agents.core.runlog import read_jsonl
    from esc_agents.core.types import invalid_verdict_rate

    untrusted = [too_many_invalid(f"{folder.name}'s critic", invalid_verdict_rate(
        score for t in read_jsonl(folder / "trajectories.jsonl") for score in t["scores"]), limit) for folder in folders]
    return 3 if any(untrusted) else 0
