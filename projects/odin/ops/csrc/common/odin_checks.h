// Argument checks of the ODIN ops shared by the CPU and the CUDA kernels.
//
// pybind.cpp calls these BEFORE it dispatches by device, so that a bad argument raises the same
// error (a RuntimeError from ODIN_CHECK, odin_error.h) in a CPU-only and in a CUDA-enabled build, and no
// kernel ever sees an index outside its tensors. They check shapes, dtypes, devices (all tensors
// of a call on one device), contiguity, index ranges (neighbour indices, scene offsets, level
// starts and sizes) and, for the CUDA launch geometry, counts that a 1-D grid can cover. Index
// arithmetic inside the kernels is int64 throughout, so no numel-based offset can wrap.
//
// Value checks read small index tensors; for CUDA tensors they reduce on the device first
// (neighbour indices: one min/max) or copy the few entries to the host (offsets, levels).
#pragma once
#include <ATen/ATen.h>

#include "odin_error.h"

#include <cstdint>
#include <limits>

namespace odin {
namespace checks {

// The most elements one CUDA launch of our kernels covers: 2^30 blocks of 256 threads, one
// element per thread (kernels/odin_ops_cuda.cu). Larger problems must be split by the caller.
constexpr int64_t kMaxCudaElements = (int64_t{1} << 30) * 256;
// The most blocks of the one-block-per-pair kernels (gridDim.x is at most 2^31 - 1).
constexpr int64_t kMaxCudaBlocks = std::numeric_limits<int32_t>::max();

inline void same_device(const char* op, const at::Tensor& ref, const char* ref_name,
                        const at::Tensor& t, const char* name) {
  ODIN_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
              ref_name, " is on ", ref.device(), " (all tensors of a call on one device)");
}

inline void contiguous(const char* op, const at::Tensor& t, const char* name) {
  ODIN_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void floating(const char* op, const at::Tensor& t, const char* name) {
  ODIN_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void same_dtype(const char* op, const at::Tensor& ref, const char* ref_name,
                       const at::Tensor& t, const char* name) {
  ODIN_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", ref_name, " and ", name,
              " must share a dtype, got ", ref.scalar_type(), " and ", t.scalar_type());
}

inline void int64_index(const char* op, const at::Tensor& t, const char* name) {
  ODIN_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
              t.scalar_type());
}

// neighbour indices must address rows [0, rows) of their table
inline void index_range(const char* op, const at::Tensor& idx, int64_t rows) {
  if (idx.numel() == 0) return;
  const auto mm = at::aminmax(idx);
  const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
  ODIN_CHECK(lo >= 0 && hi < rows, op, ": neighbour index out of range [0, ", rows,
              "): min ", lo, ", max ", hi);
}

// (elements) covered by one CUDA launch; only meaningful for CUDA tensors
inline void cuda_elements(const char* op, const at::Tensor& ref, int64_t elements,
                          const char* what) {
  if (!ref.is_cuda()) return;
  ODIN_CHECK(elements <= kMaxCudaElements, op, ": ", what, " = ", elements,
              " exceeds the ", kMaxCudaElements,
              " elements one CUDA launch covers; split the input (in ODIN: the bounded path, "
              "model.test_cfg.view_chunk)");
}

// knn_forward(query (M,3), support (N,3), query_offsets (B), support_offsets (B), k)
inline void knn(const at::Tensor& query, const at::Tensor& support, const at::Tensor& q_off,
                const at::Tensor& s_off, int64_t k) {
  const char* op = "knn_forward";
  ODIN_CHECK(query.dim() == 2 && query.size(1) == 3, op, ": query must be (M, 3), got ",
              query.sizes());
  ODIN_CHECK(support.dim() == 2 && support.size(1) == 3, op, ": support must be (N, 3), got ",
              support.sizes());
  floating(op, query, "query");
  same_dtype(op, query, "query", support, "support");
  same_device(op, query, "query", support, "support");
  contiguous(op, query, "query");
  contiguous(op, support, "support");
  ODIN_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
  int64_index(op, q_off, "query_offsets");
  int64_index(op, s_off, "support_offsets");
  ODIN_CHECK(q_off.dim() == 1 && s_off.dim() == 1 && q_off.numel() == s_off.numel() &&
                  q_off.numel() >= 1,
              op, ": query_offsets and support_offsets must be 1-D with the same number (>= 1) "
              "of scenes, got ", q_off.sizes(), " and ", s_off.sizes());
  const auto qo = q_off.to(at::kCPU).contiguous();
  const auto so = s_off.to(at::kCPU).contiguous();
  const int64_t* qp = qo.data_ptr<int64_t>();
  const int64_t* sp = so.data_ptr<int64_t>();
  int64_t qs = 0, ss = 0;
  for (int64_t b = 0; b < qo.numel(); ++b) {
    ODIN_CHECK(qp[b] >= qs && sp[b] >= ss, op, ": offsets of scene ", b,
                " decrease (cumulative scene ends must be non-decreasing)");
    ODIN_CHECK(!(qp[b] > qs && sp[b] == ss), op, ": scene ", b,
                " has query points but no support point");
    qs = qp[b];
    ss = sp[b];
  }
  ODIN_CHECK(qs == query.size(0) && ss == support.size(0), op,
              ": the last offsets (", qs, ", ", ss, ") must equal the number of query and "
              "support points (", query.size(0), ", ", support.size(0), ")");
  cuda_elements(op, query, query.size(0), "query points");
}

// the per-voxel table (M, C) and the neighbour indices (N, k) of the gather kernels
inline void gather_table(const char* op, const at::Tensor& a, const char* a_name,
                         const at::Tensor& table, const at::Tensor& idx, int64_t heads) {
  floating(op, a, a_name);
  same_dtype(op, a, a_name, table, "table");
  same_device(op, a, a_name, table, "table");
  same_device(op, a, a_name, idx, "idx");
  contiguous(op, a, a_name);
  contiguous(op, table, "table");
  contiguous(op, idx, "idx");
  int64_index(op, idx, "idx");
  ODIN_CHECK(table.dim() == 2, op, ": the per-voxel table must be (M, C), got ", table.sizes());
  ODIN_CHECK(idx.dim() == 2 && idx.size(0) == a.size(0), op, ": idx must be (N, k) with N = ",
              a.size(0), ", got ", idx.sizes());
  ODIN_CHECK(heads >= 1 && table.size(1) % heads == 0, op, ": num_heads ", heads,
              " must be >= 1 and divide the channels ", table.size(1));
  index_range(op, idx, table.size(0));
}

inline void grad_like(const char* op, const at::Tensor& grad, const at::Tensor& ref,
                      const char* ref_name, at::IntArrayRef shape) {
  same_dtype(op, ref, ref_name, grad, "grad");
  same_device(op, ref, ref_name, grad, "grad");
  contiguous(op, grad, "grad");
  ODIN_CHECK(grad.sizes() == shape, op, ": grad must be ", shape, ", got ", grad.sizes());
}

// knn_gather_dot_{forward,backward}(q (N,C), key (M,C), idx (N,k), num_heads)
inline void gather_dot(const at::Tensor& q, const at::Tensor& key, const at::Tensor& idx,
                       int64_t heads, const at::Tensor* grad) {
  const char* op = grad ? "knn_gather_dot_backward" : "knn_gather_dot_forward";
  ODIN_CHECK(q.dim() == 2, op, ": q must be (N, C), got ", q.sizes());
  gather_table(op, q, "q", key, idx, heads);
  ODIN_CHECK(key.size(1) == q.size(1), op, ": q has ", q.size(1), " channels but key has ",
              key.size(1));
  if (grad) grad_like(op, *grad, q, "q", {q.size(0), heads, idx.size(1)});
  cuda_elements(op, q, idx.numel() * q.size(1), "N * k * C");
}

// knn_gather_wsum_{forward,backward}(attn (N,H,k), value (M,C), idx (N,k))
inline void gather_wsum(const at::Tensor& attn, const at::Tensor& value, const at::Tensor& idx,
                        const at::Tensor* grad) {
  const char* op = grad ? "knn_gather_wsum_backward" : "knn_gather_wsum_forward";
  ODIN_CHECK(attn.dim() == 3, op, ": attn must be (N, H, k), got ", attn.sizes());
  gather_table(op, attn, "attn", value, idx, attn.size(1));
  ODIN_CHECK(attn.size(2) == idx.size(1), op, ": attn must be (N, H, k) with k = ",
              idx.size(1), ", got ", attn.sizes());
  if (grad) grad_like(op, *grad, attn, "attn", {attn.size(0), value.size(1)});
  cuda_elements(op, attn, idx.numel() * value.size(1), "N * k * C");
}

// knn_pe_score_{forward,backward}(r (H,N,C), rel (N,k,3), w1 (C,3), b1, lnw, lnb (C), eps)
inline void pe_score(const at::Tensor& r, const at::Tensor& rel, const at::Tensor& w1,
                     const at::Tensor& b1, const at::Tensor& lnw, const at::Tensor& lnb,
                     double eps, const at::Tensor* grad) {
  const char* op = grad ? "knn_pe_score_backward" : "knn_pe_score_forward";
  floating(op, r, "r");
  const at::Tensor* ts[] = {&rel, &w1, &b1, &lnw, &lnb};
  const char* names[] = {"rel", "fc1_weight", "fc1_bias", "norm_weight", "norm_bias"};
  contiguous(op, r, "r");
  for (int i = 0; i < 5; ++i) {
    same_dtype(op, r, "r", *ts[i], names[i]);
    same_device(op, r, "r", *ts[i], names[i]);
    contiguous(op, *ts[i], names[i]);
  }
  ODIN_CHECK(r.dim() == 3, op, ": r must be (H, N, C), got ", r.sizes());
  ODIN_CHECK(rel.dim() == 3 && rel.size(0) == r.size(1) && rel.size(2) == 3, op,
              ": rel must be (N, k, 3) with N = ", r.size(1), ", got ", rel.sizes());
  const int64_t c = r.size(2);
  ODIN_CHECK(w1.dim() == 2 && w1.size(0) == c && w1.size(1) == 3 && b1.dim() == 1 &&
                  b1.numel() == c && lnw.dim() == 1 && lnw.numel() == c && lnb.dim() == 1 &&
                  lnb.numel() == c,
              op, ": PE parameters must be fc1_weight (", c, ", 3) and (", c, ",) vectors");
  ODIN_CHECK(eps >= 0.0 && eps < std::numeric_limits<double>::infinity(), op,
              ": eps must be finite and >= 0, got ", eps);
  if (grad) grad_like(op, *grad, r, "r", {r.size(1), r.size(0), rel.size(1)});
  if (r.is_cuda())
    ODIN_CHECK(rel.size(0) * rel.size(1) <= kMaxCudaBlocks, op, ": N * k = ",
                rel.size(0) * rel.size(1), " exceeds the ", kMaxCudaBlocks,
                " blocks of one CUDA launch; split the input (in ODIN: the bounded path, "
                "model.test_cfg.view_chunk)");
}

// ms_deform_attn_{forward,backward}: value (B,K,H,D), spatial_shapes (L,2), level_start_index (L),
// sampling_loc (B,Q,H,L,P,2), attn_weight (B,Q,H,L,P); every level inside the K value rows
inline void ms_deform_attn(const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                           const at::Tensor& attn_weight, const at::Tensor* grad) {
  const char* op = grad ? "ms_deform_attn_backward" : "ms_deform_attn_forward";
  floating(op, value, "value");
  same_dtype(op, value, "value", sampling_loc, "sampling_locations");
  same_dtype(op, value, "value", attn_weight, "attention_weights");
  const at::Tensor* ts[] = {&spatial_shapes, &level_start_index, &sampling_loc, &attn_weight};
  const char* names[] = {"value_spatial_shapes", "level_start_index", "sampling_locations",
                         "attention_weights"};
  contiguous(op, value, "value");
  for (int i = 0; i < 4; ++i) {
    same_device(op, value, "value", *ts[i], names[i]);
    contiguous(op, *ts[i], names[i]);
  }
  int64_index(op, spatial_shapes, "value_spatial_shapes");
  int64_index(op, level_start_index, "level_start_index");
  ODIN_CHECK(value.dim() == 4, op, ": value must be (bs, num_keys, num_heads, head_dims), got ",
              value.sizes());
  ODIN_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2, op,
              ": sampling_locations must be (bs, num_queries, num_heads, num_levels, "
              "num_points, 2), got ", sampling_loc.sizes());
  const int64_t b = value.size(0), k = value.size(1), h = value.size(2), d = value.size(3);
  const int64_t q = sampling_loc.size(1), l = sampling_loc.size(3), p = sampling_loc.size(4);
  ODIN_CHECK(sampling_loc.size(0) == b && sampling_loc.size(2) == h, op,
              ": sampling_locations batch/heads differ from value's");
  ODIN_CHECK(attn_weight.sizes() == at::IntArrayRef({b, q, h, l, p}), op,
              ": attention_weights must be (bs, num_queries, num_heads, num_levels, num_points) "
              "like sampling_locations, got ", attn_weight.sizes());
  ODIN_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == l &&
                  spatial_shapes.size(1) == 2,
              op, ": value_spatial_shapes must be (num_levels, 2) with num_levels = ", l);
  ODIN_CHECK(level_start_index.dim() == 1 && level_start_index.numel() == l, op,
              ": level_start_index must have ", l, " entries");
  const auto sh_t = spatial_shapes.to(at::kCPU).contiguous();
  const auto st_t = level_start_index.to(at::kCPU).contiguous();
  const int64_t* sh = sh_t.data_ptr<int64_t>();
  const int64_t* st = st_t.data_ptr<int64_t>();
  for (int64_t i = 0; i < l; ++i) {
    ODIN_CHECK(sh[2 * i] >= 1 && sh[2 * i + 1] >= 1, op, ": level ", i, " has an empty map (",
                sh[2 * i], " x ", sh[2 * i + 1], ")");
    // compare without forming a product or a sum that could overflow
    ODIN_CHECK(st[i] >= 0 && st[i] <= k && sh[2 * i] <= k && sh[2 * i + 1] <= k / sh[2 * i] &&
                    sh[2 * i] * sh[2 * i + 1] <= k - st[i],
                op, ": level ", i, " (start ", st[i], ", ", sh[2 * i], " x ", sh[2 * i + 1],
                ") lies outside the ", k, " value rows");
  }
  if (grad) grad_like(op, *grad, value, "value", {b, q, h * d});
}

}  // namespace checks
}  // namespace odin
