"""The walkthroughs (`make mlserver`, `make forecaster`) run top to bottom and stop what they started,
whether they end, fail or are interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGHS = ROOT / "tools" / "walkthroughs"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not reaped yet is a zombie: not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "walkthrough.sh"
    path.write_text(f'source "{WALKTHROUGHS / "lib.sh"}"\n{body}\n')
    return path


def started(output: str) -> tuple[list[int], Path]:
    pids = [int(pid) for pid in re.findall(r"started in the background, pid (\d+)", output)]
    work = re.search(r"files in (\S+)", output)
    assert work is not None, output
    return pids, Path(work.group(1))


def test_a_failing_step_stops_what_was_started_and_removes_the_files(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        'echo "files in $WORK"\nstart sleeper "$WORK/sleep.log" sleep 300\n'
        'touch "$WORK/made"\nfalse\necho never',
    )
    result = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "never" not in result.stdout
    pids, work = started(result.stdout)
    assert len(pids) == 1
    assert not alive(pids[0])
    assert not work.exists()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_walkthrough_stops_what_it_started(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM to the group: the servers started in
    the background, which a non-interactive shell leaves deaf to SIGINT, are stopped by the trap."""
    # As in the walkthroughs, the script is running short foreground commands (curl, a poll's sleep)
    # when the signal comes.
    path = script(
        tmp_path,
        'echo "files in $WORK"\nstart sleeper "$WORK/sleep.log" sleep 300\nwhile :; do sleep 0.1; done',
    )
    process = subprocess.Popen(["bash", str(path)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        pids, work = started("".join(lines))
        assert alive(pids[0])
        os.killpg(process.pid, sig)
        assert process.wait(timeout=30) == status
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert not alive(pids[0])
    assert not work.exists()


@pytest.mark.slow
def test_the_mlserver_walkthrough_runs_and_cleans_up() -> None:
    """`make mlserver`'s script: each step's output as docs/models/upstream.md shows it, then nothing
    left running and its files gone."""
    require_tool("curl")
    # A session of its own, so that a timeout can stop MLServer and predcache with the script.
    process = subprocess.Popen(
        [str(WALKTHROUGHS / "mlserver.sh")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert out.index("X-Cache: MISS") < out.index("X-Cache: HIT")
    counts = re.findall(r'model_infer_request_success_total\{model="iris",version="None"\} (\S+)', out)
    assert counts == ["1.0", "2.0"], "one inference for the first input, one for the burst of 200"
    assert re.search(r"^ +1 200 predcache; fwd=uri-miss; stored$", out, flags=re.MULTILINE)
    assert "HTTP/1.1 400 Bad Request" in out
    assert "{'type': 'array', 'minItems': 1, 'maxItems': 1" in out
    assert "HTTP/1.1 503 Service Unavailable" in out
    assert "\r" not in out
    pids, work = started(out)
    assert len(pids) == 3  # MLServer, predcache, predcache with the schema
    assert not any(alive(pid) for pid in pids)
    assert not work.exists()
