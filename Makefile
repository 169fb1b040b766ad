PYTHON ?= python

.PHONY: test install bench

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest -q --durations=10 tests

bench:
	$(PYTHON) benchmarks/train_throughput.py
