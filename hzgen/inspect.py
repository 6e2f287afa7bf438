"""`hzgen inspect SPEC`: what the malloc and free fast paths of a spec's generated C do.

Two independent measurements.

1. Source (pycparser). The spec is rendered in memory, preprocessed with `cc -E` against a
   handful of fake libc headers written to a temporary directory (pycparser 3.0 ships none; the
   fake headers only declare the types the runtime uses), with `-DHZ_OVERRIDE=1` (so the API
   functions are `malloc` and `free`), `__attribute__(x)` defined away and `__thread` turned into
   `_Thread_local`, then parsed. Starting at the API entry (`malloc`, `free`) the function bodies
   are walked path by path, like a tiny symbolic executor:

   - Calls to `static inline` functions (HZ_INLINE) are followed, as the compiler inlines them:
     malloc -> hz_malloc -> hz_size_cache_off, hz_alloc_fast_at -> hz_rN_t0_pop; free -> hz_free
     -> hz_free_fast_slab -> hz_free_fast_at -> hz_rN_free_to. They are listed under "inlined".
   - A call to any other function defined in the translation unit (hz_alloc_miss,
     hz_large_alloc, hz_free_slow, hz_free_remote, hz_rN_free_overflow, hz_rN_drain_t0,
     hz_fail, ...) is a *boundary exit*: the path ends there (its arguments are still
     evaluated). They are listed under "exits" and are not fast-path work.
   - Calls to `hz_check_*` (the checks box, at the alloc and free boundaries) are followed, and
     so is every helper they call except hz_fail; what happens inside them is counted apart, as
     "check branches", so a checked spec's fast path can be compared with its unchecked twin.
   - `__builtin_expect(x, k)` is x; other `__builtin_*` are not calls; `__atomic_*` and C11
     `atomic_*` are counted as "atomics". A call to a function not defined here (memset,
     __libc_free, ...) is counted under "calls": fast-path work that leaves the allocator.

   Counted, per path from the entry to a `return` (a *fast path*) or to a boundary exit:
   - branches: conditional branches evaluated outside the checks box: each `if`, `?:`, each
     operand of `&&`/`||` that decides, each loop condition, each `switch`. A test whose outcome
     is already known on the path is folded, not counted, as a compiler's jump threading does:
     null tests of a pointer already tested (the tier pop's `if (b)` then
     hz_alloc_class's `p != NULL`), of `&x`, of NULL and of integer constants. Reported as the
     largest count over the fast paths ("branches") and the smallest ("min"); "sites" is the
     number of distinct conditional expressions reached on any path, exits included.
   - check branches, check atomics, check exits: the same, inside hz_check_* (largest over the
     fast paths; the exits are the failure calls, hz_fail).
   - loops: distinct loop statements reached on any path before its exit (a loop body is walked
     once).
   - TLS loads / stores: reads and writes of `_Thread_local` variables (hz_tls_heap), largest
     over the fast paths.
   - atomics: `__atomic_*` / `atomic_*` operations outside the checks box (the registry lookup
     of free is a relaxed atomic load: a plain load on x86-64), largest over the fast paths.
   - stats updates (largest over all paths, exits included, so code before an exit counts):
     member accesses `->stats` (each HZ_STAT).
   - ring ops, sll ops: distinct member accesses reached on any path of `.tN.slot` (ring tier)
     and of `.tN.head` / `->next` (intrusive-list tier); "tier_ops" splits them by class range
     (the innermost hz_rN_* function they are in), so a ring-only range shows no sll code.

2. Machine code (objdump). The override library is built with the pipeline's own builder into a
   temporary root (or --root DIR, reused when up to date) and `objdump -d` is read for the
   exported `malloc` and `free`: instructions in the symbol (alignment nops left out),
   conditional jumps in the symbol, calls and tail calls (jumps to other symbols) it makes, and
   the shortest path from the entry to a `ret` (its instructions and conditional jumps) - with
   the HZ_LIKELY hints that is the fast path: pop, hit, return. --no-build skips this part.

`--json` prints everything as one JSON object. Tests hold per-spec budgets on these numbers
(tests/test_tools.py).
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from pycparser import c_ast, c_parser
from pycparser.c_parser import ParseError

from .tool import ToolError, guarded, table

# ---------------------------------------------------------------- preprocessing

FAKE_LIBC = """\
#ifndef HZ_FAKE_LIBC
#define HZ_FAKE_LIBC
typedef unsigned long size_t;
typedef long ssize_t;
typedef long ptrdiff_t;
typedef long off_t;
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef long intptr_t;
typedef unsigned long uintptr_t;
typedef int atomic_int;
typedef unsigned atomic_uint;
typedef _Bool bool;
typedef unsigned pthread_key_t;
typedef unsigned long pthread_t;
typedef struct hz_fake_attr pthread_attr_t;
typedef struct hz_fake_mutex pthread_mutex_t;
typedef struct hz_fake_mutexattr pthread_mutexattr_t;
typedef struct hz_fake_sigset sigset_t;
typedef int clockid_t;
typedef long time_t;
typedef char *va_list;
typedef struct hz_fake_file FILE;
struct timespec { time_t tv_sec; long tv_nsec; };
struct mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks,
                   fordblks, keepcost; };
#define NULL ((void *)0)
#endif
"""
FAKE_HEADERS = ("errno.h", "stdatomic.h", "stddef.h", "stdint.h", "stdbool.h", "string.h",
                "sched.h", "pthread.h", "time.h", "unistd.h", "sys/mman.h", "dlfcn.h",
                "malloc.h", "fcntl.h", "stdarg.h", "stdio.h", "stdlib.h", "limits.h", "signal.h",
                "sys/syscall.h", "linux/futex.h")
CPP_FLAGS = ["-E", "-nostdinc", "-DHZ_OVERRIDE=1", "-D__attribute__(x)=",
             "-D__thread=_Thread_local", "-D__extension__=", "-D__restrict=", "-D__inline=inline",
             "-D__asm__(x)="]


def preprocess(files: dict[str, str]) -> str:
    """The rendered tree as one preprocessed translation unit (hz_static.c)."""
    from .build import compiler
    with tempfile.TemporaryDirectory(prefix="hzinspect-") as d:
        src, fake = Path(d) / "src", Path(d) / "fake"
        src.mkdir()
        for name, text in files.items():
            (src / name).write_text(text)
        for h in FAKE_HEADERS:
            (fake / h).parent.mkdir(parents=True, exist_ok=True)
            (fake / h).write_text(FAKE_LIBC)
        cmd = [compiler(), *CPP_FLAGS, "-I", str(fake), "hz_static.c"]
        try:
            r = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
        except FileNotFoundError:
            raise ToolError(f"C compiler '{compiler()}' not found (set CC or install gcc)")
        if r.returncode != 0:
            raise ToolError(f"preprocessing failed: {r.stderr.strip()}")
        return r.stdout


def parse(text: str) -> c_ast.FileAST:
    try:
        return c_parser.CParser().parse(text, "hz_static.c")
    except ParseError as e:
        raise ToolError(f"pycparser cannot parse the generated C: {e}")


# ---------------------------------------------------------------- the path walker

@dataclass
class State:
    """One path: its locals, what it knows about pointers, and what it counted."""
    frames: list
    facts: dict = field(default_factory=dict)       # value id -> known truth (non-null / non-zero)
    n: dict = field(default_factory=lambda: dict.fromkeys(
        ("branches", "check_branches", "tls_loads", "tls_stores", "atomics", "check_atomics",
         "stats"), 0))
    check_depth: int = 0
    exit: str | None = None

    def fork(self) -> "State":
        return State([dict(f) for f in self.frames], dict(self.facts), dict(self.n),
                      self.check_depth, self.exit)


NEXT, RETURN, BREAK, CONTINUE, EXIT = "next", "return", "break", "continue", "exit"
MAX_PATHS = 20000
MAX_DEPTH = 48


class Walker:
    def __init__(self, ast: c_ast.FileAST):
        self.funcs: dict[str, c_ast.FuncDef] = {}
        self.inline: set[str] = set()
        self.tls: set[str] = set()
        for ext in ast.ext:
            if isinstance(ext, c_ast.FuncDef):
                self.funcs[ext.decl.name] = ext
                if "inline" in (ext.decl.funcspec or []):
                    self.inline.add(ext.decl.name)
            elif isinstance(ext, c_ast.Decl) and "_Thread_local" in (ext.storage or []):
                self.tls.add(ext.name)
        self.ids = itertools.count(1)

    # -- values: ints; State.facts says which are known non-null (True) or null (False)
    def fresh(self, s: State, truth: bool | None = None) -> int:
        v = next(self.ids)
        if truth is not None:
            s.facts[v] = truth
        return v

    def analyze(self, entry: str) -> dict:
        if entry not in self.funcs:
            raise ToolError(f"no function '{entry}' in the generated C")
        self.sites, self.check_sites, self.loop_sites, self.tier_sites = set(), set(), set(), set()
        self.inlined, self.checks, self.exits, self.check_exits = [], [], set(), set()
        self.calls = set()
        self.paths = 0
        fd = self.funcs[entry]
        s = State([{"@fn": entry}])
        for p in self.params(fd):
            s.frames[-1][p] = self.fresh(s)
        ends = self.stmt(fd.body, s)
        fast = [st for st, o in ends if o[0] != EXIT]
        every = [st for st, _ in ends]

        def most(key, paths):
            return max((st.n[key] for st in paths), default=0)
        return {
            "entry": entry,
            "fast_paths": len(fast), "exit_paths": len(ends) - len(fast),
            "branches": most("branches", fast),
            "branches_min": min((st.n["branches"] for st in fast), default=0),
            "branch_sites": len(self.sites),
            "check_branches": most("check_branches", fast),
            "check_branch_sites": len(self.check_sites),
            "loops": len(self.loop_sites),
            "calls": sorted(self.calls),
            "exits": sorted(self.exits),
            "checks": self.checks,
            "check_exits": sorted(self.check_exits),
            "check_atomics": most("check_atomics", fast),
            "tls_loads": most("tls_loads", fast), "tls_stores": most("tls_stores", fast),
            "atomics": most("atomics", fast),
            "stats_updates": most("stats", every),
            "ring_ops": sum(k == "ring" for _, k, _ in self.tier_sites),
            "sll_ops": sum(k == "sll" for _, k, _ in self.tier_sites),
            "tier_ops": {r: {k: sum(1 for r2, k2, _ in self.tier_sites if (r2, k2) == (r, k))
                             for k in ("ring", "sll")}
                         for r in sorted({r for r, _, _ in self.tier_sites})},
            "inlined": self.inlined,
        }

    @staticmethod
    def params(fd: c_ast.FuncDef) -> list[str]:
        args = fd.decl.type.args
        return [p.name for p in (args.params if args else []) if getattr(p, "name", None)]

    @staticmethod
    def where(node) -> str:
        c = node.coord
        return f"{c.file.rsplit('/', 1)[-1]}:{c.line}:{c.column}" if c else "?"

    def branch(self, s: State, node) -> None:
        if s.check_depth:
            s.n["check_branches"] += 1
            self.check_sites.add(self.where(node))
        else:
            s.n["branches"] += 1
            self.sites.add(self.where(node))

    def count_path(self) -> None:
        self.paths += 1
        if self.paths > MAX_PATHS:
            raise ToolError(f"more than {MAX_PATHS} paths through the fast path: not analysable")

    # -- sequencing helpers
    @staticmethod
    def then(results, fn, on_exit=None):
        """fn(state, value) for every path still running; ended paths carry on_exit along."""
        out = []
        for s, v in results:
            out.extend([(s, on_exit)] if s.exit else fn(s, v))
        return out

    def unknown(self, results, truth: bool | None = None):
        """Each path's value becomes a fresh one (known non-null when truth is True)."""
        return self.then(results, lambda st, _: [(st, self.fresh(st, truth))])

    def seq(self, exprs, s: State):
        """Evaluate expressions left to right: [(state, [values])]."""
        results = [(s, [])]
        for e in exprs:
            results = self.then(results, lambda st, vals, e=e: [
                (st2, None if st2.exit else vals + [v]) for st2, v in self.expr(e, st)])
        return results

    # -- conditions: [(state, truth)]
    def cond(self, e, s: State):
        if isinstance(e, c_ast.FuncCall) and self.callee(e) == "__builtin_expect":
            return self.cond(e.args.exprs[0], s)
        if isinstance(e, c_ast.UnaryOp) and e.op == "!":
            return [(st, None if st.exit else not b) for st, b in self.cond(e.expr, s)]
        if isinstance(e, c_ast.BinaryOp) and e.op in ("&&", "||"):
            short = e.op == "||"
            return self.then(self.cond(e.left, s), lambda st, b: [(st, b)] if b == short
                             else self.cond(e.right, st))
        if isinstance(e, c_ast.BinaryOp) and e.op in ("==", "!=") and (
                self.is_null(e.left) or self.is_null(e.right)):
            other = e.right if self.is_null(e.left) else e.left
            want = e.op == "!="
            return self.then(self.expr(other, s), lambda st, v: [
                (st2, b if want else not b) for st2, b in self.decide(e, st, v)])
        return self.then(self.expr(e, s), lambda st, v: self.decide(e, st, v))

    def decide(self, node, s: State, v: int):
        known = s.facts.get(v)
        if known is not None:
            return [(s, known)]                     # folded: no branch
        self.branch(s, node)
        t, f = s, s.fork()
        t.facts[v], f.facts[v] = True, False
        self.count_path()
        return [(t, True), (f, False)]

    @staticmethod
    def is_null(e) -> bool:
        while isinstance(e, c_ast.Cast):
            e = e.expr
        return isinstance(e, c_ast.Constant) and e.value in ("0", "0u", "0U", "0l", "0L")

    @staticmethod
    def callee(e: c_ast.FuncCall) -> str | None:
        return e.name.name if isinstance(e.name, c_ast.ID) else None

    # -- expressions: [(state, value)]
    def expr(self, e, s: State):
        if s.exit:
            return [(s, None)]
        k = type(e).__name__
        if k == "ID":
            if e.name in self.tls:
                s.n["tls_loads"] += 1
            local = s.frames[-1]
            return [(s, local[e.name] if e.name in local else self.fresh(s))]
        if k == "Constant":
            if e.type in ("int", "unsigned int", "long int", "unsigned long int", "long long int",
                          "unsigned long long int"):
                digits = e.value.rstrip("uUlL")
                try:
                    return [(s, self.fresh(s, int(digits, 0) != 0))]
                except ValueError:
                    pass
            return [(s, self.fresh(s, True if e.type == "string" else None))]
        if k == "Cast":
            return self.expr(e.expr, s)
        if k == "UnaryOp":
            return self.unary(e, s)
        if k == "BinaryOp":
            if e.op in ("&&", "||"):
                return self.then(self.cond(e, s), lambda st, b: [(st, self.fresh(st, b))])
            return self.unknown(self.seq([e.left, e.right], s))
        if k == "TernaryOp":
            return self.then(self.cond(e.cond, s), lambda st, b: self.expr(
                e.iftrue if b else e.iffalse, st))
        if k == "Assignment":
            return self.assign(e, s)
        if k == "FuncCall":
            return self.call(e, s)
        if k == "StructRef":
            return self.then(self.expr(e.name, s), lambda st, _: [(st, self.member(e, st))])
        if k == "ArrayRef":
            return self.unknown(self.seq([e.name, e.subscript], s))
        if k == "ExprList":
            return self.then(self.seq(e.exprs, s), lambda st, vals: [(st, vals[-1] if vals else None)])
        if k == "InitList":
            return self.unknown(self.seq(e.exprs, s))
        if k == "CompoundLiteral":
            return self.unknown(self.expr(e.init, s), True)
        return [(s, self.fresh(s))]                  # Typename, sizeof operands, ...

    def member(self, e: c_ast.StructRef, s: State) -> int:
        name = e.field.name
        tier = isinstance(e.name, c_ast.StructRef) and re.fullmatch(r"t\d+", e.name.field.name)
        kind = ("ring" if name == "slot" and tier else
                "sll" if (name == "head" and tier) or name == "next" else None)
        if name == "stats":
            s.n["stats"] += 1
        elif kind:
            # the class range whose code this is: the innermost hz_rN_* function on the stack
            rng = next((m.group(1) for f in reversed(s.frames)
                        if (m := re.match(r"hz_r(\d+)_", f.get("@fn", "")))), "-")
            self.tier_sites.add((rng, kind, self.where(e)))
        return self.fresh(s)

    def unary(self, e: c_ast.UnaryOp, s: State):
        op = e.op
        if op in ("sizeof", "_Alignof"):
            return [(s, self.fresh(s))]
        if op == "&":
            if isinstance(e.expr, c_ast.ID):
                return [(s, self.fresh(s, True))]
            return self.unknown(self.expr(e.expr, s), True)
        if op == "!":
            return self.then(self.cond(e, s), lambda st, b: [(st, self.fresh(st, b))])
        if op in ("++", "--", "p++", "p--") and isinstance(e.expr, c_ast.ID):
            return [(s, self.store(e.expr.name, s, None, load=True))]
        return self.unknown(self.expr(e.expr, s))

    def store(self, name: str, s: State, v: int | None, load: bool = False) -> int:
        if name in self.tls:
            s.n["tls_stores"] += 1
            s.n["tls_loads"] += load
        v = self.fresh(s) if v is None else v
        if name in s.frames[-1]:
            s.frames[-1][name] = v
        return v

    def assign(self, e: c_ast.Assignment, s: State):
        def to(st, v):
            if isinstance(e.lvalue, c_ast.ID):
                return [(st, self.store(e.lvalue.name, st, v if e.op == "=" else None,
                                        load=e.op != "="))]
            return [(st2, v) for st2, _ in self.expr(e.lvalue, st)]
        return self.then(self.expr(e.rvalue, s), to)

    def call(self, e: c_ast.FuncCall, s: State):
        name = self.callee(e)
        args = e.args.exprs if e.args else []
        if name == "__builtin_expect":
            return self.then(self.seq(args, s), lambda st, vals: [(st, vals[0])])
        if name is None:
            self.calls.add("(indirect call)")
            return self.unknown(self.seq([e.name] + args, s))
        if name.startswith(("__atomic_", "atomic_")):
            def atomic(st, _):
                st.n["check_atomics" if st.check_depth else "atomics"] += 1
                return [(st, self.fresh(st))]
            return self.then(self.seq(args, s), atomic)
        if name.startswith("__builtin_"):
            return self.unknown(self.seq(args, s))
        if name not in self.funcs:
            self.calls.add(name)
            return self.unknown(self.seq(args, s))
        check = name.startswith("hz_check_")
        follow = name in self.inline or check or (s.check_depth > 0 and name != "hz_fail")
        if not follow:
            def leave(st, _):
                st.exit = name
                (self.check_exits if st.check_depth else self.exits).add(name)
                return [(st, None)]
            return self.then(self.seq(args, s), leave)
        return self.then(self.seq(args, s), lambda st, vals: self.inline_call(name, check, st, vals))

    def inline_call(self, name: str, check: bool, s: State, vals: list):
        if len(s.frames) > MAX_DEPTH:
            raise ToolError(f"inlining {name}: calls nested deeper than {MAX_DEPTH}")
        fd = self.funcs[name]
        if check and name not in self.checks:
            self.checks.append(name)
        elif not check and not s.check_depth and name not in self.inlined:
            self.inlined.append(name)
        s.frames.append({"@fn": name, **dict(zip(self.params(fd), vals))})
        s.check_depth += check
        out = []
        for st, o in self.stmt(fd.body, s):
            if o[0] == EXIT:
                out.append((st, None))
                continue
            st.frames.pop()
            st.check_depth -= check
            out.append((st, o[1] if o[0] == RETURN else None))
        return out

    # -- statements: [(state, outcome)]
    def stmt(self, n, s: State):
        if s.exit:
            return [(s, (EXIT,))]
        k = type(n).__name__
        if k == "Compound":
            return self.block(n.block_items or [], s)
        if k in ("Case", "Default"):
            return self.block(n.stmts or [], s)
        if k == "Decl":
            if "static" in (n.storage or []) or isinstance(n.type, c_ast.FuncDecl):
                return [(s, (NEXT,))]
            if n.init is None:
                s.frames[-1][n.name] = self.fresh(s)
                return [(s, (NEXT,))]
            def bind(st, v):
                st.frames[-1][n.name] = v if v is not None else self.fresh(st)
                return [(st, None)]
            return self.done(self.then(self.expr(n.init, s), bind))
        if k == "DeclList":
            return self.block(n.decls, s)
        if k == "Return":
            if n.expr is None:
                return [(s, (RETURN, None))]
            return [(st, (EXIT,) if st.exit else (RETURN, v)) for st, v in self.expr(n.expr, s)]
        if k == "If":
            return self.flow(self.cond(n.cond, s), lambda st, b: self.stmt(n.iftrue, st) if b else
                             (self.stmt(n.iffalse, st) if n.iffalse else [(st, (NEXT,))]))
        if k in ("While", "DoWhile", "For"):
            return self.loop(n, s)
        if k == "Switch":
            def body(st, v):
                self.branch(st, n)
                return self.stmt(n.stmt, st)
            return [(st, (NEXT,) if o[0] == BREAK else o)
                    for st, o in self.flow(self.expr(n.cond, s), body)]
        if k == "Break":
            return [(s, (BREAK,))]
        if k == "Continue":
            return [(s, (CONTINUE,))]
        if k == "Label":
            return self.stmt(n.stmt, s)
        if k in ("EmptyStatement", "StaticAssert", "Pragma", "Goto", "Typedef"):
            return [(s, (NEXT,))]
        return self.done(self.expr(n, s))

    def done(self, results):
        return [(st, (EXIT,) if st.exit else (NEXT,)) for st, _ in results]

    def flow(self, results, fn):
        return self.then(results, fn, on_exit=(EXIT,))

    def block(self, items, s: State):
        results = [(s, (NEXT,))]
        for it in items:
            nxt = []
            for st, o in results:
                nxt.extend(self.stmt(it, st) if o[0] == NEXT else [(st, o)])
            results = nxt
        return results

    def loop(self, n, s: State):
        """A loop on a fast path is reported; its body is walked once."""
        self.loop_sites.add(self.where(n))
        k = type(n).__name__
        pre = self.stmt(n.init, s) if k == "For" and n.init is not None else [(s, (NEXT,))]

        def body(st):
            out = []
            for st2, o in self.stmt(n.stmt, st):
                if o[0] in (BREAK, CONTINUE, NEXT):
                    if k == "For" and n.next is not None and o[0] != BREAK:
                        out.extend(self.done(self.expr(n.next, st2)))
                    else:
                        out.append((st2, (NEXT,)))
                else:
                    out.append((st2, o))
            return out

        out = []
        for st, o in pre:
            if o[0] != NEXT:
                out.append((st, o))
            elif k == "DoWhile":
                for st2, o2 in body(st):
                    out.extend([(st2, o2)] if o2[0] != NEXT else
                               self.flow(self.cond(n.cond, st2), lambda x, b: [(x, (NEXT,))]))
            elif getattr(n, "cond", None) is None:
                out.extend(body(st))
            else:
                out.extend(self.flow(self.cond(n.cond, st), lambda x, b: body(x) if b
                                     else [(x, (NEXT,))]))
        return out


def analyze_source(files: dict[str, str], entries: list[str]) -> dict:
    walker = Walker(parse(preprocess(files)))
    return {e: walker.analyze(e) for e in entries}


# ---------------------------------------------------------------- objdump

PREFIXES = {"lock", "rep", "repz", "repnz", "repe", "repne", "data16", "cs", "ds", "bnd",
            "notrack", "addr32", "rex", "rex.W"}
_SYM = re.compile(r"^([0-9a-f]+) <(.+)>:$")
_INSN = re.compile(r"^\s+([0-9a-f]+):\s+(.*)$")
_TARGET = re.compile(r"([0-9a-f]+) <([^>+]+)(\+0x[0-9a-f]+)?>")


def disassemble(lib: Path) -> dict[str, list[tuple[int, str, str]]]:
    """symbol -> [(address, mnemonic, operands)]."""
    try:
        r = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)],
                           capture_output=True, text=True)
    except FileNotFoundError:
        raise ToolError("objdump not found (install binutils, or use --no-build)")
    if r.returncode != 0:
        raise ToolError(f"objdump {lib}: {r.stderr.strip()}")
    out: dict[str, list] = {}
    cur = None
    for line in r.stdout.splitlines():
        m = _SYM.match(line)
        if m:
            cur = out.setdefault(m.group(2), [])
            continue
        m = _INSN.match(line)
        if m and cur is not None:
            words = m.group(2).split()
            while words and words[0] in PREFIXES and len(words) > 1:
                words = words[1:]
            if words:
                cur.append((int(m.group(1), 16), words[0], " ".join(words[1:])))
    return out


def machine_metrics(insns: list[tuple[int, str, str]], symbol: str) -> dict:
    real = [(a, mn, ops) for a, mn, ops in insns if not mn.startswith("nop")
            and not (mn == "xchg" and ops == "%ax,%ax") and mn != "int3"]
    at = {a: i for i, (a, _, _) in enumerate(real)}

    def target(ops: str):
        m = _TARGET.search(ops)
        return (int(m.group(1), 16), m.group(2)) if m else (None, None)

    calls, tails, cond = set(), set(), 0
    for a, mn, ops in real:
        addr, name = target(ops)
        if mn.startswith("call"):
            calls.add(name or ops)
        elif mn.startswith("jmp") and (name != symbol):
            tails.add(name or ops)
        elif mn.startswith("j") and not mn.startswith("jmp"):
            cond += 1

    # shortest path (fewest instructions) from the entry to a ret
    prev = {0: None}
    queue, hit = deque([0] if real else []), None
    while queue:
        i = queue.popleft()
        a, mn, ops = real[i]
        if mn.startswith("ret"):
            hit = i
            break
        addr, name = target(ops)
        nxt = []
        if mn.startswith("jmp"):
            if name == symbol and addr in at:
                nxt = [at[addr]]
        elif mn.startswith("j"):
            nxt = [i + 1] + ([at[addr]] if name == symbol and addr in at else [])
        else:
            nxt = [i + 1]
        for j in nxt:
            if j < len(real) and j not in prev:
                prev[j] = i
                queue.append(j)
    hot = []
    while hit is not None:
        hot.append(real[hit])
        hit = prev[hit]
    hot.reverse()
    return {
        "instructions": len(real), "cond_jumps": cond,
        "calls": sorted(calls), "tail_calls": sorted(tails),
        "path_to_ret": {"instructions": len(hot),
                        "cond_jumps": sum(1 for _, mn, _ in hot
                                          if mn.startswith("j") and not mn.startswith("jmp")),
                        "calls": sum(1 for _, mn, _ in hot if mn.startswith("call"))}
        if hot else None,
    }


def analyze_binary(lib: Path, entries: list[str]) -> dict:
    syms = disassemble(lib)
    out = {}
    for e in entries:
        if e not in syms:
            raise ToolError(f"{lib}: no symbol '{e}'")
        out[e] = machine_metrics(syms[e], e)
    return out


# ---------------------------------------------------------------- the command

def inspect_spec(spec: str, entries: list[str], root: str | None, build: bool) -> dict:
    from .pipeline import build_spec, render_spec
    m, files = render_spec(spec)
    report = {"spec": spec, "name": m.name, "source": analyze_source(files, entries)}
    if build:
        with tempfile.TemporaryDirectory(prefix="hzinspect-root-") as tmp:
            try:
                built = build_spec(spec, root=root or tmp)
            except OSError as e:
                raise ToolError(f"cannot build into {root or tmp}: {e.strerror or e}")
            report["library"] = str(built.override) if root else f"libhz_{m.name}.so (temporary)"
            report["machine"] = analyze_binary(built.override, entries)
    return report


def _cell(v) -> str:
    if isinstance(v, list):
        return ", ".join(v) if v else "-"
    return "-" if v is None else str(v)


def text_report(r: dict) -> str:
    entries = list(r["source"])
    src = r["source"]
    rows = [
        ["branches (fast path, most/min)", *[f"{src[e]['branches']}/{src[e]['branches_min']}"
                                             for e in entries]],
        ["branch sites", *[src[e]["branch_sites"] for e in entries]],
        ["check branches (checks box)", *[src[e]["check_branches"] for e in entries]],
        ["loops", *[src[e]["loops"] for e in entries]],
        ["calls (leave the allocator)", *[_cell(src[e]["calls"]) for e in entries]],
        ["boundary exits", *[_cell(src[e]["exits"]) for e in entries]],
        ["boundary checks (exits)", *[_cell(src[e]["checks"]) + (
            f" ({', '.join(src[e]['check_exits'])})" if src[e]["check_exits"] else "")
            for e in entries]],
        ["TLS loads/stores", *[f"{src[e]['tls_loads']}/{src[e]['tls_stores']}" for e in entries]],
        ["atomics (in checks)", *[f"{src[e]['atomics']} ({src[e]['check_atomics']})"
                                  for e in entries]],
        ["stats updates", *[src[e]["stats_updates"] for e in entries]],
        ["ring/sll ops per range", *[" ".join(f"r{k}: {v['ring']}/{v['sll']}" for k, v in
                                              src[e]["tier_ops"].items()) or "-" for e in entries]],
        ["paths (fast/exit)", *[f"{src[e]['fast_paths']}/{src[e]['exit_paths']}" for e in entries]],
    ]
    lines = [f"{r['name']} ({r['spec']}): fast paths in the generated C (pycparser)"]
    lines += table(["", *entries], rows, right=set(), indent="  ")
    for e in entries:
        lines.append(f"  {e} inlines: {' > '.join(src[e]['inlined']) or '-'}")
    if "machine" in r:
        mc = r["machine"]
        rows = [
            ["instructions", *[mc[e]["instructions"] for e in entries]],
            ["conditional jumps", *[mc[e]["cond_jumps"] for e in entries]],
            ["calls", *[_cell(mc[e]["calls"]) for e in entries]],
            ["tail calls", *[_cell(mc[e]["tail_calls"]) for e in entries]],
            ["path to ret: instructions", *[_cell((mc[e]["path_to_ret"] or {}).get("instructions"))
                                            for e in entries]],
            ["path to ret: cond jumps", *[_cell((mc[e]["path_to_ret"] or {}).get("cond_jumps"))
                                          for e in entries]],
        ]
        lines += ["", f"{r['name']}: machine code of {r['library']} (objdump)"]
        lines += table(["", *entries], rows, right=set(), indent="  ")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--entry", action="append", metavar="NAME",
                   help="API function to inspect (repeatable; default: malloc and free)")
    p.add_argument("--root", default=None, help="build into this root (generated/, build/) "
                   "and keep it; default: a temporary directory")
    p.add_argument("--no-build", action="store_true", help="skip the compiled-library part")


@guarded("inspect")
def run(args) -> int:
    r = inspect_spec(args.spec, args.entry or ["malloc", "free"], args.root, not args.no_build)
    sys.stdout.write(json.dumps(r, indent=1) + "\n" if args.json else text_report(r))
    return 0
