# kvmnet: everything a fresh Debian 12 machine needs, as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
export KVMNET_CACHE ?= /var/cache/kvmnet
MODEL ?= nat
PYTEST_ARGS ?=

.PHONY: all deps toolchain venv image test check lint demo demo-down lab-up lab-down clean

all: test

deps:
	scripts/install-deps

toolchain:
	scripts/install-pulumi >/dev/null

# Two projects, both editable: the product (kvmnet_provider, distribution kvmnet) and the
# lab beside it (lab/kvmnet_lab, distribution kvmnet-lab, the `kvmnet` command).
$(VENV)/.stamp: pyproject.toml lab/pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kvmnet needs Python 3.11"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]' -e ./lab
	touch $@

venv: $(VENV)/.stamp

# The busybox test guest, the Debian bookworm guest (cloud-init) and the lab's VM host (the
# same Debian with what a kvmnet host needs); built once, then cached by recipe hash under
# KVMNET_CACHE.
image: deps
	scripts/build-guest-image >/dev/null
	scripts/build-debian-image >/dev/null
	scripts/build-debian-image --vmhost >/dev/null

# Lints only paths that exist. In a git checkout only the Python files git tracks (committed
# or staged) are linted, so a colleague's untracked work in progress cannot fail the build;
# outside git, everything under the paths. mypy checks both packages' files (tests: ruff only).
LINT_PATHS = $(wildcard kvmnet_provider lab tests bench stacks __main__.py)
lint: venv
	@set -e; \
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  py=$$(git ls-files -- $(LINT_PATHS) | grep '\.py$$' | while read -r f; do [ -e "$$f" ] && echo "$$f"; done); \
	else \
	  py=$$(find $(LINT_PATHS) -name '*.py' -not -path '*/__pycache__/*'); \
	fi; \
	pkg=$$(printf '%s\n' $$py | grep -E '^(kvmnet_provider|lab/kvmnet_lab)/' || true); \
	echo "ruff check ($$(echo $$py | wc -w) files), mypy ($$(echo $$pkg | wc -w) files)"; \
	$(VENV)/bin/ruff check $$py; \
	$(VENV)/bin/mypy $$pkg

# The slowest tests are listed at the end: where the suite's time goes, run after run.
# TEST_WORKERS pytest-xdist workers run the groups of conftest.py side by side (1: one after
# another, in one process).
TEST_WORKERS ?= 2
test: deps toolchain venv image lint
	$(VENV)/bin/pytest -q --durations=25 $(if $(filter 1,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

# The inner loop: lint and every test not marked e2e (no root, lab, engine or QEMU needed),
# in under two minutes. `make test` runs everything, e2e included.
check: lint
	$(VENV)/bin/pytest -q -m 'not e2e' $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

demo: deps toolchain venv image
	$(VENV)/bin/kvmnet demo up --model $(MODEL)

demo-down: venv
	$(VENV)/bin/kvmnet demo down

# Faults behind kvmnet's back on the NAT model (a guest or dnsmasq killed, the bridge or a tap
# deleted, kvmnet's rules flushed, SSH cut during refresh), each followed by refresh + up, which
# must converge; then destroy must leave the lab host as before. Bounded by SOAK_SECONDS.
.PHONY: soak
SOAK_SECONDS ?= 600
soak: deps toolchain venv image
	$(VENV)/bin/python -m kvmnet_lab.soak --seconds $(SOAK_SECONDS)

lab-up: deps venv
	$(VENV)/bin/kvmnet lab up

lab-down: venv
	$(VENV)/bin/kvmnet lab down

clean: demo-down
	rm -rf $(VENV)
