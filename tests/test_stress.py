"""Multi-threaded stress, fork and thread churn: each C program runs linked to the prefixed
library and again under LD_PRELOAD of the override library (never loaded into pytest itself)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, compile_c, preload_env

C = REPO / "tests" / "c"


@pytest.fixture(scope="session")
def plain_programs(tmp_path_factory):
    out = tmp_path_factory.mktemp("cprog")
    return {name: compile_c(C / f"{name}.c", out / name)
            for name in ("stress", "forktest", "churn", "orphan", "purger", "purge_unlocked",
                         "large_unmap", "large_churn", "dlclose", "large_memory", "key_dtor",
                         "aligned_pool", "key_late", "owner_token", "token_race", "oom_release", "fork_purger",
                         "remote_idle", "ns_single", "large_hole", "pexit", "one_thread")} | {
        # the same with 256 KiB of __thread data, which glibc puts on every thread's stack
        "purger_tls": compile_c(C / "purger.c", out / "purger_tls", defines=["PURGER_TLS_KIB=256"])}


def prefixed_program(name, built, tmp_path) -> Path:
    return compile_c(C / f"{name}.c", tmp_path / f"{name}_{built.name}", prefix_lib=built.prefixed,
                     prefix=f"hz_{built.name}_")


def needs_threads(model):
    if not model.threads:
        pytest.skip("single-threaded spec (threads: false) is documented as not thread-safe")


def run(cmd, env=None, timeout=240):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, f"{cmd[0]} exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


def test_stress_linked_to_prefixed_library(built, model, tmp_path):
    needs_threads(model)
    exe = prefixed_program("stress", built, tmp_path)
    assert "stress ok: threads=16" in run([exe, 16, 6, 15000])


def test_dlclose_leaves_the_library_mapped(built, model, plain_programs):
    """A program that dlopens the library, uses it from two threads (starting the purger where
    the spec has one), dlcloses it and goes on: the library stays (-z nodelete); before, the
    purger's next wake-up or the thread's exit ran unmapped code (SIGSEGV)."""
    needs_threads(model)
    out = run([plain_programs["dlclose"], built.prefixed, f"hz_{built.name}_"])
    assert out == "dlclose ok\n"


def test_stress_under_preload(built, model, plain_programs):
    needs_threads(model)
    assert "stress ok: threads=16" in run([plain_programs["stress"], 16, 6, 15000],
                                          env=preload_env(built))


def test_single_thread_spec_runs_single_threaded_stress(built, model, plain_programs):
    if model.threads:
        pytest.skip("covered by the threaded stress")
    assert "stress ok: threads=0" in run([plain_programs["stress"], 0, 3, 20000], env=preload_env(built))


def test_fork_from_threaded_parent(built, model, plain_programs):
    needs_threads(model)
    assert "fork ok: children=50" in run([plain_programs["forktest"], 50], env=preload_env(built))


@pytest.fixture(scope="session")
def atfork_alloc(tmp_path_factory):
    """pthread_atfork handlers that allocate, registered before the allocator's."""
    return shim(tmp_path_factory, "atfork_alloc")


def test_fork_handlers_of_earlier_libraries_may_allocate(built, model, plain_programs,
                                                         atfork_alloc):
    """A library initialised before the allocator registers pthread_atfork handlers that
    allocate and free (new slab, aligned pool, large block and cache): they run while the
    allocator's prepare handler holds its locks, and must not wait for them (before: the first
    fork hung, as forktest's alarm shows; glibc allows it)."""
    needs_threads(model)
    env = shim_initialised_first(built, atfork_alloc)
    assert "fork ok: children=50" in run([plain_programs["forktest"], 50], env=env)


def test_an_allocating_atfork_child_handler_starts_no_second_purger(built, model, plain_programs,
                                                                    atfork_alloc):
    """A fork while the purger is wanted but not started, and another library's child handler
    allocates inside the fork window: the child ends up with one purger (before: that handler
    started one, the allocator's child handler took it for one that did not come along and the
    next miss started a second; the two shared the purger's round and crashed the child)."""
    env = shim_initialised_first(built, atfork_alloc, HZ_ATFORK_ALLOC="child")
    want = 2 if model.backing["purge_thread"] else 1
    assert run([plain_programs["fork_purger"]], env=env) == f"fork_purger: threads={want}\n"


def test_thread_churn_keeps_rss_bounded(built, model, plain_programs):
    """2000 short-lived threads: caches are flushed and heaps adopted, so RSS stays flat."""
    needs_threads(model)
    warm, end = churn_rss(run([plain_programs["churn"], 2000], env=preload_env(built)))
    assert end <= warm + 16 * 1024, (warm, end)     # growth bounded by 16 MiB over the warm-up
    assert end < 64 * 1024, end


def churn_rss(out):
    m = re.search(r"churn ok: threads=2000 rss_warm_kb=(\d+) rss_end_kb=(\d+)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="session")
def key_hog(tmp_path_factory):
    """Takes every pthread key in its constructor."""
    return shim(tmp_path_factory, "key_hog")


def shim_initialised_first(built, shim_lib, **env_extra):
    """The environment that preloads the allocator, then shim_lib: ld.so initializes the later
    one first, as it does a library the program links against."""
    env = preload_env(built, **env_extra)
    env["LD_PRELOAD"] = f"{built.override} {shim_lib}"
    return env


def behind_key_hog(built, key_hog):
    """key_hog initialised first: no key is left for the allocator's constructor."""
    return shim_initialised_first(built, key_hog)


def test_thread_churn_without_a_free_pthread_key(built, model, plain_programs, key_hog):
    """Every pthread key taken before the allocator's constructor and first allocation (a shim
    initialized first): the heaps of exited threads still come back, through glibc's
    per-thread destructor list (before: 2000 threads left 660 MiB resident)."""
    needs_threads(model)
    env = behind_key_hog(built, key_hog)
    r = subprocess.run([str(plain_programs["churn"]), "2000"], capture_output=True, text=True,
                       env=env, timeout=240)
    assert r.returncode == 0 and "every pthread key taken" in r.stderr, r.stderr[-2000:]
    warm, end = churn_rss(r.stdout)
    assert end <= warm + 16 * 1024, (warm, end)
    assert end < 64 * 1024, end


@pytest.mark.parametrize("hog", [False, True], ids=["keys", "no-key"])
def test_key_destructors_that_allocate_after_the_exit_hook(built, model, plain_programs,
                                                          key_hog, hog):
    """1000 threads whose pthread key destructor allocates after the allocator's exit hook ran
    (glibc runs its destructor list, the fallback's hook, before key destructors): the heap
    such a destructor takes is only lent and comes back (before, behind key_hog: one heap per
    thread stayed live, 118 MiB resident)."""
    needs_threads(model)
    env = behind_key_hog(built, key_hog) if hog else preload_env(built)
    out = run([plain_programs["key_dtor"], 1000], env=env)
    m = re.match(r"key_dtor: runs=1000 rss_start_kb=(\d+) rss_end_kb=(\d+)\n$", out)
    assert m, out
    assert int(m.group(2)) < int(m.group(1)) + 16 * 1024, out


@pytest.mark.parametrize("quiet", [False, True], ids=["busy", "quiet"])
def test_heaps_of_threads_that_first_allocate_in_the_last_destructor_round(built, model,
                                                                         plain_programs, quiet):
    """4000 threads whose first allocation happens in the last round of pthread key destructors
    (ours is set too late for glibc to run it): each dies holding its heap's owner token, the
    kernel marks it (robust futex list) and the heap comes back: through main's slow paths, or,
    with nothing else allocating (quiet), when the next thread would map a new heap (before: a
    heap per thread, 330 MiB mapped and 83 MiB resident; now about 8 and 2.4; glibc: 74 MiB
    mapped, 2 MiB resident)."""
    needs_threads(model)
    out = run([plain_programs["key_late"], 4000] + (["quiet"] if quiet else []), env=preload_env(built))
    m = re.match(r"key_late: threads=4000 mapped_kb=(-?\d+) rss_kb=(\d+)\n$", out)
    assert m, out
    assert int(m.group(1)) < 64 * 1024 and int(m.group(2)) < 24 * 1024, out


@pytest.mark.parametrize("mode", ["_Fork", "clone", "vfork"])
def test_owner_tokens_in_children_the_fork_handler_does_not_see(built, model, plain_programs,
                                                                mode):
    """In a child of _Fork() or of a raw clone(SIGCHLD) (no atfork handler runs) the main
    thread's heap keeps a token held under the parent's thread id while new threads of the
    child try tokens; vfork children allocate on their parent's heap while its threads try
    tokens: no heap is taken from a live thread (the withdrawn tid scan failed the first two:
    main's blocks were overwritten, the checked spec aborted)."""
    needs_threads(model)
    want = {"_Fork": "_Fork: child=0\n", "clone": "clone: child=0\n", "vfork": "vfork: ok=1\n"}
    assert run([plain_programs["owner_token"], mode], env=preload_env(built)) == want[mode]


@pytest.fixture(scope="session")
def trylock_delay(tmp_path_factory):
    """Holds the first try of a kernel-marked owner token for 300 ms."""
    return shim(tmp_path_factory, "trylock_delay")


def test_two_scans_of_one_dead_heap(built, model, plain_programs, trylock_delay):
    """Two dead-owner scans meet on one heap: the one held up between seeing the kernel's mark
    and trying the token must not come back holding the token of a heap the other already gave
    back (the next adopter re-made that token while it sat on the scanner's robust list, which
    cut the adopter's own list: the program's robust mutex it died holding was never marked)."""
    needs_threads(model)
    out = run_behind(trylock_delay, built, plain_programs["token_race"])
    assert out == "token_race: delayed=1 owner_died=1\n", out


@pytest.mark.parametrize("mode", ["dead", "idle"])
def test_memory_held_for_other_threads_comes_back(built, model, plain_programs, mode):
    """Remote frees into a dead thread's heap, and batches an idle thread holds for others,
    are returned by malloc_trim (and by live threads' slow paths) - not stranded."""
    needs_threads(model)
    out = run([plain_programs["orphan"], mode], env=preload_env(built))
    m = re.search(rf"orphan {mode}: rss_peak_kb=(\d+) rss_after_kb=(\d+)", out)
    assert m, out
    peak, after = int(m.group(1)), int(m.group(2))
    assert after <= peak // 4, (peak, after)


@pytest.mark.parametrize("mode", ["exited", "sleeping"])
def test_remote_frees_into_an_idle_heap_come_back(built, model, plain_programs, mode):
    """96 MiB of 3000 B blocks made by a thread that then exits (or sleeps, alive), freed by
    main, then 3 s with no allocator call: with remote_free.collect_idle_ms the purger gives the
    owner's inbox to its slabs and the memory goes back (before: all of it stayed in the inbox
    until the owner's next slow paths; for an exited thread, until another thread's slow paths
    reclaimed its heap). The sleeping worker then allocates and checks 96 MiB again on the heap
    the collector went through."""
    needs_threads(model)
    out = run([plain_programs["remote_idle"], mode], env=preload_env(built))
    m = re.search(rf"remote_idle {mode}: rss_peak_kb=(\d+) rss_at_free_kb=(\d+) rss_after_kb=(\d+) "
                  r"after_ms=(-?\d+)", out)
    assert m, out
    peak, _at_free, after, _ms = (int(x) for x in m.groups())
    assert peak > 90 * 1024, out
    if model.collect_on:
        assert after <= peak // 4, out


def test_fork_while_the_collector_holds_blocks(built, model, plain_programs):
    """4M blocks freed into an exited thread's heap, then a fork every 2 ms while the idle-heap
    collector gives them back in shares (it lets a fork in between two): every child gets the
    blocks the collector held at its fork back in the inbox, so its malloc_trim returns them (a
    child that lost them kept up to 60 MiB)."""
    needs_threads(model)
    out = run([plain_programs["remote_idle"], "fork"], env=preload_env(built))
    m = re.search(r"remote_idle fork: forks=(\d+) bad=(\d+)", out)
    assert m and int(m.group(1)) > 5 and m.group(2) == "0", out


PURGER_REPORT = re.compile(r"purger \d+: rss_peak_kb=(\d+) rss_at_free_kb=(\d+) rss_after_kb=(\d+) "
                           r"tasks=(\d+) sigblk=([0-9a-f]+)")


def shim(tmp_path_factory, name):
    """tests/c/NAME.c as a preload shim (loaded in front of the allocator)."""
    out = tmp_path_factory.mktemp(name) / f"{name}.so"
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-fPIC", "-shared", "-Wall", "-Wextra",
                    "-Werror", "-o", str(out), str(C / f"{name}.c"), "-ldl"], check=True)
    return out


def run_behind(shim_lib, built, exe, *args, **env_extra):
    """Run exe under LD_PRELOAD of shim_lib in front of the spec's override library."""
    env = preload_env(built, **env_extra)
    env["LD_PRELOAD"] = f"{shim_lib} {built.override}"
    return run([exe, *args], env=env)


@pytest.fixture(scope="session")
def create_guard(tmp_path_factory):
    """Aborts on pthread_create inside free()."""
    return shim(tmp_path_factory, "create_guard")


@pytest.fixture(scope="session")
def madvise_spy(tmp_path_factory):
    """Makes the purger's madvise calls last 300 ms and says when one is in progress."""
    return shim(tmp_path_factory, "madvise_spy")


def purger_reports(out):
    reports = [tuple(int(x) for x in r[:4]) + (int(r[4], 16),) for r in PURGER_REPORT.findall(out)]
    assert len(reports) == 2, out            # the parent, then the forked child
    return reports


def test_purger_returns_memory_while_the_program_sleeps(built, model, plain_programs, create_guard):
    """96 MiB freed, then 1.5 s without an allocator call, in a parent and in a forked child.
    With backing.purge_thread the frees leave the memory dirty (no madvise on the free path) and
    the purger returns it; its thread blocks every signal and is never started from inside free
    (the guard shim aborts if it is). Without it, no thread is added."""
    out = run_behind(create_guard, built, plain_programs["purger"], "fork")
    for peak, at_free, after, tasks, sigblk in purger_reports(out):
        assert peak > 90 * 1024, out
        if model.backing["purge_thread"]:
            assert at_free > peak // 2, out      # deferred: the frees did not purge
            assert after <= peak // 4, out       # ... and the purger did, on time
            assert tasks == 2, out               # main + purger (restarted in the child)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD, signal.SIGALRM):
                assert sigblk >> (sig - 1) & 1, (sig, hex(sigblk))
        else:
            assert tasks == 1, out


def test_purger_starts_in_a_program_with_large_static_tls(built, model, plain_programs, create_guard):
    """The same with 256 KiB of __thread data: glibc refuses (EINVAL) a thread stack the static
    TLS does not fit in, and the purger's 64 KiB stack was refused, so it never started and the
    frees purged inline (up to max_dirty left resident for good, tasks=1); now it retries with
    the default stack size."""
    out = run_behind(create_guard, built, plain_programs["purger_tls"], "fork")
    for peak, at_free, after, tasks, _sigblk in purger_reports(out):
        assert peak > 90 * 1024, out
        if model.backing["purge_thread"]:
            assert at_free > peak // 2, out      # deferred to the purger ...
            assert after <= peak // 4, out       # ... which ran
            assert tasks == 2, out
        else:
            assert tasks == 1, out


def test_a_single_threaded_spec_refuses_a_second_thread(built, model, plain_programs):
    """threads: false has one unlocked heap: pthread_create fails with EAGAIN and says why,
    once (before: the threads shared the heap; crashes and a corrupt git pack in a sweep)."""
    r = subprocess.run([str(plain_programs["one_thread"])], capture_output=True, text=True,
                       env=preload_env(built), timeout=60)
    assert r.returncode == 0, r.stderr
    if model.threads:
        assert (r.stdout, r.stderr) == ("one_thread: rc=0,0 thrd=0\n", "")
    else:
        assert r.stdout == "one_thread: rc=11,11 thrd=3\n"     # EAGAIN, thrd_nomem
        assert r.stderr == (f"hz[{model.name}]: pthread_create refused (EAGAIN): this allocator "
                            "is single-threaded (spec threads: false); preload a threaded spec "
                            "into a threaded program\n")


@pytest.mark.parametrize("order", ["first", "last"])
def test_a_main_that_ends_by_pthread_exit_ends_the_process(built, model, plain_programs, order):
    """main calls pthread_exit before (first) or after (last) its worker thread ends: the
    process ends with its last thread, the purger's thread does not keep it alive (before: it
    ran on for good, in a sleep no SIGTERM could end; a real-program sweep's find)."""
    needs_threads(model)
    env = preload_env(built)
    r = subprocess.run([str(plain_programs["pexit"]), order], capture_output=True, text=True,
                       env=env, timeout=60)   # (a hang: TimeoutExpired, the child SIGKILLed)
    assert r.returncode == 0, r.stderr
    purger = 1 if model.backing["purge_thread"] else 0
    assert r.stdout == f"pexit: threads={(2 if order == 'first' else 1) + purger}\n", r.stdout


def test_the_purger_serves_a_last_thread_without_a_heap(built, model, plain_programs):
    """main allocates 96 MiB and ends by pthread_exit; a thread that never allocates frees it
    all: the purger stays while that thread runs and returns the memory, then leaves with it
    (a first version dismissed the purger at main's exit: 200 MB stayed resident)."""
    needs_threads(model)
    r = subprocess.run([str(plain_programs["pexit"]), "freer"], capture_output=True, text=True,
                       env=preload_env(built), timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(r"pexit freer: rss_before_kb=(\d+) rss_after_kb=(\d+)", r.stdout)
    assert m, r.stdout
    before, after = int(m.group(1)), int(m.group(2))
    assert before > 36 * 1024, r.stdout      # (a page of each block touched)
    if model.backing["purge_thread"]:
        assert after <= before // 4, r.stdout


def test_purger_returns_cached_large_blocks(built, model, plain_programs, create_guard):
    """30 MiB of large blocks freed into the large cache, then 1.5 s without an allocator
    call, in a parent and in a forked child: with the purger, cached mappings go back delay_ms
    after they were freed (without it the cache keeps up to max_cached for good)."""
    if not (model.backing["purge_thread"] and model.large["release"] == "cache"):
        pytest.skip("spec has no purge thread or no large cache")
    out = run_behind(create_guard, built, plain_programs["purger"], "large", "fork")
    block_kb = 2560
    kept_kb = min(12, model.large["cache_entries"], model.large["max_cached"] // (block_kb << 10)) * block_kb
    for peak, at_free, after, tasks, _sigblk in purger_reports(out):
        assert peak > 12 * block_kb, out
        assert at_free - after >= kept_kb // 2, out   # the cache had kept them, the purger did not
        assert after <= peak // 4, out
        assert tasks == 2, out


def test_a_single_threaded_program_still_enters_namespaces(built, model, plain_programs):
    """setns() into a mount namespace and unshare(CLONE_NEWUSER) need a process of one thread:
    a single-threaded program whose allocations started the purger still gets them (it leaves
    for the call, returning what it would have returned later, and comes back on the next
    allocation miss). Before, both failed with EINVAL under the allocator (bwrap, unshare(1)
    and sandboxes do this); a child of _Fork(), which inherits the purger's state but not its
    thread, must not wait for it (a first version hung there), and the memory the program freed
    must not stay resident once the purger is gone (a first version kept 200 MiB)."""
    exe = plain_programs["ns_single"]
    plain = run([exe])
    if re.search(r"fork_child=(\S+) setns=(\S+) unshare=(\S+)", plain).groups() != ("0", "0", "0"):
        pytest.skip(f"refused even under glibc here (no privilege?): {plain}")
    out = run([exe], env=preload_env(built))
    m = re.search(r"threads_before=(\d+) fork_child=(\S+) setns=(\S+) unshare=(\S+) "
                  r"rss_peak_kb=(\d+) rss_after_kb=(\d+) threads_after=(\d+)", out)
    assert m, out
    before, child, setns, unshare, peak, after, threads_after = m.groups()
    assert (child, setns, unshare) == ("0", "0", "0"), out
    if model.backing["purge_thread"]:
        assert (before, threads_after) == ("2", "2"), out   # the purger ran before, and after
        assert int(after) <= int(peak) // 4, out


def test_purge_thread_opt_out(built, model, plain_programs):
    """HZ_PURGE_THREAD=0: no thread of ours, and memory still goes back (inline, on frees)."""
    if not model.backing["purge_thread"]:
        pytest.skip("spec has no purge thread")
    out = run([plain_programs["purger"], "fork"], env=preload_env(built, HZ_PURGE_THREAD="0"))
    for peak, _at_free, after, tasks, _sigblk in purger_reports(out):
        assert tasks == 1, out
        assert after <= peak // 4, out


def purge_unlocked_report(out):
    """(during, spied, child) from tests/c/purge_unlocked.c's line"""
    m = re.search(r"purge_unlocked: during=(\d+) spied=(\d+) child=(-?\d+)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_allocations_go_on_while_the_purger_purges(built, model, plain_programs, madvise_spy):
    """The purger gives pages back with the segment lock released: while it sits in a (slowed)
    madvise, the main thread keeps allocating, including new slabs (with the lock held, at most
    one slab's worth of 1000 B blocks would get through), and a child forked meanwhile, whose
    allocator inherits a round nobody will finish, allocates and frees 384 MiB twice."""
    if not model.backing["purge_thread"]:
        pytest.skip("spec has no purge thread")
    out = run_behind(madvise_spy, built, plain_programs["purge_unlocked"])
    during, spied, child = purge_unlocked_report(out)
    assert spied >= 1, out                 # the purger did purge while we allocated
    assert during >= 1000, out
    assert child == 0, out                 # forked mid-purge: the child's allocator works


def test_allocations_go_on_while_a_free_returns_a_slab(built, model, plain_programs, madvise_spy):
    """backing.release: immediate gives an empty slab's pages back on the freeing thread, with
    the segment lock released: while a thread sits in a (slowed) madvise of a slab it freed,
    the main thread keeps allocating, new slabs included (with the lock held across the call,
    at most a slab's worth of 1000 B blocks would get through per call)."""
    if model.backing["release"] != "immediate":
        pytest.skip("spec does not return empty slabs at once")
    out = run_behind(madvise_spy, built, plain_programs["purge_unlocked"], "thread",
                     HZ_SPY_MIN_LEN=str(16384))
    during, spied, child = purge_unlocked_report(out)
    assert spied >= 1, out                 # the freeing thread did madvise while we allocated
    assert during >= 1000, out
    assert child == 0, out


def test_large_cache_evictions_are_unmapped_by_the_purger(built, model, plain_programs,
                                                          madvise_spy):
    """Once the purger runs, large mappings the cache evicts are unmapped on its thread, not on
    the one that frees them (munmap of touched pages costs the freeing thread milliseconds)."""
    if not (model.backing["purge_thread"] and model.large["release"] == "cache"):
        pytest.skip("spec has no purge thread or no large cache")
    out = run_behind(madvise_spy, built, plain_programs["large_unmap"])
    m = re.search(r"large_unmap: main=(\d+) other=(\d+)", out)
    assert m, out
    assert int(m.group(1)) == 0 and int(m.group(2)) >= 1, out


def test_handed_over_mappings_do_not_pile_up(built, model, plain_programs):
    """A 40 MiB block allocated, touched and freed 40 times while the purger naps on a timer:
    every free wakes it (or, past 64 MiB waiting, unmaps in place), so RSS stays near two blocks
    plus the heap (a purger that slept through its nap let it reach 430 MiB)."""
    out = run([plain_programs["large_churn"]], env=preload_env(built))
    m = re.search(r"large_churn: peak_rss_kb=(\d+)", out)
    assert m, out
    assert int(m.group(1)) < 250 * 1024, out


def large_memory(plain_programs, built, mode, **env):
    """tests/c/large_memory.c's report for `mode` as a dict of its numbers"""
    out = run([plain_programs["large_memory"], mode], env=preload_env(built, **env))
    m = re.match(rf"{mode}:((?: \w+=\d+)+)\n$", out)
    assert m, out
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def test_realloc_shrinking_a_large_block_returns_its_pages(built, plain_programs):
    """16 blocks of 8 MiB shrunk to 300000 B: their tails go back (before: 8 MiB each stayed
    resident until the free, 132 MiB against glibc's 6 MiB)."""
    r = large_memory(plain_programs, built, "shrink")
    assert r["usable_kb"] >= 16 * 300000 // 1024
    assert r["rss_kb"] < r["usable_kb"] + 8192, r


def test_malloc_trim_returns_the_large_cache(built, plain_programs):
    """15 MiB of freed large blocks, then malloc_trim(0): they go back (before: the cache kept
    them, and trim said 1 all the same)."""
    r = large_memory(plain_programs, built, "trim")
    assert r["after_kb"] < 8192, r
    assert r["ret"] in (0, 1)


def test_cached_large_blocks_go_back_without_the_purger(built, model, plain_programs):
    """No purger running (none in the spec, or HZ_PURGE_THREAD=0, or too little cached to ask
    for one): slow paths return cached large mappings delay_ms after their free, as they do
    dirty slabs (before: the cache kept up to max_cached for good)."""
    if not (model.large["release"] == "cache" and model.backing["release"] == "delayed"):
        pytest.skip("no large cache, or no delayed release")
    for env in ({}, {"HZ_PURGE_THREAD": "0"}):
        r = large_memory(plain_programs, built, "idle", **env)
        assert r["at_free_kb"] - r["after_kb"] > 10 * 1024, (env, r)


def test_cycled_large_buffers_keep_their_pages(built, model, plain_programs):
    """Two 20 MiB buffers written whole and a 64 MiB one, made and freed 12 times (liblzma's
    encoder in a loop; 40 MiB is over max_cached): with peak_share the cache keeps them while
    the purger runs, and the last 8 rounds fault in next to nothing (before: 41k faults, both
    20 MiB blocks in every round; Python's test_lzma took 3x glibc's time)."""
    if not (model.large.get("peak_share") and model.backing["purge_thread"]):
        pytest.skip("spec has no large.peak_share, or no purger")
    r = large_memory(plain_programs, built, "cycle")
    assert r["faults"] < 5120, r        # less than one 20 MiB block's pages in 8 rounds


def test_calloc_of_a_reused_large_block_reads_zero_without_faulting_it_in(built, plain_programs):
    """A cached block counts as touched whole; a calloc that reuses a big one gives its whole
    pages back (they fault in zeroed) instead of writing zeros through them (before: the cached
    24 MiB block, written at a few places, was written through: 26 MiB more RSS)."""
    r = large_memory(plain_programs, built, "calloc_reuse")
    assert r["zero"] == 1, r
    assert r["grew_kb"] < 8 * 1024, r


def test_a_request_past_ram_and_swap_fails_as_under_glibc(built, plain_programs):
    """64 TiB: the kernel's overcommit heuristic refuses it, and malloc/calloc return NULL with
    ENOMEM (before: MAP_NORESERVE skipped the check, the block was handed out, and a program
    that used it ran the machine into the OOM killer instead of getting a MemoryError)."""
    mode = Path("/proc/sys/vm/overcommit_memory")
    if not mode.exists() or mode.read_text().strip() != "0":
        pytest.skip("the kernel does not use its overcommit heuristic (vm.overcommit_memory)")
    assert large_memory(plain_programs, built, "overcommit") == {"malloc": 0, "calloc": 0,
                                                                 "enomem": 1}


def test_calloc_filled_in_a_loop_keeps_its_pages(built, model, plain_programs):
    """calloc(8 MiB), written whole, freed, 12 times: the reused block's resident pages are
    cleared, not dropped (dropping every page of it faulted each round's 2048 pages in again:
    15..20x slower)."""
    if model.large["release"] != "cache":
        pytest.skip("no large cache: every calloc of 8 MiB is a fresh mapping (as glibc's)")
    r = large_memory(plain_programs, built, "calloc_cycle")
    assert r["zero"] == 1, r
    assert r["faults"] < 2048, r           # less than one block's pages in 8 rounds


def test_successful_realloc_leaves_errno_alone(built, plain_programs):
    """A large block grown past its reservation moves when the in-place mremap fails: that
    failure's ENOMEM must not stay in errno (14 of 16 successful reallocs left it before)."""
    assert large_memory(plain_programs, built, "errno") == {"grown": 16, "dirty": 0}


def test_zero_bytes_with_a_large_alignment_is_a_real_block(built, plain_programs):
    r = large_memory(plain_programs, built, "zero_align")
    assert len(r) == 7 and all(usable >= 1 for usable in r.values()), r


def wild_free(cmd, env, model, message, clean):
    """cmd makes a wild free: a spec with checks aborts naming it (message), the others drop it
    and cmd prints `clean`"""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=60)
    if model.checks["invalid_free"]:
        assert r.returncode != 0 and message in r.stderr, (r.stdout, r.stderr)
    else:
        assert r.returncode == 0 and r.stdout == clean, (r.stdout, r.stderr)


def test_a_pointer_into_a_large_block_is_never_handed_to_glibc(built, model, plain_programs):
    """free() of a pointer 5 MiB into a live 16 MiB block: every granule of a large block is in
    the registry, so it is an invalid free of ours (dropped, or the checked spec's abort naming
    it), not a foreign pointer (before: glibc's free got it and aborted, or unmapped part of
    the live block when the bytes in front looked like one of its chunk headers)."""
    wild_free([plain_programs["large_memory"], "interior"], preload_env(built), model,
              "free of a pointer inside a large block", "interior: usable=0 intact=1\n")


def test_aligned_pool_under_threads(built, model, plain_programs):
    """4 threads allocate, stamp, check and free blocks aligned to 512 KiB .. 16 MiB (the
    aligned pool) with malloc_trim between: no block overlaps another, and the 96 live blocks
    hold fewer mappings than blocks (a mapping each before: 96 more)."""
    needs_threads(model)
    out = run([plain_programs["aligned_pool"], "threads"], env=preload_env(built))
    m = re.fullmatch(r"threads: blocks=(\d+) maps=(\d+)\n", out)
    assert m, out
    assert int(m.group(2)) < int(m.group(1)), out


def test_aligned_pool_double_free_while_the_first_free_purges(built, model, plain_programs,
                                                               madvise_spy):
    """A free past the pool's budget of kept pages gives the slot's pages back with the lock
    released; the slot is no longer live meanwhile, so a second free of the block in that
    window is a wild free (checked: an abort naming it; before, it was taken as valid, could
    hand the slot out twice and left the budget's count too high for good)."""
    needs_threads(model)
    env = preload_env(built, HZ_SPY_MIN_LEN=str(65536))
    env["LD_PRELOAD"] = f"{madvise_spy} {built.override}"
    wild_free([plain_programs["aligned_pool"], "race"], env, model, "not a live aligned block",
              "race: spied=1 distinct=1\n")


def test_aligned_pool_falls_back_when_a_region_cannot_be_mapped(built, plain_programs):
    """With the address space limited to 48 MiB above what is mapped, a block aligned to 16 MiB
    still comes (a mapping of its own from the large box) when its pool region (64 MiB, 128
    while it is aligned) cannot be mapped (before: ENOMEM where the old path succeeded)."""
    assert run([plain_programs["aligned_pool"], "rlimit"], env=preload_env(built)) == "rlimit: ok=1\n"


def test_large_blocks_take_the_address_space_they_need(built, model, plain_programs):
    """Under an address-space limit of 256 MiB, blocks of 1 MiB and 300 KiB fill most of it: a
    large block maps its pages, not whole segments (before: 4 MiB each, 64 blocks holding 42 MiB
    fitted; glibc fits 254 MiB)."""
    out = run([plain_programs["large_hole"], "count", model.segment], env=preload_env(built))
    m = re.fullmatch(r"count: blocks=(\d+) mib=(\d+)\n", out)
    assert m, out
    assert int(m.group(2)) >= 200, out


def test_foreign_mapping_beside_a_large_block_stays_foreign(built, model, plain_programs):
    """A mapping in the unused end of a large block's registry granule is not the block's: a
    glibc-style mmapped chunk there is passed to glibc's malloc_usable_size and free (which
    unmaps it), and the block keeps its data."""
    if model.checks["foreign_free"] != "passthrough":
        pytest.skip("foreign pointers are dropped or fail fast in this spec")
    out = run([plain_programs["large_hole"], "foreign", model.segment], env=preload_env(built))
    assert out == f"foreign: usable={64 * 1024 - 16} unmapped=1\n"


def test_foreign_pointer_beside_a_large_block_while_the_block_churns(built, model, plain_programs):
    """The foreign pointer beside a large block stays foreign while another thread frees and
    allocates that block over and over: the registry alone tells (a version that read the
    block's header for it answered malloc_usable_size with 0 about 1800 times in 2 s, dropped
    frees, and could crash on a header just unmapped)."""
    if model.checks["foreign_free"] != "passthrough":
        pytest.skip("foreign pointers are dropped or fail fast in this spec")
    needs_threads(model)
    out = run([plain_programs["large_hole"], "race", model.segment], env=preload_env(built))
    assert out == "race: wrong=0 unmapped=1\n"


def test_a_cached_large_block_grows_in_place_for_a_larger_request(built, model, plain_programs):
    """2000 rounds of malloc(1 MiB + i KiB), touch, free: the cached block, too small by a
    little each time, grows in place instead of a new mapping (before: a new mapping and its
    page faults in 500 of the rounds)."""
    if model.large["release"] != "cache":
        pytest.skip("no large cache: every large block is a fresh mapping (as glibc's)")
    out = run([plain_programs["large_hole"], "regrow", model.segment], env=preload_env(built))
    m = re.fullmatch(r"regrow: moved=(\d+)\n", out)
    assert m, out
    assert int(m.group(1)) <= 20, out


def test_a_cached_block_that_cannot_grow_still_ages(built, model, plain_programs):
    """A cached block that cannot grow in place for larger requests keeps its age: with a live
    malloc(2 MiB) every 100 ms for 1.5 s, it still goes back to the OS delay_ms after its free
    (before: each failed attempt put it back in the cache as new, so it never went)."""
    if model.large["release"] != "cache" or model.backing["release"] != "delayed":
        pytest.skip("no large cache that returns its mappings after delay_ms")
    out = run([plain_programs["large_hole"], "stale", model.segment], env=preload_env(built))
    assert out == "stale: unmapped=1\n"


def test_large_block_grows_by_what_it_needs_when_twice_does_not_fit(built, model, plain_programs):
    """realloc of a large block under a tight address-space limit, with another mapping 1.75 MiB
    from the block's start: doubling the reservation fits neither in place nor elsewhere, so the
    block grows in place by what it needs (glibc's mremap would too) and keeps its data."""
    out = run([plain_programs["large_hole"], "grow", model.segment], env=preload_env(built))
    assert out == "grow: moved=0 kept=1\n"


@pytest.mark.parametrize("mode", ["cache", "pool", "slab"])
def test_memory_held_for_reuse_goes_back_before_an_allocation_fails(built, plain_programs, mode):
    """Under an address-space limit, an allocation the kernel refuses a mapping for first gets
    back what the allocator holds for reuse (a freed 30 MiB block in the large cache, an empty
    16 MiB-aligned pool region; a new segment for small blocks too) and tries again, leaving
    errno as it was when that succeeds (before: ENOMEM where glibc succeeds, and malloc_trim
    first made it work)."""
    assert run([plain_programs["oom_release"], mode], env=preload_env(built)) == f"{mode}: ok=1\n"


def test_mappings_handed_to_the_purger_do_not_make_allocations_fail(built, model, plain_programs):
    """A freed large mapping the purger has not unmapped yet is unmapped by an allocation that
    is refused for want of address space (before: 37..48 of 50 allocations of 40 MiB failed with
    80 MiB of headroom)."""
    out = run([plain_programs["oom_release"], "doomed"], env=preload_env(built))
    m = re.fullmatch(r"doomed: threads=(\d+) failures=(\d+)\n", out)
    assert m, out
    assert m.group(2) == "0", out
    if model.backing["purge_thread"]:
        assert m.group(1) == "2", out        # the purger ran: the case this test is about


def test_malloc_trim_unmaps_what_the_purger_was_handed(built, model, plain_programs, madvise_spy):
    """malloc_trim unmaps the freed large mappings waiting for the purger itself; with the
    purger slowed (each munmap 300 ms), 160 MiB freed are out of the address space when it
    returns (before: it returned with them mapped, and resident)."""
    out = run_behind(madvise_spy, built, plain_programs["oom_release"], "trim",
                     HZ_SPY_SLOW_MUNMAP="1")
    m = re.fullmatch(r"trim: threads=(\d+) back=(\d)\n", out)
    assert m, out
    assert m.group(2) == "1", out
    if model.backing["purge_thread"]:
        assert m.group(1) == "2", out


@pytest.mark.parametrize("mode,message,clean", [
    ("interior", "free of a pointer that is not a live aligned block", "interior: usable=0 intact=1\n"),
    ("double", "free of a pointer that is not a live aligned block", "double: distinct=1\n"),
])
def test_wild_frees_of_aligned_pool_blocks(built, model, plain_programs, mode, message, clean):
    """A free() inside a live pool block, or a second free() of one: never a slot handed out
    twice; the checked spec aborts naming it, the others drop it."""
    wild_free([plain_programs["aligned_pool"], mode], preload_env(built), model, message, clean)
