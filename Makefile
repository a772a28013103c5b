# The two commands: `make run` (set up and start everything on embedded defaults)
# and `make test` (the whole suite, as CI runs it); `make test-fast` for the edit-test loop.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# `make cluster`: daphne workers behind the proxy on PORT, on ports PORT+1 … PORT+WORKERS.
WORKERS ?= 3
# Integration tests and `make test` use the real PostgreSQL; `make run` uses SQLite.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/wrenn

# `make bench`: the terminal benchmark (bench/README.md); BENCH_ARGS=--quick for a first look.
BENCH_ARGS ?=
# `make profile`: where daphne and the host agent spend their time; e.g. PROFILE_ARGS=--seconds=5
PROFILE_ARGS ?=

.PHONY: bench profile run cluster setup sdk-venvs system-packages protos check-protos check-migrations lint typecheck check test test-fast clean

run: setup system-packages
	HOST=$(HOST) PORT=$(PORT) PY=$(PY) scripts/run-local.sh

# WORKERS daphne processes behind HAProxy on HOST:PORT, sharing PostgreSQL (DATABASE_URL) and
# Redis (REDIS_URL, else one of the cluster's own); run-cluster.sh says what is missing when
# HAProxy or redis-server could not be installed.
cluster: setup system-packages
	@command -v haproxy >/dev/null || scripts/install-system-packages.sh haproxy || true
	@[ -n "$$REDIS_URL" ] || command -v redis-server >/dev/null || scripts/install-system-packages.sh redis-server || true
	HOST=$(HOST) PORT=$(PORT) WORKERS=$(WORKERS) PY=$(PY) scripts/run-cluster.sh

# Python and npm packages; re-runs only when their lists change.
setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# runc (with tini as each capsule's init) gives every capsule its own container, nftables and
# iproute2 its network, e2fsprogs its disk; bubblewrap is the fallback without them; python3-minimal
# gives capsules the /usr/bin/python3 their file calls run (hostagent/filehelper.py). Installed
# when this user can, skipped with a note otherwise (the agent then says loudly what is missing).
SYSTEM_PACKAGES := runc tini nftables iproute2 e2fsprogs bubblewrap python3-minimal vim
system-packages:
	@scripts/install-system-packages.sh --missing $(SYSTEM_PACKAGES) || \
		echo "note: some of $(SYSTEM_PACKAGES) could not be installed; capsules will be less isolated"

# The gRPC code and its typed stubs (mypy-protobuf), from protos/hostagent.proto.
protos: setup
	scripts/generate-protos.sh $(PY)

# Fails when protos/hostagent.proto and the checked-in generated code or stubs disagree.
check-protos: setup
	scripts/check-protos.sh $(PY)

# Fails when a model changed without its migration. Against an empty in-memory database: the
# check compares models with migrations, and must not need (or create) a real one.
check-migrations: setup
	DATABASE_URL=sqlite://:memory: $(PY) manage.py makemigrations --check --dry-run

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy .

check: lint typecheck check-protos check-migrations

# Every lane (tests/support/lanes.py says which test is in which), and the 20 slowest tests.
test: setup check sdk-venvs
	DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest --durations=20

# The checks, then the unit and agent lanes: no daphne, no Chromium.
test-fast: setup check
	DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest -m "unit or agent"

clean:
	rm -rf $(VENV) node_modules var .venv-sdk-*

# The terminal benchmark against terminado and a local PTY; results in bench/results/.
bench: setup system-packages .venv-peer/.installed $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

# py-spy samples daphne and the host agent during each workload; results in bench/results/profile.md.
profile: setup system-packages $(VENV)/.bench-installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m bench.profile $(PROFILE_ARGS)

# Wrenn's published Python SDKs, which tests/integration/test_sdk_clients.py drives against the
# stack: one virtualenv per version, outside the repository's import path (the SDK's package is
# named `wrenn`, like this repository's settings package). Each list pins the SDK and everything
# it imports, so it installs without resolving: --no-deps, and --ignore-requires-python because
# the SDK declares Python >= 3.13 but runs on 3.11.
SDK_VERSIONS := 0.2.0 0.3.0
sdk-venvs: $(foreach version,$(SDK_VERSIONS),.venv-sdk-$(version)/.installed)

.venv-sdk-%/.installed: tests/sdk/requirements-%.txt
	test -x .venv-sdk-$*/bin/python || $(PYTHON) -m venv .venv-sdk-$*
	.venv-sdk-$*/bin/python -m pip install --quiet --no-deps --ignore-requires-python -r $<
	touch $@

# terminado imports the standard-library pty, which this repository's pty/ app shadows:
# it gets a virtualenv of its own and runs outside the repository's import path.
.venv-peer/.installed: bench/peer/requirements.txt
	test -x .venv-peer/bin/python || $(PYTHON) -m venv .venv-peer
	.venv-peer/bin/python -m pip install --quiet -r bench/peer/requirements.txt
	touch $@

$(VENV)/.bench-installed: bench/requirements.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@
