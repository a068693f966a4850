"""A full disk or a signal during any write leaves every file either as it was or complete, and
the next run resumes. The disk is filled for real: a child process runs under a file-size limit
(RLIMIT_FSIZE), so its writes fail part-way exactly as they do on a full disk."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import SHORT_REPLIES, read_jsonl, rlff_esc
from tests.test_compare import fake_run

ROOT = Path(__file__).resolve().parents[1]


def run_limited(script: str, limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """`script` in a child whose files may not grow past `limit` bytes (writes beyond fail with EFBIG)."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_log_append_that_hits_a_full_disk_leaves_only_whole_lines(tmp_path):
    result = run_limited("""
        from esc_agents.core.runlog import RunLog
        written = 0
        try:
            with RunLog("log.jsonl", key="id") as log:
                for i in range(1000):
                    log.append({"id": str(i), "text": "x" * 150})
                    written += 1
        except OSError as exc:
            print(written, exc.errno)
    """, limit=1000, cwd=tmp_path)
    written, errno = map(int, result.stdout.split())
    data = (tmp_path / "log.jsonl").read_bytes()
    assert errno == 27  # EFBIG: the limit was hit mid-line (each line is ~170 bytes, 1000 is not a multiple)
    assert 0 < written < 10 and data.endswith(b"\n") and len(data) < 1000
    assert [json.loads(line)["id"] for line in data.decode().splitlines()] == [str(i) for i in range(written)]
    # and the log resumes from there once there is room again
    from esc_agents.core.runlog import RunLog

    with RunLog(tmp_path / "log.jsonl", key="id") as log:
        assert log.done == {str(i) for i in range(written)}
        log.append({"id": "next"})
    assert len(read_jsonl(tmp_path / "log.jsonl")) == written + 1


def test_a_json_file_rewritten_on_a_full_disk_keeps_its_old_content(tmp_path):
    (tmp_path / "summary.json").write_text('{"old": true}\n')
    result = run_limited("""
        from esc_agents.core.jsonfile import write_json
        try:
            write_json("summary.json", {"rows": ["y" * 100] * 100})
        except OSError as exc:
            print(exc.errno)
    """, limit=2000, cwd=tmp_path)
    assert result.stdout.strip() == "27", result.stderr
    assert (tmp_path / "summary.json").read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no staging file left


def test_a_reader_skips_a_line_torn_by_a_kill_and_reports_the_case_missing(tmp_path):
    run = fake_run(tmp_path / "run", 2, ["c1", "c2", "c3"])
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "cases": ["c1", "c2", "c3"]}))
    with (run / "trajectories.jsonl").open("r+b") as handle:  # the last line loses its tail
        handle.truncate(len(handle.read()) - 20)
    result = rlff_esc("evaluate", str(run), timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["missing_cases"] == ["c3"] and summary["complete"] is False
    assert result.returncode == 2
    # a line that does end with its newline and still does not parse is damage, not a torn line
    (run / "trajectories.jsonl").write_text("not json\n" + (run / "trajectories.jsonl").read_text())
    damaged = rlff_esc("evaluate", str(run), timeout=120)
    assert damaged.returncode != 0


@pytest.mark.server
def test_sigterm_mid_run_leaves_complete_files_and_the_rerun_resumes(local_server, tmp_path):
    run = tmp_path / "run"
    args = ["simulate", "--limit", "3", "--max-turns", "1", "--critic-samples", "1", "--concurrency", "1",
            *SHORT_REPLIES, "--no-cache", "--out", str(run)]
    errors = (tmp_path / "stderr.txt").open("w")  # a file, not a pipe: progress bars would fill a pipe
    child = subprocess.Popen([sys.executable, "-m", "esc_agents.cli", *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=errors)
    log = run / "trajectories.jsonl"
    deadline = time.monotonic() + 600
    while not (log.exists() and log.read_text().count("\n") >= 1) and child.poll() is None:
        assert time.monotonic() < deadline, "no episode finished"
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=120)
    errors.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert child.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    for path in run.rglob("*"):  # every file the run wrote is whole
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            assert path.read_bytes().endswith(b"\n")
            read_jsonl(path)
    before = [t["case_id"] for t in read_jsonl(log)]
    assert 1 <= len(before) < 3
    rerun = rlff_esc(*args, timeout=600)
    assert rerun.returncode in (0, 3), rerun.stderr[-2000:]
    after = [t["case_id"] for t in read_jsonl(log)]
    assert after[: len(before)] == before and len(after) == len(set(after)) == 3


def test_sigterm_stops_a_run_started_with_sigint_ignored(tmp_path):
    """A job a shell starts in the background has SIGINT ignored; SIGTERM must still stop it."""
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from esc_agents.cli.main import _stop_on_sigterm\n"
            "signal.signal(signal.SIGTERM, _stop_on_sigterm)\n"
            "try:\n    print('ready', flush=True); time.sleep(60)\n"
            "except KeyboardInterrupt:\n    sys.exit(130)\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 130
