# make run   : set up (venv + hzgen), build specs/default.yaml, run a real program on it
# make test  : set up, run the whole test suite
# make bench : set up (+ peers from apt), run the benchmark suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench generated clean

# Debian packages the tests run (redis: a real program under the allocator) and the benchmarks
# compare against and measure with (perf is used when installed, else valgrind); installed when
# missing and apt-get can (root), else the tests that need them skip and say so
TEST_PKGS  := redis-server redis-tools
BENCH_PKGS := $(TEST_PKGS) libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4 time valgrind
APT_GET    := DEBIAN_FRONTEND=noninteractive apt-get
define apt_install
	@dpkg -s $(1) >/dev/null 2>&1 || { command -v apt-get >/dev/null && \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq $(1) >/dev/null; } || \
	  echo "make: could not install $(1) (needs root and apt-get); continuing without"
endef

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

setup: $(STAMP)
	@command -v cc >/dev/null || { echo "make: need a C compiler: apt-get install gcc"; exit 1; }

run: setup
	@LIB=$$($(BIN)/hzgen build specs/default.yaml | tail -n 1) && \
	  echo "== LD_PRELOAD=$$LIB python3 (dicts, threads, sqlite3)" && \
	  LD_PRELOAD=$$LIB $(PYTHON) -c "import sqlite3,threading; d={i: str(i) for i in range(10**5)}; \
	    ts=[threading.Thread(target=lambda: [bytearray(i % 2000) for i in range(10**5)]) for _ in range(4)]; \
	    [t.start() for t in ts]; [t.join() for t in ts]; c=sqlite3.connect(':memory:'); \
	    c.execute('create table t(x)'); c.executemany('insert into t values(?)', ((i,) for i in range(10**4))); \
	    print('python on hzgen default: ok', len(d), c.execute('select sum(x) from t').fetchone()[0])"

test: setup
	$(call apt_install,$(TEST_PKGS))
	$(BIN)/python -m pytest -q -n 2 tests

bench: setup
	$(call apt_install,$(BENCH_PKGS))
	mkdir -p bench/results
	$(BIN)/hzgen bench --pairs 15 --json bench/results/latest.json --plot bench/results/latest.png
	$(BIN)/hzgen bench --workloads real --pairs 9 --json bench/results/real.json --plot bench/results/real.png

generated: setup    # after changing templates, specs or options: regenerate what is committed
	for s in specs/*.yaml; do $(BIN)/hzgen build $$s >/dev/null || exit 1; done
	$(BIN)/python -m hzgen.docs

clean:
	rm -rf build $(VENV)
