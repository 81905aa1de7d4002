# The two commands of the README. Both are idempotent: they (re)create .venv only when needed.
.PHONY: setup run test test-all bench
setup:
	bash scripts/setup.sh

run: setup
	bash scripts/run.sh

test: setup
	bash scripts/test.sh

test-all: setup
	bash scripts/test.sh -m ""
