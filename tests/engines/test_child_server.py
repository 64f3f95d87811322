"""Supervision of real server processes: llama_cpp.server on the GGUF, and small Python children."""

import asyncio
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import psutil
import pytest

from engines.base import GenerationRequest, ModelSpec
from engines.child_server import SupervisedServerEngine
from engines.errors import EngineUnavailableError
from engines.process_supervisor import RestartPolicy, ServerSupervisor, render
from tests.engines.helpers import POEM, collect, greedy_chat

from .openai_server import llama_server_command

# A plain HTTP server that also forks a long sleeper, as vLLM forks its GPU workers.
FORKING_SERVER = (
    "import runpy, signal, subprocess, sys\n"
    "if sys.argv[1] == 'ignore-term': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
    "sys.argv = ['http.server', sys.argv[2], '--bind', '127.0.0.1']\n"
    "runpy.run_module('http.server', run_name='__main__', alter_sys=True)\n"
)
# Runs the rest of its arguments once the file named by its first one is gone: a child the
# test can keep from starting for as long as it needs.
GATED = "import os, sys, time\nwhile os.path.exists(sys.argv[1]): time.sleep(0.05)\nos.execv(sys.argv[2], sys.argv[2:])"
# Only turns a hang into a failure; nothing here waits this long when things work.
DEADLINE_S = 120


def chat(**sampling) -> GenerationRequest:
    return greedy_chat(POEM, **{"max_tokens": 8, **sampling})


def llama_engine(gguf_path, **options) -> SupervisedServerEngine:
    options = {"command": llama_server_command(gguf_path), "restart_backoff_s": 0.1, **options}
    return SupervisedServerEngine(ModelSpec(name="smollm2", source=gguf_path, context_length=2048, options=options))


@pytest.fixture
def engines():
    """Engines a test made; unloaded even when the test fails, so no server outlives it."""
    made = []
    yield made
    for engine in made:
        engine.unload()


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


async def wait_until(condition, timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def returns_within(call, timeout: float = DEADLINE_S):
    """Run a blocking call on a thread and return (or raise) what it does; fail if it hangs."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout)
    except FutureTimeout:
        pytest.fail(f"{call} did not return within {timeout}s")
    finally:
        pool.shutdown(wait=False)


@pytest.mark.model
async def test_start_waits_for_health_then_streams_through_the_proxy(gguf_path, engines):
    engine = llama_engine(gguf_path)
    engines.append(engine)
    assert not engine.loaded
    engine.load()
    assert engine.loaded
    server = engine.state()["server"]
    assert server["status"] == "ready" and psutil.pid_exists(server["pid"])
    chunks = await collect(engine, chat())
    assert len([c for c in chunks if c.text]) >= 4
    assert "".join(c.text for c in chunks).strip()
    assert chunks[-1].finish_reason == "length"
    pid = server["pid"]
    engine.unload()
    assert not engine.loaded
    assert not psutil.pid_exists(pid) and group_members(pid) == []


@pytest.mark.model
async def test_killed_child_is_restarted_and_waiting_requests_succeed(gguf_path, engines):
    engine = llama_engine(gguf_path)
    engines.append(engine)
    engine.load()
    before = await collect(engine, chat())
    first_pid = engine.supervisor.pid
    os.kill(first_pid, signal.SIGKILL)
    # Sent at once: it waits for the restarted child instead of failing.
    after = await collect(engine, chat())
    assert [c.text for c in after] == [c.text for c in before]
    assert engine.supervisor.restarts == 1
    assert engine.supervisor.pid not in (None, first_pid)
    assert not psutil.pid_exists(first_pid)


@pytest.mark.model
async def test_engine_is_not_ready_while_restarting_and_waits_are_bounded(gguf_path, engines, tmp_path):
    gate = tmp_path / "hold-the-restart"
    engine = llama_engine(
        gguf_path, ready_wait_s=0.2, command=[sys.executable, "-c", GATED, str(gate), *llama_server_command(gguf_path)]
    )
    engines.append(engine)
    engine.load()
    gate.touch()  # the next child waits here until the test lets it start
    os.kill(engine.supervisor.pid, signal.SIGKILL)
    assert await wait_until(lambda: not engine.loaded)
    assert engine.state()["server"]["status"] == "restarting"
    # The new child cannot be ready while the gate is shut: the request waits 0.2 s and gives up.
    with pytest.raises(EngineUnavailableError, match="restarting"):
        await collect(engine, chat())
    assert engine.supervisor.status == "restarting"
    gate.unlink()
    assert await wait_until(lambda: engine.loaded)
    assert (await collect(engine, chat()))[-1].finish_reason == "length"


@pytest.mark.model
async def test_watcher_gives_up_after_the_policy_allows_no_more(gguf_path, engines):
    engine = llama_engine(gguf_path, max_restarts=1, restart_window_s=600)
    engines.append(engine)
    engine.load()
    os.kill(engine.supervisor.pid, signal.SIGKILL)
    assert await wait_until(lambda: engine.loaded and engine.supervisor.restarts == 1)
    os.kill(engine.supervisor.pid, signal.SIGKILL)
    assert await wait_until(lambda: engine.supervisor.status == "failed")
    with pytest.raises(EngineUnavailableError, match="gave up after 1 restarts") as caught:
        await collect(engine, chat())
    assert "killed by SIGKILL" in str(caught.value)
    assert engine.supervisor.pid is None


def test_restart_policy_gives_up_on_a_child_that_keeps_crashing(tmp_path, engines):
    launches = tmp_path / "launches"
    crash = (
        "import sys; open(sys.argv[1], 'a').write('x'); "
        "print('cannot start on port', sys.argv[2], file=sys.stderr); sys.exit(3)"
    )
    engine = SupervisedServerEngine(
        ModelSpec(
            name="crashy",
            source="",
            options={
                "command": [sys.executable, "-c", crash, str(launches), "{port}"],
                "max_restarts": 2,
                "restart_window_s": 60,
                "restart_backoff_s": 0.05,
            },
        )
    )
    engines.append(engine)
    with pytest.raises(EngineUnavailableError) as caught:
        engine.load()
    message = str(caught.value)
    assert "exited with status 3" in message
    assert "gave up after 2 restarts within 60s" in message
    assert "cannot start on port" in message  # the child's own last words
    assert launches.read_text() == "xxx"  # the first launch and two restarts
    assert not engine.loaded


def test_missing_executable_fails_at_once():
    supervisor = ServerSupervisor(
        "ghost", ["/nonexistent/server", "--port", "{port}"], health_url="http://{host}:{port}/health"
    )
    with pytest.raises(EngineUnavailableError, match=r"could not be started.*nonexistent"):
        supervisor.start()
    assert supervisor.status == "failed"


def test_backoff_doubles_up_to_its_cap():
    policy = RestartPolicy(backoff_s=0.5, max_backoff_s=3)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]


def test_child_that_never_gets_healthy_times_out_and_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(3600)"
    supervisor = ServerSupervisor(
        "sleepy",
        [sys.executable, "-c", sleeper, str(pid_file)],
        health_url="http://{host}:{port}/health",
        policy=RestartPolicy(max_restarts=0),
        startup_timeout_s=1,
    )
    # The child would sleep for an hour: only the 1 s start-up timeout ends start() in time.
    with pytest.raises(EngineUnavailableError, match=r"did not answer http://127\.0\.0\.1:\d+/health within 1s"):
        returns_within(supervisor.start)
    assert not psutil.pid_exists(int(pid_file.read_text()))
    assert supervisor.status == "failed"


# A child that obeys SIGTERM gets a grace period it will never use up; one that ignores it
# gets a short one, after which it must be killed.
@pytest.mark.parametrize("mode, grace_s", [("obey-term", DEADLINE_S), ("ignore-term", 0.5)])
def test_stop_ends_the_whole_process_group(mode, grace_s, caplog):
    caplog.set_level(logging.WARNING, logger="engines.process_supervisor")
    supervisor = ServerSupervisor(
        "forking",
        [sys.executable, "-c", FORKING_SERVER, mode, "{port}"],
        health_url="http://{host}:{port}/",
        startup_timeout_s=DEADLINE_S,
        shutdown_grace_s=grace_s,
    )
    supervisor.start()
    try:
        pid = supervisor.pid
        assert len(group_members(pid)) == 2  # the server and the sleeper it forked
    finally:
        returns_within(supervisor.stop, timeout=2 * DEADLINE_S)
    killed = "ignored SIGTERM" in caplog.text
    assert killed == (mode == "ignore-term"), caplog.text
    assert group_members(pid) == []
    assert supervisor.status == "stopped" and supervisor.pid is None


def test_placeholders_are_filled_and_other_braces_kept():
    values = {"port": 8000, "host": "127.0.0.1", "source": "/m.gguf", "model": "smol"}
    assert render("--port={port}", values) == "--port=8000"
    assert render('{"max_tokens": {model}}', values) == '{"max_tokens": smol}'
    assert render("{unknown}", values) == "{unknown}"


def test_command_must_be_a_list():
    engine = SupervisedServerEngine(ModelSpec(name="m", source="", options={"command": "python -m x"}))
    with pytest.raises(EngineUnavailableError, match="list"):
        engine.load()
