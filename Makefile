PYTHON ?= python

.PHONY: test install bench

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest -q tests

bench:
	$(PYTHON) benchmarks/train_throughput.py
