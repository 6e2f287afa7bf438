"""Real programs under LD_PRELOAD: the output must be identical to a run without it."""
from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap

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
