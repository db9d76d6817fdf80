// Python bindings of the ODIN ops, dispatching by device (mmcv-style pybind.cpp). Every binding
// validates its arguments with the shared checks of odin_checks.h BEFORE it dispatches, so the
// CPU-only and the CUDA-enabled builds reject a bad argument with the same error.
#include <torch/extension.h>

#include "../common/odin_checks.h"
#include "../common/odin_ops.h"

namespace odin {
namespace {

#ifdef WITH_CUDA
#define ODIN_CUDA_CALL(name, ...) return name##_cuda(__VA_ARGS__)
#else
#define ODIN_CUDA_CALL(name, ...) ODIN_CHECK(false, #name ": the ODIN ops were built without CUDA")
#endif
#define ODIN_DISPATCH(name, first, ...)   \
  if ((first).is_cuda()) {                \
    ODIN_CUDA_CALL(name, __VA_ARGS__);    \
  }                                       \
  return name##_cpu(__VA_ARGS__)

std::tuple<at::Tensor, at::Tensor> knn_forward(const at::Tensor& query, const at::Tensor& support,
                                               const at::Tensor& query_offsets,
                                               const at::Tensor& support_offsets, int64_t k) {
  checks::knn(query, support, query_offsets, support_offsets, k);
  ODIN_DISPATCH(knn_forward, query, query, support, query_offsets, support_offsets, k);
}

at::Tensor knn_gather_dot_forward(const at::Tensor& q, const at::Tensor& key,
                                  const at::Tensor& idx, int64_t num_heads) {
  checks::gather_dot(q, key, idx, num_heads, nullptr);
  ODIN_DISPATCH(knn_gather_dot_forward, q, q, key, idx, num_heads);
}

std::tuple<at::Tensor, at::Tensor> knn_gather_dot_backward(const at::Tensor& grad,
                                                           const at::Tensor& q,
                                                           const at::Tensor& key,
                                                           const at::Tensor& idx,
                                                           int64_t num_heads) {
  checks::gather_dot(q, key, idx, num_heads, &grad);
  ODIN_DISPATCH(knn_gather_dot_backward, q, grad, q, key, idx, num_heads);
}

at::Tensor knn_gather_wsum_forward(const at::Tensor& attn, const at::Tensor& value,
                                   const at::Tensor& idx) {
  checks::gather_wsum(attn, value, idx, nullptr);
  ODIN_DISPATCH(knn_gather_wsum_forward, attn, attn, value, idx);
}

std::tuple<at::Tensor, at::Tensor> knn_gather_wsum_backward(const at::Tensor& grad,
                                                            const at::Tensor& attn,
                                                            const at::Tensor& value,
                                                            const at::Tensor& idx) {
  checks::gather_wsum(attn, value, idx, &grad);
  ODIN_DISPATCH(knn_gather_wsum_backward, attn, grad, attn, value, idx);
}

at::Tensor knn_pe_score_forward(const at::Tensor& r, const at::Tensor& rel, const at::Tensor& w1,
                                const at::Tensor& b1, const at::Tensor& lnw, const at::Tensor& lnb,
                                double eps) {
  checks::pe_score(r, rel, w1, b1, lnw, lnb, eps, nullptr);
  ODIN_DISPATCH(knn_pe_score_forward, r, r, rel, w1, b1, lnw, lnb, eps);
}

std::vector<at::Tensor> knn_pe_score_backward(const at::Tensor& grad, const at::Tensor& r,
                                              const at::Tensor& rel, const at::Tensor& w1,
                                              const at::Tensor& b1, const at::Tensor& lnw,
                                              const at::Tensor& lnb, double eps) {
  checks::pe_score(r, rel, w1, b1, lnw, lnb, eps, &grad);
  ODIN_DISPATCH(knn_pe_score_backward, r, grad, r, rel, w1, b1, lnw, lnb, eps);
}

// CPU only: for CUDA tensors the caller uses mmcv's own multi-scale deformable attention op
at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                  const at::Tensor& level_start_index,
                                  const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  checks::ms_deform_attn(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                         nullptr);
  ODIN_CHECK(!value.is_cuda(), "ms_deform_attn_forward: CPU kernel only (use mmcv's op on CUDA)");
  return ms_deform_attn_forward_cpu(value, spatial_shapes, level_start_index, sampling_loc,
                                    attn_weight);
}

std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value,
                                                const at::Tensor& spatial_shapes,
                                                const at::Tensor& level_start_index,
                                                const at::Tensor& sampling_loc,
                                                const at::Tensor& attn_weight,
                                                const at::Tensor& grad_output) {
  checks::ms_deform_attn(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                         &grad_output);
  ODIN_CHECK(!value.is_cuda(), "ms_deform_attn_backward: CPU kernel only (use mmcv's op on CUDA)");
  return ms_deform_attn_backward_cpu(value, spatial_shapes, level_start_index, sampling_loc,
                                     attn_weight, grad_output);
}

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace odin

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("knn_forward", &odin::knn_forward, "exact kNN within scenes -> (idx, dist2)",
        py::arg("query"), py::arg("support"), py::arg("query_offsets"),
        py::arg("support_offsets"), py::arg("k"));
  m.def("knn_gather_dot_forward", &odin::knn_gather_dot_forward, "per-head q . key[idx]",
        py::arg("q"), py::arg("key"), py::arg("idx"), py::arg("num_heads"));
  m.def("knn_gather_dot_backward", &odin::knn_gather_dot_backward, "backward of gather_dot",
        py::arg("grad"), py::arg("q"), py::arg("key"), py::arg("idx"), py::arg("num_heads"));
  m.def("knn_gather_wsum_forward", &odin::knn_gather_wsum_forward, "sum_j attn * value[idx]",
        py::arg("attn"), py::arg("value"), py::arg("idx"));
  m.def("knn_gather_wsum_backward", &odin::knn_gather_wsum_backward, "backward of gather_wsum",
        py::arg("grad"), py::arg("attn"), py::arg("value"), py::arg("idx"));
  m.def("knn_pe_score_forward", &odin::knn_pe_score_forward,
        "relative-position scores <r, ReLU(LN(W1 rel + b1))>", py::arg("r"), py::arg("rel"),
        py::arg("w1"), py::arg("b1"), py::arg("lnw"), py::arg("lnb"), py::arg("eps"));
  m.def("knn_pe_score_backward", &odin::knn_pe_score_backward, "backward of pe_score",
        py::arg("grad"), py::arg("r"), py::arg("rel"), py::arg("w1"), py::arg("b1"),
        py::arg("lnw"), py::arg("lnb"), py::arg("eps"));
  m.def("ms_deform_attn_forward", &odin::ms_deform_attn_forward,
        "multi-scale deformable attention (CPU)", py::arg("value"), py::arg("spatial_shapes"),
        py::arg("level_start_index"), py::arg("sampling_loc"), py::arg("attn_weight"));
  m.def("ms_deform_attn_backward", &odin::ms_deform_attn_backward,
        "backward of ms_deform_attn -> (grad_value, grad_sampling_loc, grad_attn_weight)",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_loc"), py::arg("attn_weight"), py::arg("grad_output"));
  m.def("with_cuda", &odin::with_cuda, "whether the CUDA kernels were compiled");
}
