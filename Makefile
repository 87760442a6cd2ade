# Two commands for a fresh machine (see README): `make run` and `make test`. Both install what is missing first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test bench doctor

$(STAMP): requirements.txt requirements-nodeps.txt scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh
	touch $(STAMP)

install: $(STAMP)

run: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) app.py $(ARGS)

test: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/lint-imports --no-cache
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

bench: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m avatar bench --json

doctor: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m avatar doctor
