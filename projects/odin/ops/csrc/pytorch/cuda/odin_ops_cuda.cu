// CUDA kernels of the ODIN ops. Deliberately simple (one thread per output element, atomics for
// the scatter-style backward passes) so that they are correct by construction; they implement the
// same definitions as the CPU kernels and the PyTorch twins.
//  * kNN: brute force per scene like the official pointops2 kernel, one thread per query, sorted
//    insertion into a (dist2, idx) list of at most kMaxK entries; squared distances use the
//    round-to-nearest intrinsics so that no fused multiply-add changes them.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <tuple>

#include "../../common/odin_ops.h"
#include "../../common/pytorch_cpp_helper.hpp"

namespace odin {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxK = 128;

inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 30));
}

__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T>
__global__ void knn_kernel(const T* __restrict__ query, const T* __restrict__ support,
                           const int64_t* __restrict__ q_off, const int64_t* __restrict__ s_off,
                           int64_t num_scenes, int64_t m, int64_t k, int64_t* __restrict__ out_idx,
                           T* __restrict__ out_d2) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= m) return;
  // scene of query i: first b with q_off[b] > i
  int64_t lo = 0, hi = num_scenes - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (q_off[mid] > i) hi = mid; else lo = mid + 1;
  }
  const int64_t ss = lo == 0 ? 0 : s_off[lo - 1];
  const int64_t se = s_off[lo];
  T best_d[kMaxK];
  int64_t best_i[kMaxK];
  int64_t count = 0;
  const T qx = query[3 * i], qy = query[3 * i + 1], qz = query[3 * i + 2];
  for (int64_t j = ss; j < se; ++j) {
    const T dx = qx - support[3 * j];
    const T dy = qy - support[3 * j + 1];
    const T dz = qz - support[3 * j + 2];
    const T d = add_rn(add_rn(mul_rn(dx, dx), mul_rn(dy, dy)), mul_rn(dz, dz));
    int64_t pos;
    if (count == k) {
      if (!(d < best_d[k - 1] || (d == best_d[k - 1] && j < best_i[k - 1]))) continue;
      pos = k - 1;
    } else {
      pos = count++;
    }
    while (pos > 0 && (d < best_d[pos - 1] || (d == best_d[pos - 1] && j < best_i[pos - 1]))) {
      best_d[pos] = best_d[pos - 1];
      best_i[pos] = best_i[pos - 1];
      --pos;
    }
    best_d[pos] = d;
    best_i[pos] = j;
  }
  for (int64_t t = 0; t < k; ++t) {
    out_idx[i * k + t] = t < count ? best_i[t] : ss;
    out_d2[i * k + t] = t < count ? best_d[t] : static_cast<T>(1e10);
  }
}

template <typename T>
__global__ void gather_dot_fwd_kernel(const T* __restrict__ q, const T* __restrict__ key,
                                      const int64_t* __restrict__ idx, int64_t n, int64_t c,
                                      int64_t h, int64_t k, T* __restrict__ out) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // (i, hh, j)
  if (e >= n * h * k) return;
  const int64_t j = e % k, hh = (e / k) % h, i = e / (k * h), d = c / h;
  const T* qi = q + i * c + hh * d;
  const T* kr = key + idx[i * k + j] * c + hh * d;
  T acc = 0;
  for (int64_t t = 0; t < d; ++t) acc += qi[t] * kr[t];
  out[e] = acc;
}

template <typename T>
__global__ void gather_dot_bwd_q_kernel(const T* __restrict__ grad, const T* __restrict__ key,
                                        const int64_t* __restrict__ idx, int64_t n, int64_t c,
                                        int64_t h, int64_t k, T* __restrict__ grad_q) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // (i, ch)
  if (e >= n * c) return;
  const int64_t ch = e % c, i = e / c, hh = ch / (c / h);
  T acc = 0;
  for (int64_t j = 0; j < k; ++j) acc += grad[(i * h + hh) * k + j] * key[idx[i * k + j] * c + ch];
  grad_q[e] = acc;
}

template <typename T>
__global__ void gather_scatter_kernel(const T* __restrict__ weights, const T* __restrict__ rows,
                                      const int64_t* __restrict__ idx, int64_t n, int64_t c,
                                      int64_t h, int64_t k, T* __restrict__ table_grad) {
  // table_grad[idx[i,j], ch] += weights[i, head(ch), j] * rows[i, ch]
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // (i, j, ch)
  if (e >= n * k * c) return;
  const int64_t ch = e % c, j = (e / c) % k, i = e / (c * k), hh = ch / (c / h);
  atomicAdd(table_grad + idx[i * k + j] * c + ch, weights[(i * h + hh) * k + j] * rows[i * c + ch]);
}

template <typename T>
__global__ void gather_wsum_fwd_kernel(const T* __restrict__ attn, const T* __restrict__ value,
                                       const int64_t* __restrict__ idx, int64_t n, int64_t c,
                                       int64_t h, int64_t k, T* __restrict__ out) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // (i, ch)
  if (e >= n * c) return;
  const int64_t ch = e % c, i = e / c, hh = ch / (c / h);
  T acc = 0;
  for (int64_t j = 0; j < k; ++j) acc += attn[(i * h + hh) * k + j] * value[idx[i * k + j] * c + ch];
  out[e] = acc;
}

void check_cuda_args(const at::Tensor& a, const at::Tensor& table, const at::Tensor& idx) {
  ODIN_CHECK_CUDA(a);
  ODIN_CHECK_CUDA(table);
  ODIN_CHECK_CUDA(idx);
  ODIN_CHECK_INPUT(a);
  ODIN_CHECK_INPUT(table);
  ODIN_CHECK_INPUT(idx);
  ODIN_CHECK_INT64(idx);
  ODIN_CHECK_SAME_DTYPE(a, table);
  TORCH_CHECK(table.dim() == 2 && idx.dim() == 2 && idx.size(0) == a.size(0), "bad shapes");
  if (idx.numel() > 0) {
    const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < table.size(0), "neighbour index out of range [0, ",
                table.size(0), "): [", lo, ", ", hi, "]");
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> knn_forward_cuda(const at::Tensor& query,
                                                     const at::Tensor& support,
                                                     const at::Tensor& query_offsets,
                                                     const at::Tensor& support_offsets, int64_t k) {
  ODIN_CHECK_CUDA(query);
  ODIN_CHECK_CUDA(support);
  ODIN_CHECK_INPUT(query);
  ODIN_CHECK_INPUT(support);
  ODIN_CHECK_SAME_DTYPE(query, support);
  ODIN_CHECK_INT64(query_offsets);
  ODIN_CHECK_INT64(support_offsets);
  TORCH_CHECK(k >= 1 && k <= kMaxK, "CUDA knn supports 1 <= k <= ", kMaxK, ", got ", k);
  c10::cuda::CUDAGuard guard(query.device());
  const int64_t m = query.size(0);
  auto qo = query_offsets.to(query.device()).contiguous();
  auto so = support_offsets.to(query.device()).contiguous();
  auto idx = at::empty({m, k}, query.options().dtype(at::kLong));
  auto dist2 = at::empty({m, k}, query.options());
  if (m == 0) return {idx, dist2};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_forward_cuda", [&] {
    knn_kernel<scalar_t><<<blocks_for(m), kThreads, 0, stream>>>(
        query.data_ptr<scalar_t>(), support.data_ptr<scalar_t>(), qo.data_ptr<int64_t>(),
        so.data_ptr<int64_t>(), qo.numel(), m, k, idx.data_ptr<int64_t>(),
        dist2.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {idx, dist2};
}

at::Tensor knn_gather_dot_forward_cuda(const at::Tensor& q, const at::Tensor& key,
                                       const at::Tensor& idx, int64_t num_heads) {
  check_cuda_args(q, key, idx);
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t n = q.size(0), c = q.size(1), k = idx.size(1), h = num_heads;
  auto out = at::empty({n, h, k}, q.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_gather_dot_forward_cuda", [&] {
    gather_dot_fwd_kernel<scalar_t><<<blocks_for(n * h * k), kThreads, 0, stream>>>(
        q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h, k,
        out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> knn_gather_dot_backward_cuda(const at::Tensor& grad,
                                                                const at::Tensor& q,
                                                                const at::Tensor& key,
                                                                const at::Tensor& idx,
                                                                int64_t num_heads) {
  check_cuda_args(q, key, idx);
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t n = q.size(0), c = q.size(1), k = idx.size(1), h = num_heads;
  auto grad_q = at::zeros_like(q);
  auto grad_key = at::zeros_like(key);
  if (n == 0 || k == 0) return {grad_q, grad_key};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_gather_dot_backward_cuda", [&] {
    gather_dot_bwd_q_kernel<scalar_t><<<blocks_for(n * c), kThreads, 0, stream>>>(
        grad.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, grad_q.data_ptr<scalar_t>());
    gather_scatter_kernel<scalar_t><<<blocks_for(n * k * c), kThreads, 0, stream>>>(
        grad.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h, k,
        grad_key.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_q, grad_key};
}

at::Tensor knn_gather_wsum_forward_cuda(const at::Tensor& attn, const at::Tensor& value,
                                        const at::Tensor& idx) {
  check_cuda_args(attn, value, idx);
  c10::cuda::CUDAGuard guard(attn.device());
  const int64_t n = attn.size(0), h = attn.size(1), k = idx.size(1), c = value.size(1);
  auto out = at::zeros({n, c}, value.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "knn_gather_wsum_forward_cuda", [&] {
    gather_wsum_fwd_kernel<scalar_t><<<blocks_for(n * c), kThreads, 0, stream>>>(
        attn.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> knn_gather_wsum_backward_cuda(const at::Tensor& grad,
                                                                 const at::Tensor& attn,
                                                                 const at::Tensor& value,
                                                                 const at::Tensor& idx) {
  check_cuda_args(attn, value, idx);
  c10::cuda::CUDAGuard guard(attn.device());
  const int64_t n = attn.size(0), h = attn.size(1), k = idx.size(1), c = value.size(1);
  auto grad_attn = at::zeros_like(attn);
  auto grad_value = at::zeros_like(value);
  if (n == 0 || k == 0) return {grad_attn, grad_value};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "knn_gather_wsum_backward_cuda", [&] {
    // grad_attn[i,hh,j] = <grad[i, head hh], value[idx[i,j], head hh]>: the gather-dot forward
    gather_dot_fwd_kernel<scalar_t><<<blocks_for(n * h * k), kThreads, 0, stream>>>(
        grad.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, grad_attn.data_ptr<scalar_t>());
    gather_scatter_kernel<scalar_t><<<blocks_for(n * k * c), kThreads, 0, stream>>>(
        attn.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, grad_value.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_attn, grad_value};
}

}  // namespace odin
