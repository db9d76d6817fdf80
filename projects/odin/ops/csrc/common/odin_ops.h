// Declarations of the ODIN op kernels (CPU always, CUDA when compiled with WITH_CUDA).
#pragma once
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace odin {

// kNN within scenes. query (M,3), support (N,3), offsets int64 (B) cumulative ends.
// Returns idx (M,k) int64 global support rows sorted by (dist2, idx), dist2 (M,k); scenes with
// n < k support points are padded with (first row of the scene, 1e10).
std::tuple<at::Tensor, at::Tensor> knn_forward_cpu(const at::Tensor& query,
                                                    const at::Tensor& support,
                                                    const at::Tensor& query_offsets,
                                                    const at::Tensor& support_offsets, int64_t k);

// scores (N,H,k): out[n,h,j] = <q[n, head h], key[idx[n,j], head h]>
at::Tensor knn_gather_dot_forward_cpu(const at::Tensor& q, const at::Tensor& key,
                                      const at::Tensor& idx, int64_t num_heads);
std::tuple<at::Tensor, at::Tensor> knn_gather_dot_backward_cpu(const at::Tensor& grad,
                                                               const at::Tensor& q,
                                                               const at::Tensor& key,
                                                               const at::Tensor& idx,
                                                               int64_t num_heads);
// out (N,C): out[n, head h] = sum_j attn[n,h,j] * value[idx[n,j], head h]
at::Tensor knn_gather_wsum_forward_cpu(const at::Tensor& attn, const at::Tensor& value,
                                       const at::Tensor& idx);
std::tuple<at::Tensor, at::Tensor> knn_gather_wsum_backward_cpu(const at::Tensor& grad,
                                                                const at::Tensor& attn,
                                                                const at::Tensor& value,
                                                                const at::Tensor& idx);

// Relative-position scores: out[n,h,j] = <r[h,n,:], ReLU(LN(W1 rel[n,j] + b1))>, r (H,N,C).
at::Tensor knn_pe_score_forward_cpu(const at::Tensor& r, const at::Tensor& rel,
                                    const at::Tensor& w1, const at::Tensor& b1,
                                    const at::Tensor& lnw, const at::Tensor& lnb, double eps);
// -> {grad_r, grad_w1, grad_b1, grad_lnw, grad_lnb}
std::vector<at::Tensor> knn_pe_score_backward_cpu(const at::Tensor& grad, const at::Tensor& r,
                                                  const at::Tensor& rel, const at::Tensor& w1,
                                                  const at::Tensor& b1, const at::Tensor& lnw,
                                                  const at::Tensor& lnb, double eps);

// Multi-scale deformable attention (mmcv's op signature; CPU only: on CUDA mmcv's own op is used).
// value (B,K,H,D), spatial_shapes int64 (L,2) as (h, w), level_start_index int64 (L),
// sampling_loc (B,Q,H,L,P,2) as (x, y) in [0, 1], attn_weight (B,Q,H,L,P) -> (B,Q,H*D).
at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight);
// -> {grad_value, grad_sampling_loc, grad_attn_weight}
std::vector<at::Tensor> ms_deform_attn_backward_cpu(const at::Tensor& value,
                                                    const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> knn_forward_cuda(const at::Tensor& query,
                                                     const at::Tensor& support,
                                                     const at::Tensor& query_offsets,
                                                     const at::Tensor& support_offsets, int64_t k);
at::Tensor knn_gather_dot_forward_cuda(const at::Tensor& q, const at::Tensor& key,
                                       const at::Tensor& idx, int64_t num_heads);
std::tuple<at::Tensor, at::Tensor> knn_gather_dot_backward_cuda(const at::Tensor& grad,
                                                                const at::Tensor& q,
                                                                const at::Tensor& key,
                                                                const at::Tensor& idx,
                                                                int64_t num_heads);
at::Tensor knn_gather_wsum_forward_cuda(const at::Tensor& attn, const at::Tensor& value,
                                        const at::Tensor& idx);
std::tuple<at::Tensor, at::Tensor> knn_gather_wsum_backward_cuda(const at::Tensor& grad,
                                                                 const at::Tensor& attn,
                                                                 const at::Tensor& value,
                                                                 const at::Tensor& idx);
at::Tensor knn_pe_score_forward_cuda(const at::Tensor& r, const at::Tensor& rel,
                                     const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& lnw, const at::Tensor& lnb, double eps);
std::vector<at::Tensor> knn_pe_score_backward_cuda(const at::Tensor& grad, const at::Tensor& r,
                                                   const at::Tensor& rel, const at::Tensor& w1,
                                                   const at::Tensor& b1, const at::Tensor& lnw,
                                                   const at::Tensor& lnb, double eps);
#endif

}  // namespace odin
