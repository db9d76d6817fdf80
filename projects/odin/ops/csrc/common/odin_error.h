// ODIN_CHECK: the argument check of the ODIN ops. Like TORCH_CHECK it formats its message with
// c10::str, but it throws std::runtime_error (pybind11 turns it into Python's RuntimeError) and
// never c10::Error. On the H200 machine of docs/benchmarks (torch 2.11+cu130, g++ 13.3), an
// extension built there died with SIGSEGV whenever a c10::Error (any TORCH_CHECK) passed through
// its frames, while std::runtime_error from the same extension was raised cleanly; torch's own
// errors were fine (probe: tools/gpu_check.py, docs/ops.md "Errors from the compiled ops").
#pragma once
#include <c10/util/StringUtil.h>

#include <stdexcept>

#define ODIN_CHECK(cond, ...)                                     \
  do {                                                            \
    if (!(cond)) {                                                \
      throw std::runtime_error(::c10::str(__VA_ARGS__));          \
    }                                                             \
  } while (0)
