// Shared argument checks for the ODIN ops (mmcv-style helper header).
#pragma once
#include <ATen/ATen.h>

#include "odin_error.h"

#define ODIN_CHECK_CPU(x) ODIN_CHECK(!(x).is_cuda(), #x " must be a CPU tensor")
#define ODIN_CHECK_CUDA(x) ODIN_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define ODIN_CHECK_CONTIGUOUS(x) ODIN_CHECK((x).is_contiguous(), #x " must be contiguous")
#define ODIN_CHECK_INPUT(x) ODIN_CHECK_CONTIGUOUS(x)
#define ODIN_CHECK_INT64(x) \
  ODIN_CHECK((x).scalar_type() == at::kLong, #x " must be int64, got ", (x).scalar_type())
#define ODIN_CHECK_SAME_DTYPE(x, y)                                                   \
  ODIN_CHECK((x).scalar_type() == (y).scalar_type(), #x " and " #y " must share a " \
              "dtype, got ", (x).scalar_type(), " and ", (y).scalar_type())
