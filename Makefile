# kvmnet: everything a fresh Debian 12 machine needs, as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
export KVMNET_CACHE ?= /var/cache/kvmnet
MODEL ?= nat
PYTEST_ARGS ?=

.PHONY: all deps toolchain venv image test lint demo demo-down lab-up lab-down clean

all: test

deps:
	scripts/install-deps

toolchain:
	scripts/install-pulumi >/dev/null

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kvmnet needs Python 3.11"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

image: deps
	scripts/build-guest-image >/dev/null

lint: venv
	$(VENV)/bin/ruff check kvmnet_provider tests bench __main__.py
	$(VENV)/bin/mypy

test: deps toolchain venv image lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

demo: deps toolchain venv image
	$(VENV)/bin/kvmnet demo up --model $(MODEL)

demo-down: venv
	$(VENV)/bin/kvmnet demo down

lab-up: deps venv
	$(VENV)/bin/kvmnet lab up

lab-down: venv
	$(VENV)/bin/kvmnet lab down

clean: demo-down
	rm -rf $(VENV)
