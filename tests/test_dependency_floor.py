"""The online reward modes rely on TRL features that older releases lack; the declared floor must
exclude every release without them (found by reading TRL's GRPOTrainer across releases)."""

from pathlib import Path

import tomllib
import trl
from packaging.requirements import Requirement
from trl.trainer import grpo_trainer

FIRST_WITH_ALL = "1.14.0"  # async callable objects (1.14), unscorable rows masked (1.6), log_metric (1.0)


def declared(name: str) -> Requirement:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    return next(Requirement(spec) for spec in project["dependencies"] if Requirement(spec).name == name)


def test_the_trl_floor_admits_no_release_without_async_rewards_and_none_masking():
    specifier = declared("trl").specifier
    assert not specifier.contains("1.13.0") and not specifier.contains("0.29.0")
    assert specifier.contains(FIRST_WITH_ALL) and specifier.contains(trl.__version__)


def test_the_installed_trl_has_what_the_reward_modes_use():
    source = Path(grpo_trainer.__file__).read_text()
    assert "is_async_callable" in source  # an async __call__ on a reward object is awaited
    assert "unscorable_mask" in source  # all-None rows leave the group baseline
    assert '"log_metric"' in source  # per-step cost metrics reach the logs
