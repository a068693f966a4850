"""A wheel install works without the checkout: the wheel is built, installed into a fresh venv
(its dependencies come from the running environment through a path entry, so nothing is
downloaded), and `simulate` runs from a directory outside the checkout on the embedded server,
with the ESConv data, the prompt files and the viewer page all read from the installed copy."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import PLUMBING_ENV, read_jsonl

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".ruff_cache", ".mypy_cache")

# Run in the fresh venv from outside the checkout: where each piece was found.
WHERE = """
import json, sys
from importlib import metadata, resources
import esc_agents, prompts
from esc_agents import datasets, prompts as prompt_files
print(json.dumps({
    "esc_agents": esc_agents.__file__, "prompts": prompts.__file__,
    "data_dir": str(datasets.DATA_DIR), "prompts_dir": str(prompt_files.PROMPTS_DIR),
    "viewer": len(resources.files("esc_agents.evaluation").joinpath("viewer.html").read_text()),
    "cases": len(datasets.load_cases("esconv:ppdpp_test")),
    "license": metadata.metadata("rlff-esc")["License-Expression"],
    "dist": str(metadata.distribution("rlff-esc").locate_file("")),
}))
"""


def run(args: list, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A venv holding only the project's wheel; the running environment's site-packages is a
    plain path entry after its own (so that environment's .pth files, e.g. an editable install's
    finder, are not run, and the fresh install's modules and metadata come first)."""
    tmp = tmp_path_factory.mktemp("packaging")
    # Build from a copy, so that build/ and *.egg-info in the shared checkout are neither written
    # nor (stale files from an earlier build) packed into this wheel.
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", ".", "-w", tmp / "dist"],
        cwd=source, env=os.environ, timeout=300)
    (wheel,) = (tmp / "dist").glob("rlff_esc-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=os.environ)
    python = venv / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=tmp, env=os.environ).stdout.strip())
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=tmp, env=os.environ, timeout=300)
    # Only now, so that pip never sees (nor offers to uninstall) the running environment's copy.
    deps = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (purelib / "zz_dependencies.pth").write_text("".join(f"{path}\n" for path in deps))
    return venv


def clean_env(**extra: str) -> dict:
    """The user's environment, without anything that would point back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RLFF_ESC_DATA", "VIRTUAL_ENV")}
    return {**env, **PLUMBING_ENV, **extra}


def test_wheel_install_runs_simulate_outside_the_checkout(fresh_venv, local_server, tmp_path):
    python, elsewhere = fresh_venv / "bin" / "python", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env()

    where = json.loads(run([python, "-c", WHERE], cwd=elsewhere, env=env).stdout)
    site = fresh_venv / "lib"
    for key in ("esc_agents", "prompts", "prompts_dir", "dist"):
        assert Path(where[key]).resolve().is_relative_to(site.resolve()), (key, where[key])
    assert Path(where["data_dir"]) == fresh_venv / "share" / "rlff-esc" / "data"
    assert where["cases"] > 0 and where["viewer"] > 1000 and where["license"] == "Apache-2.0"
    assert "CC BY-NC 4.0" in (Path(where["data_dir"]) / "esconv" / "README.md").read_text()

    # The console script, its prompt files, and a prompt rendered for a dataset case.
    script = fresh_venv / "bin" / "rlff-esc"
    listed = run([script, "prompts"], cwd=elsewhere, env=env).stdout
    assert "critic:" in listed and "default" in listed and "cooperative" in listed
    rendered = json.loads(run([script, "prompts", "render", "cooperative", "--role", "user_simulator",
                               "--case", "ppdpp_test-0"], cwd=elsewhere, env=env).stdout)
    assert rendered[0]["role"] == "system" and "Your situation: Stress induced" in rendered[0]["content"]
    # The checkout's editable install is visible to the fresh venv as a second rlff-esc
    # distribution; its entry points must not appear twice.
    roles = run([script, "roles"], cwd=elsewhere, env=env).stdout
    assert roles.count("known-answer-critic ") == 1

    out = elsewhere / "run"
    run([python, "-m", "esc_agents.cli", "simulate", "--dataset", "esconv:ppdpp_test", "--limit", "1",
         "--max-turns", "1", "--critic-samples", "2", "--out", out], cwd=elsewhere, env=env, timeout=300)
    (trajectory,) = read_jsonl(out / "trajectories.jsonl")
    assert trajectory["case_id"] == "ppdpp_test-0" and trajectory["turns"] == 1


def test_data_dir_override_reaches_the_installed_copy(fresh_venv, tmp_path):
    """$RLFF_ESC_DATA still wins over the data a wheel installs."""
    (tmp_path / "esconv").mkdir()
    first = (fresh_venv / "share" / "rlff-esc" / "data" / "esconv" / "ppdpp_test.jsonl").open().readline()
    (tmp_path / "esconv" / "ppdpp_test.jsonl").write_text(first)
    loaded = run([fresh_venv / "bin" / "python", "-c",
                  "from esc_agents import datasets; print(datasets.DATA_DIR, len(datasets.load_cases('esconv:ppdpp_test')))"],
                 cwd=tmp_path, env=clean_env(RLFF_ESC_DATA=str(tmp_path))).stdout.split()
    assert loaded == [str(tmp_path), "1"]
