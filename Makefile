# ODIN for MMDetection3D — developer entry points. Everything runs inside ./.venv, which
# tools/setup_env.sh creates (or reuses from the cache outside the checkout).
PY := .venv/bin/python
# Extra pytest arguments, e.g. PYTEST_ARGS='-k synthetic -s'.
PYTEST_ARGS ?=

.PHONY: install test test-ties lint ops demo gpu-check gpu-check-quick clean help

help:
	@echo "make install  set up .venv (cached mmcv wheel + venv outside the checkout), build our ops"
	@echo "make test     install, ruff check, and the CPU test suite (incl. a small learning test)"
	@echo "make test-ties  the model tests with every near-tie resolved the other way (CI runs it)"
	@echo "make lint     ruff check"
	@echo "make ops      (re)build the compiled ODIN ops"
	@echo "make demo     synthetic world -> convert -> train a small ODIN on CPU -> evaluate -> demo"
	@echo "              (outputs/demo; DEMO_ARGS='--threads 1 ...' are passed to the script)"
	@echo "make gpu-check WHEELHOUSE=DIR [OUT=DIR]   offline GPU check (install from DIR, build"
	@echo "              mmcv + our ops for the GPU, CUDA tests, benchmarks, training): one report"
	@echo "make gpu-check-quick WHEELHOUSE=DIR       the ops only (no mmcv), under 3 minutes"

install:
	bash tools/setup_env.sh

lint: install
	$(PY) -m ruff check .

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The tests that compare two computations of the model's output (bounded vs whole batch, chunked
# vs whole training step, ours vs the official goldens), again with every k-NN / attention-mask /
# instance-mask near-tie of the model resolved the other way (tests/tie_robust.py): they must not
# depend on this CPU's rounding. Instance masks are flipped in the model's own predictions only,
# so the goldens' recorded post-processing inputs (data) keep their exact decisions.
# TIES_ENV adds the other variants, e.g. TIES_ENV='ODIN_TEST_THREADS=2 ODIN_OPS_BACKEND=pytorch'.
TIE_TESTS ?= tests/test_models/test_odin_bounded.py tests/test_demo/test_demo_bounded.py \
	tests/test_datasets/test_odin_bounded_world.py tests/test_tie_robust.py \
	tests/test_models/test_odin_official_parity.py::test_parity_official_golden
TIES_ENV ?=
test-ties: install
	env ODIN_TEST_TIE_ORDER=reverse $(TIES_ENV) $(PY) -m pytest $(TIE_TESTS) $(PYTEST_ARGS)

ops: install
	$(PY) tools/build_ops.py --force

DEMO_ARGS ?=
demo: install
	$(PY) tools/run_synthetic_demo.py --work-dir outputs/demo $(DEMO_ARGS)

# The GPU machine's own python (with its CUDA torch); no venv, no network: see README "CUDA".
GPU_PY ?= python3
WHEELHOUSE ?= wheelhouse
OUT ?= outputs/gpu_check
GPU_CHECK_ARGS ?=
gpu-check:
	$(GPU_PY) tools/gpu_check.py --wheelhouse $(WHEELHOUSE) --out $(OUT) $(GPU_CHECK_ARGS)

gpu-check-quick:
	$(GPU_PY) tools/gpu_check.py --wheelhouse $(WHEELHOUSE) --out $(OUT) --quick $(GPU_CHECK_ARGS)

clean:
	rm -rf build .pytest_cache .ruff_cache
	find projects -name '*.so' -delete
