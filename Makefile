# mailbot — two commands set everything up on a fresh machine:
#   make run    creates .venv, installs mailbot and starts the daemon on config/mailbot.toml
#   make test   creates .venv, installs mailbot with test extras and runs the whole suite

# The interpreter the venv is built from: the system's /usr/bin/python3 where it is 3.11 or
# newer and can make a venv (Debian 12's is built with profile-guided and link-time
# optimization and linked statically; mailbot spends 15-20 % less CPU per mail on it than
# on pyenv's default shared, unoptimized build: bench/README.md), else python3 from PATH.
# `make PYTHON=...` chooses another; an existing .venv is kept (`make clean` first). Asked
# only when the venv is made (`=`, not `:=`): every other make run starts no interpreter.
SYSTEM_PYTHON = $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; \
	sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/mailbot.toml
# The suite mostly waits on servers, subprocesses and fsync (about a third of two cores
# busy when run serially): two pytest-xdist workers cut its time by ~40 %. TEST_WORKERS=0:
# serial.
TEST_WORKERS ?= 2

.PHONY: run test venv bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/mailbot --log-level INFO run --config $(CONFIG)

test: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: venv
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) var .pytest_cache
