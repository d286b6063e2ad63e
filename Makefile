# The two commands of a fresh machine: `make demo` and `make test`. Each builds .venv first.
PYTHON ?= python3
# Two workers; tests marked xdist_group("celery_stack") share one worker and one Celery stack.
PYTEST_ARGS ?= -n 2 --dist loadgroup
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-intake clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mes-rollout demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy mes_rollout enrolment notifications migration validation console dags
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench-intake: $(STAMP)
	$(BIN)/mes-rollout bench-intake --rows 1000000

clean:
	rm -rf $(VENV) var
