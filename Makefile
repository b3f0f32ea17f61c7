# mschedule: `make run` starts a local stack, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv run test lint unit clean browser postgres dist wheelhouse

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "mschedule needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: venv
	@PYTHON=$(PY) scripts/run_local.sh

lint: venv
	$(VENV)/bin/ruff check .

unit: venv
	$(PY) -m pytest tests/unit -q

# four test files at a time (pytest-xdist; a file's tests stay together, in order, on one worker)
TEST_WORKERS ?= 4
test: venv lint browser postgres
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Debian's Chromium for the console's browser tests; without root or apt they skip and say why
browser:
	@if ! [ -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	        || echo "apt could not install chromium: the browser tests will skip"; \
	fi

# Debian's PostgreSQL for the tests of a master on PostgreSQL (each starts a throwaway cluster, tests/pg.py); without
# root or apt they skip and say why
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the PostgreSQL tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	        || echo "apt could not install postgresql: the PostgreSQL tests will skip"; \
	fi

# the wheel (pyproject.toml): dist/mschedule-<version>-py3-none-any.whl; docs/install.md installs it
dist: venv
	rm -rf build dist/mschedule-*.whl
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps -w dist .

# the wheel and every dependency, for hosts without internet (install-agent.sh --find-links)
wheelhouse: dist
	$(PY) -m pip wheel --quiet --disable-pip-version-check -w dist/wheelhouse dist/mschedule-*.whl

clean:
	rm -rf $(VENV) .state .run .pytest_cache .ruff_cache artifacts build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

BENCH_VENV := bench/.venv-ansible
$(BENCH_VENV)/.installed: bench/requirements-peer.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements-peer.txt
	touch $@

.PHONY: bench
bench: venv $(BENCH_VENV)/.installed
	$(PY) bench/run.py $(BENCH_ARGS)

.PHONY: bench-console
bench-console: venv browser
	$(PY) bench/console.py $(BENCH_ARGS)

.PHONY: reliability
reliability: venv
	$(PY) scripts/reliability_report.py

.PHONY: bench-storm
bench-storm: venv
	$(PY) bench/storm.py --write $(BENCH_ARGS)

# 1,000 to 10,000 agents: steady state, a task on all, kill -9 under them, 3,000 real agents (bench/scale.py)
.PHONY: bench-scale
bench-scale: venv $(BENCH_VENV)/.installed
	$(PY) bench/scale.py --write $(BENCH_ARGS)

# idle long polls at 10,000 agents: stretched renewal, fixed 20 s, or the poll as the heartbeat (bench/polls.py)
.PHONY: bench-polls
bench-polls: venv
	$(PY) bench/polls.py --write $(BENCH_ARGS)

# schedules (10,000 idle; 100 firing each minute on a fast clock) and webhooks (300 at once, half to a slow receiver)
.PHONY: bench-schedules
bench-schedules: venv
	$(PY) bench/schedules.py --write $(BENCH_ARGS)

# PostgreSQL (fsync on) beside SQLite: latency, fan-out 100, throughput; failover of two masters, kill -9 and SIGSTOP
.PHONY: bench-ha
bench-ha: venv postgres
	$(PY) bench/ha.py --write $(BENCH_ARGS)

# live output: 1,000 real agents printing a line a second, with and without a console and the CLI following
.PHONY: bench-live
bench-live: venv browser
	$(PY) bench/live.py --write $(BENCH_ARGS)

# the master alone under simulated agents (bench/fleet.py); BENCH_ARGS="--agents 5000 --procs 4"
.PHONY: bench-fleet
bench-fleet: venv
	$(PY) bench/fleet.py $(BENCH_ARGS)
