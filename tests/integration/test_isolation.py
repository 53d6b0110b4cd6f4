"""The decision children: a message that takes too long is quarantined `too_complex` and the
rest of the batch is decided normally; a child's memory cap turns a bomb into a parse error."""

from __future__ import annotations

import email
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from mailbot import config as config_mod
from mailbot.migrations import open_store
from mailbot.errors import StoreUnavailableError
from mailbot.isolation import _each
from mailbot.ingest.intake import save_raw
from mailbot.worker import Quarantined, Worker

ROOT = Path(__file__).resolve().parents[2]


def many_parts(n: int) -> bytes:
    parts = b"".join(
        b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(n)
    )
    return (b"From: a@example.org\r\nMessage-ID: <bomb@example.org>\r\nSubject: bomb\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")


GOOD = (b"From: jana@novak-syn.cz\r\nMessage-ID: <good@x>\r\nSubject: Tisk\r\n\r\n"
        b"Dobry den, nejde vytisknout sestavu dochazky, program hlasi chybu 17.\r\n"
        b"Licence: 5188-0264\r\n")


def pool_config(base: config_mod.Config, **worker: object) -> config_mod.Config:
    """Two children; the byte-level limits lifted, so that bombs reach the parser and the
    children's own time and memory caps are what stops them."""
    return base.model_copy(update={
        "worker": base.worker.model_copy(update={"processes": 2, **worker}),
        "limits": base.limits.model_copy(update={"mime_parts": 10**7, "multiparts": 10**7}),
    })


def test_overrun_is_quarantined_and_the_rest_decided(base_config: config_mod.Config) -> None:
    """With a 0.3 s limit, a 60,000-part mail is quarantined too_complex; the good mail
    next to it in the same batch is decided."""
    cfg = pool_config(base_config, parse_timeout_seconds=0.3)
    store = open_store(cfg)
    bomb = save_raw(store, many_parts(60_000), "test")
    good = save_raw(store, GOOD, "test")
    worker = Worker.from_config(cfg, store)
    try:
        results = worker.process_many(store.claim_inbound(10), datetime.now(UTC))
    finally:
        worker.close()
    by_id = {r.inbound_id: r for r in results}
    assert isinstance(by_id[bomb.id], Quarantined)
    assert "too_complex" in by_id[bomb.id].error
    assert not isinstance(by_id[good.id], Quarantined)
    assert store.count_inbound() == {"quarantined": 1, "decided": 1}
    [row] = store.list_inbound("quarantined")
    assert row.error and "too_complex" in row.error


def test_memory_cap_turns_a_bomb_into_a_quarantine(base_config: config_mod.Config) -> None:
    """A child capped at 200 MB of address space cannot parse a 300,000-part mail; the
    message is quarantined (not the daemon), the next one is decided."""
    cfg = pool_config(base_config, memory_mb=200, parse_timeout_seconds=60)
    store = open_store(cfg)
    bomb = save_raw(store, many_parts(300_000), "test")
    good = save_raw(store, GOOD, "test")
    worker = Worker.from_config(cfg, store)
    try:
        results = worker.process_many(store.claim_inbound(10))
    finally:
        worker.close()
    by_id = {r.inbound_id: r for r in results}
    quarantined = by_id[bomb.id]
    assert isinstance(quarantined, Quarantined)
    assert "MemoryError" in quarantined.error or "too_complex" in quarantined.error
    assert not isinstance(by_id[good.id], Quarantined)


def exit_code(proc: Any, seconds: float = 10.0) -> int | None:
    """The exit code of an ended child process, None if it still runs after `seconds`.

    Asked until it is known: the pool's own manager thread reaps its children too, and a
    `waitpid` that loses that race reports the child as running (ECHILD) for a moment."""
    import time

    deadline = time.monotonic() + seconds
    while proc.exitcode is None and time.monotonic() < deadline:
        proc.join(0.05)
    return proc.exitcode


def pool_children(worker: Worker) -> list[int]:
    """Pids of the worker's live decision processes."""
    assert worker.pool is not None
    executor = worker.pool._executor
    return [p.pid for p in getattr(executor, "_processes", {}).values() if p.is_alive()]


class FakeClock:
    """Seconds that move only when the test says so (the pool's idle timer)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_children_start_with_mail_and_stop_when_idle(base_config: config_mod.Config) -> None:
    """No decision process before there is mail; two while deciding; kept until exactly
    `pool_idle_seconds` have passed on the pool's clock since the last batch, then none; and
    they come back for the next mail. (Before: the test slept 1.2 s of real time.)"""
    from mailbot.isolation import WorkerPool

    cfg = pool_config(base_config, pool_idle_seconds=1.0)
    w = cfg.worker
    store = open_store(cfg)
    clock = FakeClock()
    worker = Worker(cfg, store, pool=WorkerPool(cfg, processes=w.processes,
                                                timeout=w.parse_timeout_seconds,
                                                memory_mb=w.memory_mb, clock=clock))
    try:
        assert pool_children(worker) == []
        worker.rest()
        save_raw(store, GOOD, "test")
        assert worker.run_once(10) == 1
        first = pool_children(worker)
        assert len(first) == 2
        worker.rest()  # used just now: kept
        assert pool_children(worker) == first
        clock.now += 0.75
        worker.rest()  # not idle long enough: kept
        assert pool_children(worker) == first
        clock.now += 0.25
        worker.rest()  # idle for pool_idle_seconds: stopped
        assert pool_children(worker) == []
        save_raw(store, GOOD.replace(b"<good@x>", b"<good2@x>"), "test")
        assert worker.run_once(10) == 1
        second = pool_children(worker)
        assert len(second) == 2 and not set(second) & set(first)
        clock.now += 0.5
        worker.rest()  # the new children count from their own work, not the first batch's
        assert pool_children(worker) == second
    finally:
        worker.close()
    assert store.count_inbound() == {"decided": 2}


def test_children_decide_without_the_database(base_config: config_mod.Config) -> None:
    """The decision children hold no database connection (here their config names a closed
    port, which they never try): they decide against the registry they were given, and a
    follow-up, whose ticket they cannot look up, is decided again by the parent against the
    store. A registry changed in the store reaches fresh children."""
    from mailbot.isolation import WorkerPool
    from tests.integration.test_conversation import CUSTOMER, LICENSE, REQUEST, mail

    cfg = pool_config(base_config, processes=1)
    unreachable = cfg.model_copy(update={"store": cfg.store.model_copy(
        update={"url": "postgresql+psycopg://mailbot@127.0.0.1:1/none?connect_timeout=2"})})
    store = open_store(cfg)
    store.upsert_licenses([LICENSE])
    worker = Worker(cfg, store, pool=WorkerPool(unreachable, processes=1, timeout=30,
                                                memory_mb=1024))
    try:
        save_raw(store, mail(CUSTOMER, "Nejde uložit kalendář", REQUEST), "test")
        [opened] = worker.process_many(store.claim_inbound(10))
        assert not isinstance(opened, Quarantined)
        assert opened.decision.kind.value == "ticket" and opened.ticket_number
        save_raw(store, mail(CUSTOMER, f"Re: [#{opened.ticket_number}] Nejde uložit kalendář",
                             "Posílám ještě snímek obrazovky, chyba trvá."), "test")
        [followup] = worker.process_many(store.claim_inbound(10))
        assert not isinstance(followup, Quarantined)
        assert followup.decision.kind.value == "followup"
        assert followup.ticket_number == opened.ticket_number
        # No ticket tag, only In-Reply-To naming the customer's first mail: the child's
        # decision (a new request) asked about tickets, so the parent decides it again.
        first = email.message_from_bytes(store.get_inbound(opened.inbound_id).raw)
        save_raw(store, mail(CUSTOMER, "Re: Nejde uložit kalendář", "Chyba trvá i dnes.",
                             in_reply_to=first["Message-ID"]), "test")
        [threaded] = worker.process_many(store.claim_inbound(10))
        assert not isinstance(threaded, Quarantined)
        assert threaded.decision.kind.value == "followup"
        assert threaded.ticket_number == opened.ticket_number
        store.upsert_licenses([LICENSE.__class__(**{**{f: getattr(LICENSE, f) for f in (
            "license", "customer", "email_domain", "activated_on", "tier",
            "max_version_date")}, "license": "99887766", "email_domain": "nova-firma.cz"})])
        worker.decider._registry_checked = 0.0  # the registry is re-read every few seconds
        save_raw(store, mail("jan@nova-firma.cz", "Chyba tisku", REQUEST.replace(
            "4012-7733", "9988-7766")), "test")
        [new_license] = worker.process_many(store.claim_inbound(10))
        assert not isinstance(new_license, Quarantined)
        assert new_license.decision.license == "99887766"
        assert new_license.decision.kind.value == "ticket"
    finally:
        worker.close()
    assert store.count_inbound() == {"decided": 4}


def test_store_away_in_process_is_retried_not_quarantined(
    base_config: config_mod.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without child processes: an OperationalError from the rules' store
    lookups is not the message's fault."""
    from sqlalchemy.exc import OperationalError

    from mailbot.worker import Decider

    cfg = pool_config(base_config, processes=0)
    store = open_store(cfg)
    save_raw(store, GOOD, "test")
    worker = Worker.from_config(cfg, store)
    items = store.claim_inbound(10)
    store.release_inbound([i.id for i in items])

    def gone(self: Decider, now: object) -> None:
        raise OperationalError("SELECT …", {}, Exception("server closed the connection"))

    monkeypatch.setattr(Decider, "context", gone)
    with pytest.raises(StoreUnavailableError):
        worker.process_many(items)
    assert store.count_inbound() == {"received": 1}
    with pytest.raises(StoreUnavailableError):
        worker.run_once(10)  # claims it again (nobody holds it), fails, gives it back
    [row] = store.list_inbound("received")
    assert row.lease_until is None  # due again at once, not after the lease
    monkeypatch.undo()
    assert worker.run_once(10) == 1
    assert store.count_inbound() == {"decided": 1}


def test_children_do_not_load_the_database_layer(base_config: config_mod.Config) -> None:
    """A decision process imports neither SQLAlchemy nor the store (smaller and faster to
    start; nothing in it can reach the database)."""
    from mailbot.isolation import WorkerPool

    pool = WorkerPool(pool_config(base_config, processes=1), processes=1, timeout=30,
                      memory_mb=1024)
    try:
        probe = "sorted(m for m in __import__('sys').modules if m.split('.')[0] in " \
                "('sqlalchemy', 'alembic') or m.startswith('mailbot.store'))"
        [loaded] = pool.collect(pool._submit(partial(_each, eval), [(0, (probe,))]))
        [decider] = pool.collect(pool._submit(partial(_each, eval), [(0, (
            "'mailbot.pipeline' in __import__('sys').modules",))]))
    finally:
        pool.close()
    assert decider is True  # the probe ran in an initialised decision process
    assert loaded == []


# The `mailbot` console script as pip writes it for the entry point, with a probe as its main
# code: a decision process spawned under it re-runs the script's imports as `__mp_main__`.
_SCRIPT = """\
import sys
from {module} import {attr}
if __name__ == '__main__':
    from functools import partial
    from mailbot import config
    from mailbot.isolation import WorkerPool, _each
    cfg = config.load(sys.argv[1])
    pool = WorkerPool(cfg.model_copy(update={{"worker": cfg.worker.model_copy(
        update={{"processes": 1}})}}), processes=1, timeout=30, memory_mb=1024)
    try:
        probe = ("sorted(m for m in __import__('sys').modules if m.split('.')[0] in "
                 "('click', 'rich', 'sqlalchemy') or m.startswith('mailbot.cli'))")
        [loaded] = pool.collect(pool._submit(partial(_each, eval), [(0, (probe,))]))
        [decider] = pool.collect(pool._submit(partial(_each, eval), [(0, (
            "'mailbot.pipeline' in __import__('sys').modules",))]))
    finally:
        pool.close()
    print(decider, loaded)
"""


def test_children_of_the_console_script_load_no_command_line(tmp_path: Path) -> None:
    """The daemon as systemd starts it (the installed `mailbot` script): its decision
    processes import neither the command line (click, rich, every command) nor the store,
    though "spawn" re-runs the parent's script in each of them (+4 MB a child before)."""
    from importlib.metadata import entry_points

    [script_ep] = [ep for ep in entry_points(group="console_scripts") if ep.name == "mailbot"]
    script = tmp_path / "mailbot"
    script.write_text(_SCRIPT.format(module=script_ep.module, attr=script_ep.attr),
                      encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), str(ROOT / "config" / "mailbot.toml")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True []"


def test_children_load_no_charset_detector(base_config: config_mod.Config) -> None:
    """A decision process imports charset-normalizer only for a mail whose charset must be
    guessed (none of 5,000 generated mails; 2.5 MB in each process)."""
    from mailbot.isolation import WorkerPool

    pool = WorkerPool(pool_config(base_config, processes=1), processes=1, timeout=30,
                      memory_mb=1024)
    try:
        probe = ("sorted(m for m in __import__('sys').modules "
                 "if m.split('.')[0] == 'charset_normalizer')")
        [loaded] = pool.collect(pool._submit(partial(_each, eval), [(0, (probe,))]))
    finally:
        pool.close()
    assert loaded == []


def test_children_tune_their_allocator(base_config: config_mod.Config) -> None:
    """A decision process maps large blocks apart and keeps two arenas (mailbot.memory), so
    the mail it parsed does not stay resident in freed holes."""
    from mailbot import memory
    from mailbot.isolation import WorkerPool

    if memory._glibc() is None:
        pytest.skip("glibc's malloc only")
    pool = WorkerPool(pool_config(base_config, processes=1), processes=1, timeout=30,
                      memory_mb=1024)
    try:
        [tuned] = pool.collect(pool._submit(partial(_each, eval), [(0, (
            "__import__('mailbot.memory').memory.applied",))]))
    finally:
        pool.close()
    assert tuned is True


def test_the_pools_pipes_take_a_whole_task_at_once(base_config: config_mod.Config) -> None:
    """The task and result pipes hold 1 MiB (a task of 16 mails is several hundred KiB), and
    the process feeding the pool switches threads every millisecond: a canary for the
    private attributes `_widen_pipes` reaches into, should a Python release rename them."""
    import fcntl

    from mailbot.isolation import PIPE_BYTES, SWITCH_INTERVAL, WorkerPool

    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("pipe sizes are Linux's")
    pool = WorkerPool(pool_config(base_config, processes=1), processes=1, timeout=30,
                      memory_mb=1024)
    try:
        pool.spawn()
        executor: Any = pool._executor
        pipes = (executor._call_queue._writer, executor._result_queue._reader)
        assert [fcntl.fcntl(p.fileno(), fcntl.F_GETPIPE_SZ) for p in pipes] == [PIPE_BYTES] * 2
        assert sys.getswitchinterval() <= SWITCH_INTERVAL
        [echoed] = pool.collect(pool._submit(partial(_each, len), [(0, (b"x" * 900_000,))]))
    finally:
        pool.close()
    assert echoed == 900_000


def test_children_freeze_what_their_start_up_built(base_config: config_mod.Config) -> None:
    """A decision process starts with the collector held back (mailbot.memory.starting) and,
    once given its registry, freezes what it built (imports, config, compiled rules): the
    collections while it decides walk only newer objects."""
    import gc

    from mailbot import memory
    from mailbot.isolation import WorkerPool

    pool = WorkerPool(pool_config(base_config, processes=1), processes=1, timeout=30,
                      memory_mb=1024)
    try:
        [(frozen, threshold)] = pool.collect(pool._submit(partial(_each, eval), [(0, (
            "(__import__('gc').get_freeze_count(), __import__('gc').get_threshold()[0])",))]))
    finally:
        pool.close()
    assert frozen > 20_000  # the modules, the config, the compiled rules
    assert threshold == memory.GC_THRESHOLD
    assert gc.get_freeze_count() == 0  # this process (the tests) never called `starting`


def test_a_hung_child_of_a_retired_pool_is_still_stopped(base_config: config_mod.Config) -> None:
    """A registry change retires the running children to finish their work; one hung on a
    message is still killed by a clean stop, not left behind."""
    import time

    from mailbot.isolation import WorkerPool, _processes
    from mailbot.registry import DictRegistry

    pool = WorkerPool(pool_config(base_config, processes=1), processes=1, timeout=30,
                      memory_mb=1024)
    pool.use_registry(DictRegistry({}))
    pool.collect(pool._submit(partial(_each, eval), [(0, ("1",))]))  # started and initialised
    assert pool._executor is not None
    [first] = _processes(pool._executor)
    pool._submit(partial(_each, time.sleep), [(0, (60,))])  # hangs in the first pool
    time.sleep(0.5)
    pool.use_registry(DictRegistry({}))  # a new registry: that pool is retired
    assert first.is_alive()
    pool.close(timeout=1.0)
    assert exit_code(first) is not None


def test_a_registry_change_while_the_children_start_gives_working_children(
    base_config: config_mod.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon warms its pool and the registry changes (`mailbot licenses import`) while
    those children are still starting, at several points of their start: the retired
    children finish starting and end cleanly, and the fresh ones decide. Each pool keeps its
    start barrier while its children may use it: a freed Barrier's semaphores are unlinked
    (a child still being spawned died of FileNotFoundError) and its shared memory went to
    the next pool's Barrier (the children of both could hang at start)."""
    import time

    from mailbot import isolation
    from mailbot.isolation import WorkerPool, _processes
    from mailbot.registry import DictRegistry

    monkeypatch.setattr(isolation, "_START_SECONDS", 30.0)  # a hang fails in 30 s, not 120
    pool = WorkerPool(base_config, processes=2, timeout=60, memory_mb=0)
    pool.use_registry(DictRegistry({}))
    children = []
    try:
        for delay in (0.0, 0.1, 0.2, 0.3, 0.45, 0.6):
            pool.warm()  # spawned: importing, building their pipelines
            assert pool._executor is not None
            children += _processes(pool._executor)
            time.sleep(delay)
            pool.use_registry(DictRegistry({}))  # retired before they are ready
        decided = pool.collect(pool.submit(
            [(k, GOOD.replace(b"<good@x>", b"<r%d@x>" % k)) for k in range(4)],
            datetime.now(UTC)))
    finally:
        pool.close(timeout=30)
    assert [a.decision.kind.value for a in decided] == ["reject_unknown_license"] * 4
    assert [exit_code(c) for c in children] == [0] * len(children)


def test_each_child_starts_with_its_own_start_task(base_config: config_mod.Config) -> None:
    """The config and a large registry reach the children with their start tasks (not the
    spawn pipe): every child of the pool has a pipeline with the registry and decides
    against it. (That no child takes two start tasks is the barrier's job; a child busy
    importing rarely could, so this does not show it.)"""
    from concurrent.futures import wait

    from mailbot.domain import LicenseRecord, Tier
    from mailbot.isolation import WorkerPool, _child_ping
    from mailbot.registry import DictRegistry

    records = {f"{n:08d}": LicenseRecord(f"{n:08d}", f"Firma {n}", "example.org",
                                         datetime(2025, 1, 1).date(), Tier.HOTLINE, None)
               for n in range(51880000, 51880000 + 20_000)}  # ~2 MB pickled
    records["51880264"] = LicenseRecord("51880264", "Novák & syn", "novak-syn.cz",
                                        datetime(2025, 1, 1).date(), Tier.HOTLINE, None)
    pool = WorkerPool(base_config, processes=3, timeout=60, memory_mb=0)
    pool.use_registry(DictRegistry(records))
    try:
        pool.warm()
        pool._await_start()
        executor = pool._pool()
        pings = [executor.submit(_child_ping) for _ in range(30)]
        wait(pings, timeout=60)
        assert all(p.result() for p in pings)
        decided = pool.collect(pool.submit([(k, GOOD.replace(b"<good@x>", b"<g%d@x>" % k))
                                            for k in range(12)], datetime.now(UTC)))
        assert {a.decision.license for a in decided} == {"51880264"}
        assert {a.decision.kind.value for a in decided} == {"ticket"}
    finally:
        pool.close()


def test_a_childs_decision_stands_where_the_store_knows_no_ticket_asked_about(
    base_config: config_mod.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child asked about a ticket tag the store does not know either: its decision (and its
    reasons) is the one written, the parent does not decide the mail again."""
    import mailbot.worker
    from mailbot.isolation import WorkerPool

    cfg = pool_config(base_config, processes=1)
    store = open_store(cfg)
    save_raw(store, GOOD.replace(b"Subject: Tisk", b"Subject: Re: [#T-2026-999999] Tisk"),
             "test")

    def no_second_decision(*args: object) -> None:
        raise AssertionError("decided again in the parent")

    monkeypatch.setattr(mailbot.worker, "decide", no_second_decision)
    worker = Worker(cfg, store, pool=WorkerPool(cfg, processes=1, timeout=30, memory_mb=1024))
    try:
        prepared = worker.prepare(worker.start(store.claim_inbound(10)))
        [analysis] = prepared.analyses  # the child's: a second decision here would fail
        [result] = worker.commit(prepared)
    finally:
        worker.close()
    assert analysis.provisional
    assert ("exists", "T-2026-999999") in analysis.questions
    assert not isinstance(result, Quarantined)
    assert result.decision == analysis.decision
    assert store.count_inbound() == {"decided": 1}


def test_children_end_cleanly_after_a_close(base_config: config_mod.Config) -> None:
    """A stopped decision process ends with exit code 0 (it leaves without the interpreter's
    teardown, `_exit_without_teardown`, after its results are sent): a close is no crash."""
    from mailbot.isolation import WorkerPool, _processes

    pool = WorkerPool(pool_config(base_config), processes=2, timeout=30, memory_mb=1024)
    pool.use_token_secret(b"secret")
    [analysis] = pool.collect(pool.submit([(1, GOOD)], datetime.now(UTC)))
    assert analysis.decision is not None
    assert pool._executor is not None
    children = _processes(pool._executor)
    assert len(children) == 2
    pool.close()
    assert [exit_code(child) for child in children] == [0, 0]
