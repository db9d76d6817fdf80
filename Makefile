# ODIN for MMDetection3D — developer entry points. Everything runs inside ./.venv, which
# tools/setup_env.sh creates (or reuses from the cache outside the checkout).
PY := .venv/bin/python
# Extra pytest arguments, e.g. PYTEST_ARGS='-k synthetic -s'.
PYTEST_ARGS ?=

.PHONY: install test lint ops demo clean help

help:
	@echo "make install  set up .venv (cached mmcv wheel + venv outside the checkout), build our ops"
	@echo "make test     install, ruff check, and the CPU test suite (incl. a small learning test)"
	@echo "make lint     ruff check"
	@echo "make ops      (re)build the compiled ODIN ops"
	@echo "make demo     synthetic world -> convert -> train a small ODIN on CPU -> evaluate -> demo"
	@echo "              (outputs/demo; DEMO_ARGS='--threads 1 ...' are passed to the script)"

install:
	bash tools/setup_env.sh

lint: install
	$(PY) -m ruff check .

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest tests $(PYTEST_ARGS)

ops: install
	$(PY) tools/build_ops.py --force

DEMO_ARGS ?=
demo: install
	$(PY) tools/run_synthetic_demo.py --work-dir outputs/demo $(DEMO_ARGS)

clean:
	rm -rf build .pytest_cache .ruff_cache
	find projects -name '*.so' -delete
