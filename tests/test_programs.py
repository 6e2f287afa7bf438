"""Real programs under LD_PRELOAD: the output must be identical to a run without it."""
from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import preload_env

PY_WORKLOAD = textwrap.dedent("""
    import json, sqlite3, threading, collections
    d = {i: str(i) * (i % 17) for i in range(60000)}
    words = collections.Counter(w for v in d.values() for w in v.split('1'))
    out = [len(d), sum(len(v) for v in d.values()), len(words)]
    def worker(k, res):
        acc = []
        for i in range(20000):
            acc.append(bytearray((i * k) % 3000))
            if i % 3 == 0:
                acc.pop(0)
        res[k] = sum(len(b) for b in acc)
    res = {}
    ts = [threading.Thread(target=worker, args=(k, res)) for k in range(1, THREADS + 1)]
    [t.start() for t in ts]; [t.join() for t in ts]
    out.append(sorted(res.items()))
    db = sqlite3.connect(':memory:')
    db.execute('create table t (k integer primary key, v text)')
    db.executemany('insert into t values (?, ?)', ((i, 'x' * (i % 500)) for i in range(20000)))
    out.append(db.execute('select count(*), sum(length(v)) from t where k % 7 = 3').fetchone())
    out.append(json.dumps({str(i): [i] * (i % 5) for i in range(3000)})[:100])
    print(json.dumps(out))
""")

C_PROGRAM = textwrap.dedent("""
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    struct node { struct node *next; char name[24]; };
    int main(void) {
        struct node *head = NULL;
        for (int i = 0; i < 1000; i++) {
            struct node *n = malloc(sizeof *n);
            snprintf(n->name, sizeof n->name, "node-%d", i);
            n->next = head; head = n;
        }
        size_t total = 0;
        for (struct node *n = head; n; n = n->next) total += strlen(n->name);
        printf("%zu\\n", total);
        return 0;
    }
""")


def run_both(cmd, built, **kw):
    plain = subprocess.run(cmd, capture_output=True, timeout=300, **kw)
    pre = subprocess.run(cmd, capture_output=True, timeout=300, env=preload_env(built), **kw)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert pre.returncode == 0, pre.stderr[-2000:]
    return plain.stdout, pre.stdout


def test_python_dicts_threads_sqlite(built, model):
    code = PY_WORKLOAD.replace("THREADS", "4" if model.threads else "0")
    a, b = run_both([sys.executable, "-c", code], built)
    assert a == b and a.startswith(b"[60000")


CXX_PROGRAM = textwrap.dedent("""
    #include <cstdint>
    #include <cstdlib>
    #include <iostream>
    #include <map>
    #include <memory>
    #include <string>
    #include <thread>
    #include <vector>
    struct alignas(128) Big { char x[300]; };       // operator new(size_t, align_val_t)
    static size_t work(int t) {
        std::map<std::string, std::vector<int>> m;
        for (int i = 0; i < 100000; i++) m[std::to_string((i * 7 + t) % 30000)].push_back(i);
        std::vector<std::unique_ptr<Big>> v;
        for (int i = 0; i < 5000; i++) {
            v.emplace_back(new Big);
            if (reinterpret_cast<std::uintptr_t>(v.back().get()) % 128) std::abort();
        }
        return m.size() + v.size();
    }
    int main() {
        std::vector<size_t> out(THREADS + 1);
        std::vector<std::thread> ts;
        for (int t = 1; t <= THREADS; t++) ts.emplace_back([t, &out] { out[t] = work(t); });
        out[0] = work(0);
        for (auto &t : ts) t.join();
        for (auto n : out) std::cout << n << "\\n";
    }
""")


def test_cxx_containers_threads_aligned_new(built, model, tmp_path):
    """A C++ program (std::map, std::string, std::thread, over-aligned new), compiled by g++
    running on the allocator too."""
    if not shutil.which("g++"):
        pytest.skip("g++ is not installed")
    src = tmp_path / "prog.cc"
    src.write_text(CXX_PROGRAM.replace("THREADS", "3" if model.threads else "0"))
    exe = tmp_path / "prog"
    r = subprocess.run(["g++", "-O2", "-pthread", "-o", str(exe), str(src)], capture_output=True,
                       env=preload_env(built), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = run_both([str(exe)], built)
    assert a == b and a.split() == [b"35000"] * (4 if model.threads else 1)


@pytest.fixture(scope="session")
def big_text(tmp_path_factory):
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("data") / "lines.txt"
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    with open(path, "w") as f:
        for _ in range(400000):
            f.write("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) + "\n")
    return path


def test_sort_large_file(built, model, big_text):
    cmd = ["sort", "-S", "64M"] + ([] if model.threads else ["--parallel=1"]) + [str(big_text)]
    a, b = run_both(cmd, built)
    assert a == b and a.count(b"\n") == 400000


def test_gzip_roundtrip(built, big_text, tmp_path):
    a, b = run_both(["gzip", "-9", "-c", str(big_text)], built)
    assert a == b
    back = subprocess.run(["gzip", "-dc"], input=b, capture_output=True, env=preload_env(built))
    assert hashlib.sha256(back.stdout).digest() == hashlib.sha256(big_text.read_bytes()).digest()


def test_cc_compiles_and_program_runs(built, tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(C_PROGRAM)
    outs = []
    for env in (None, preload_env(built)):
        exe = tmp_path / f"prog{len(outs)}"
        r = subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(src)], capture_output=True,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        run = subprocess.run([str(exe)], capture_output=True, env=env, timeout=60)
        assert run.returncode == 0
        outs.append(run.stdout)
    assert outs[0] == outs[1] == b"7890\n"


DEEP_LIB = textwrap.dedent("""
    #include <stdlib.h>
    #include <string.h>
    void *deep_alloc(size_t n) { void *p = malloc(n); memset(p, 7, n); return p; }
""")

DEEP_MAIN = textwrap.dedent("""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <malloc.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    int main(int argc, char **argv) {
        (void)argc;
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_DEEPBIND);
        if (!h) { fprintf(stderr, "%s\\n", dlerror()); return 2; }
        void *(*deep_alloc)(size_t) = (void *(*)(size_t))dlsym(h, "deep_alloc");
        size_t total = 0;
        for (int i = 0; i < 2000; i++) {
            unsigned char *p = deep_alloc(16 + i % 700);   /* glibc's block */
            if (malloc_usable_size(p) < (size_t)(16 + i % 700)) return 3;
            if (i % 2) {
                p = realloc(p, 4000);                        /* ours or glibc's, contents kept */
                if (p[15] != 7) return 4;
            }
            total += p[0];
            free(p);                                         /* must not crash */
        }
        printf("deepbind ok %zu\\n", total);
        return 0;
    }
""")

CTOR_LIB = textwrap.dedent("""
    #include <pthread.h>
    #include <stdlib.h>
    #include <string.h>
    static void *worker(void *a) { (void)a; for (int i = 0; i < 1000; i++) free(malloc(64 + i)); return NULL; }
    __attribute__((constructor(101))) static void early(void) {
        char *p = malloc(100); strcpy(p, "early"); p = realloc(p, 5000); free(p);
        pthread_t t; pthread_create(&t, NULL, worker, NULL); pthread_join(t, NULL);
    }
""")


def _cc(src_text, out, *extra):
    src = out.with_suffix(".c")
    src.write_text(src_text)
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(out), str(src), *extra], check=True)
    return out


def test_foreign_pointers_from_a_deepbind_library(built, model, tmp_path):
    """RTLD_DEEPBIND libraries call glibc's malloc; their blocks reach our free/realloc/usable."""
    if model.checks["foreign_free"] == "abort":
        pytest.skip("the checked spec aborts on foreign pointers by design")
    lib = _cc(DEEP_LIB, tmp_path / "libdeep.so", "-shared", "-fPIC")
    exe = _cc(DEEP_MAIN, tmp_path / "deepmain", "-ldl")
    r = subprocess.run([str(exe), str(lib)], capture_output=True, text=True, timeout=60,
                       env=preload_env(built))
    assert r.returncode == 0 and r.stdout == "deepbind ok 14000\n", (r.returncode, r.stderr)


def test_allocation_from_an_earlier_constructor(built, model, tmp_path):
    """A preloaded library whose constructor allocates (and starts a thread) before ours runs."""
    lib = _cc(CTOR_LIB, tmp_path / "libearly.so", "-shared", "-fPIC")
    env = preload_env(built)
    env["LD_PRELOAD"] = f"{lib}:{built.override}"
    if not model.threads:
        pytest.skip("single-threaded spec: the constructor starts a thread")
    r = subprocess.run(["sort"], input="b\na\n", capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout == "a\nb\n", r.stderr


def redis_commands() -> str:
    """A deterministic redis-cli script: strings up to a 2 MiB one grown by APPEND, lists,
    hashes, sets, sorted sets, a Lua table, an in-process RDB save and reload (DEBUG RELOAD)."""
    lines = ["FLUSHALL", "DEBUG POPULATE 50000 key 100", "DBSIZE",
             "SETRANGE big 2097151 x", "APPEND big tail", "STRLEN big", "GETRANGE big 2097150 -1"]
    for c in range(3):
        lines.append("RPUSH l " + " ".join(f"item{c}-{i}" for i in range(1000)))
        lines.append("HSET h " + " ".join(f"f{c}-{i} {'v' * (1 + i % 300)}" for i in range(1000)))
        lines.append("SADD s " + " ".join(f"m{c}-{i}" for i in range(1000)))
        lines.append("ZADD z " + " ".join(f"{i * 3 + c} z{c}-{i}" for i in range(1000)))
    lines += ["LLEN l", "LRANGE l 1000 1003", "LTRIM l 0 999", "LLEN l", "SORT l LIMIT 0 3 ALPHA",
              "HLEN h", "HGET h f2-299", "SCARD s", "SISMEMBER s m1-77", "ZCARD z",
              "ZRANGE z 100 102 WITHSCORES", "ZRANGEBYSCORE z 10 12",
              'EVAL "local t = {} for i = 1, 20000 do t[i] = string.rep(\'x\', i % 100) end '
              'return #t" 0',
              "DEBUG RELOAD", "DBSIZE", "GET key:123", "STRLEN big", "HGET h f2-299",
              "ZSCORE z z1-500", "DEL big", "DBSIZE"]
    return "\n".join(lines) + "\n"


def plain_env() -> dict:
    """The environment without any preload: redis-cli and redis-benchmark, and redis-server
    for the reference run."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def redis_session(tmp, env) -> tuple[bytes, str]:
    """Start redis-server (with env) on a unix socket, run the script, fork it for a BGSAVE,
    load it with redis-benchmark (not on the allocator), shut it down; returns the script's
    replies and the server's log.  Every step must succeed."""
    tmp.mkdir()
    sock = Path(tempfile.mkdtemp(prefix="hzr", dir="/tmp")) / "s"   # sun_path: 107 bytes
    log = tmp / "redis.log"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp),
         "--save", "", "--appendonly", "no", "--enable-debug-command", "yes",
         "--logfile", str(log)], env=env)
    plain = plain_env()

    def cli(*args, timeout=120, **kw):
        r = subprocess.run(["redis-cli", "-s", str(sock), *args], capture_output=True,
                           env=plain, timeout=timeout, **kw)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def answers() -> bool:
        try:
            return sock.exists() and cli("ping", timeout=10) == b"PONG\n"
        except (AssertionError, subprocess.TimeoutExpired):
            return False

    try:
        deadline = time.monotonic() + 20
        while not answers():
            assert server.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        replies = cli(input=redis_commands().encode())
        assert cli("BGSAVE").startswith(b"Background saving started")
        while b"rdb_bgsave_in_progress:0" not in cli("INFO", "persistence"):
            assert time.monotonic() < deadline + 60, "BGSAVE did not finish"
            time.sleep(0.05)
        assert b"rdb_last_bgsave_status:ok" in cli("INFO", "persistence")
        bench = subprocess.run(
            ["redis-benchmark", "-s", str(sock), "-q", "-n", "20000", "-r", "20000", "-P", "8",
             "-d", "200", "-t", "set,get,incr,lpush,lpop,sadd,hset,spop,zadd,zpopmin"],
            capture_output=True, env=plain, timeout=300)
        assert bench.returncode == 0, bench.stderr[-2000:]
        calls = dict(re.findall(r"cmdstat_(\w+):calls=(\d+)", cli("INFO", "commandstats").decode()))
        for command in ("set", "get", "incr", "lpush", "lpop", "sadd", "hset", "spop", "zadd"):
            assert int(calls.get(command, 0)) >= 20000, (command, calls)
        cli("SHUTDOWN", "NOSAVE")
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(sock.parent, ignore_errors=True)
    return replies, log.read_text()


def test_redis_server(built, model, tmp_path):
    """redis-server (Debian links it with jemalloc; the preload takes malloc, calloc, realloc,
    free and malloc_usable_size from it and leaves mallctl to jemalloc) gives the same replies
    on the allocator, survives a forked BGSAVE and redis-benchmark, and shuts down cleanly."""
    if not model.threads:
        pytest.skip("single-threaded spec: redis-server runs background threads")
    if not all(shutil.which(p) for p in ("redis-server", "redis-cli", "redis-benchmark")):
        pytest.skip("redis is not installed (make test installs it: apt-get install redis-server)")
    a, _ = redis_session(tmp_path / "plain", plain_env())
    b, log = redis_session(tmp_path / "preload", preload_env(built))
    assert a == b, (a[-1500:], b[-1500:])
    assert b.startswith(b"OK\nOK\n50000\n2097152\n2097156\n2097156\n"), b[:200]
    assert "BUG REPORT" not in log and "Background saving terminated with success" in log, log[-2000:]


# CPython's own regression tests for what leans on malloc: containers, bytes and str, pickle,
# json, sqlite3, mmap, ctypes, the C API's allocator functions, tracemalloc, gc and weakrefs,
# threads and fork
PY_REGRTESTS = ("test_dict", "test_list", "test_set", "test_deque", "test_bytes", "test_unicode",
                "test_json", "test_pickle", "test_array", "test_struct", "test_sqlite3",
                "test_mmap", "test_ctypes", "test_capi", "test_tracemalloc", "test_gc",
                "test_weakref", "test_threading", "test_fork1", "test_os")


def test_python_regression_tests(built, model, tmp_path):
    """CPython's regression tests pass with the interpreter on the allocator (the threaded
    specs that users run: default and checked; each run takes about a minute)."""
    if model.name not in ("default", "checked"):
        pytest.skip("CPython's regression tests run for default and checked only (time)")
    probe = subprocess.run([sys.executable, "-c", "import test.libregrtest"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{sys.executable} has no test package (Debian: apt-get install "
                    f"libpython3.{sys.version_info.minor}-testsuite)")
    # --timeout: regrtest kills a stuck worker itself (its workers have sessions of their own)
    r = subprocess.run([sys.executable, "-m", "test", "-j2", "--timeout=300", *PY_REGRTESTS],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path,
                       env=preload_env(built))
    assert r.returncode == 0 and "Tests result: SUCCESS" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"All {len(PY_REGRTESTS)} tests OK." in r.stdout, r.stdout[-3000:]
