// CUDA kernels of the ODIN ops. Deliberately simple (one thread per output element, atomics for
// the scatter-style backward passes) so that they are correct by construction; they implement the
// same definitions as the CPU kernels and the PyTorch twins.
//  * kNN: brute force per scene like the official pointops2 kernel, one thread per query, sorted
//    insertion into a (dist2, idx) list of at most kMaxK entries; squared distances use the
//    round-to-nearest intrinsics so that no fused multiply-add changes them.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../../common/odin_ops.h"
#include "../../common/pytorch_cpp_helper.hpp"

// a failed launch raises std::runtime_error like every ODIN check (not c10::Error: odin_error.h)
#define ODIN_CUDA_LAUNCH_CHECK()                                                      \
  do {                                                                                \
    const cudaError_t odin_launch_err = cudaGetLastError();                           \
    ODIN_CHECK(odin_launch_err == cudaSuccess, "CUDA kernel launch failed: ",         \
               cudaGetErrorString(odin_launch_err));                                  \
  } while (0)

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
  ODIN_CHECK(table.dim() == 2 && idx.dim() == 2 && idx.size(0) == a.size(0), "bad shapes");
  if (idx.numel() > 0) {
    const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    ODIN_CHECK(lo >= 0 && hi < table.size(0), "neighbour index out of range [0, ",
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
  ODIN_CHECK(k >= 1 && k <= kMaxK, "CUDA knn supports 1 <= k <= ", kMaxK, ", got ", k);
  c10::cuda::CUDAGuard guard(query.device());
  const int64_t m = query.size(0);
  auto qo = query_offsets.to(query.device()).contiguous();
  auto so = support_offsets.to(query.device()).contiguous();
  auto idx = at::empty({m, k}, query.options().dtype(at::kLong));
  auto dist2 = at::empty({m, k}, query.options());
  if (m == 0) return {idx, dist2};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_forward_cuda", [&] {
    knn_kernel<scalar_t><<<blocks_for(m), kThreads, 0, stream>>>(
        query.data_ptr<scalar_t>(), support.data_ptr<scalar_t>(), qo.data_ptr<int64_t>(),
        so.data_ptr<int64_t>(), qo.numel(), m, k, idx.data_ptr<int64_t>(),
        dist2.data_ptr<scalar_t>());
  });
  ODIN_CUDA_LAUNCH_CHECK();
  return {idx, dist2};
}

at::Tensor knn_gather_dot_forward_cuda(const at::Tensor& q, const at::Tensor& key,
                                       const at::Tensor& idx, int64_t num_heads) {
  check_cuda_args(q, key, idx);
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t n = q.size(0), c = q.size(1), k = idx.size(1), h = num_heads;
  auto out = at::empty({n, h, k}, q.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_gather_dot_forward_cuda", [&] {
    gather_dot_fwd_kernel<scalar_t><<<blocks_for(n * h * k), kThreads, 0, stream>>>(
        q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h, k,
        out.data_ptr<scalar_t>());
  });
  ODIN_CUDA_LAUNCH_CHECK();
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
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_gather_dot_backward_cuda", [&] {
    gather_dot_bwd_q_kernel<scalar_t><<<blocks_for(n * c), kThreads, 0, stream>>>(
        grad.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, grad_q.data_ptr<scalar_t>());
    gather_scatter_kernel<scalar_t><<<blocks_for(n * k * c), kThreads, 0, stream>>>(
        grad.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h, k,
        grad_key.data_ptr<scalar_t>());
  });
  ODIN_CUDA_LAUNCH_CHECK();
  return {grad_q, grad_key};
}

at::Tensor knn_gather_wsum_forward_cuda(const at::Tensor& attn, const at::Tensor& value,
                                        const at::Tensor& idx) {
  check_cuda_args(attn, value, idx);
  c10::cuda::CUDAGuard guard(attn.device());
  const int64_t n = attn.size(0), h = attn.size(1), k = idx.size(1), c = value.size(1);
  auto out = at::zeros({n, c}, value.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "knn_gather_wsum_forward_cuda", [&] {
    gather_wsum_fwd_kernel<scalar_t><<<blocks_for(n * c), kThreads, 0, stream>>>(
        attn.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, out.data_ptr<scalar_t>());
  });
  ODIN_CUDA_LAUNCH_CHECK();
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
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "knn_gather_wsum_backward_cuda", [&] {
    // grad_attn[i,hh,j] = <grad[i, head hh], value[idx[i,j], head hh]>: the gather-dot forward
    gather_dot_fwd_kernel<scalar_t><<<blocks_for(n * h * k), kThreads, 0, stream>>>(
        grad.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, grad_attn.data_ptr<scalar_t>());
    gather_scatter_kernel<scalar_t><<<blocks_for(n * k * c), kThreads, 0, stream>>>(
        attn.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), n, c, h,
        k, grad_value.data_ptr<scalar_t>());
  });
  ODIN_CUDA_LAUNCH_CHECK();
  return {grad_attn, grad_value};
}

namespace {

constexpr int kPeThreads = 256;  // power of two (tree reductions)
constexpr int64_t kPeMaxC = 1024;

template <typename T>
__device__ T block_sum(T v, T* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const T out = red[0];
  __syncthreads();
  return out;
}

// Recomputes the relative-position hidden of pair (i, j) into shared memory; returns rstd.
// xhat[c] = normalised fc1 output, y[c] = LN output, p[c] = ReLU(y).
template <typename T>
__device__ T pe_hidden_block(const T* rel, const T* w1, const T* b1, const T* lnw, const T* lnb,
                             int64_t c, double eps, T* xhat, T* y, T* p, T* red) {
  const T rx = rel[0], ry = rel[1], rz = rel[2];
  T part = 0;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    const T z = w1[3 * ch] * rx + w1[3 * ch + 1] * ry + w1[3 * ch + 2] * rz + b1[ch];
    xhat[ch] = z;
    part += z;
  }
  const T mean = block_sum(part, red) / static_cast<T>(c);
  part = 0;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    const T dz = xhat[ch] - mean;
    part += dz * dz;
  }
  const T var = block_sum(part, red) / static_cast<T>(c);
  const T rstd = static_cast<T>(1.0 / sqrt(static_cast<double>(var) + eps));
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    const T xh = (xhat[ch] - mean) * rstd;
    xhat[ch] = xh;
    const T yy = xh * lnw[ch] + lnb[ch];
    y[ch] = yy;
    p[ch] = yy > 0 ? yy : T(0);
  }
  __syncthreads();
  return rstd;
}

// one block per pair (i, j)
template <typename T>
__global__ void pe_score_fwd_kernel(const T* __restrict__ r, const T* __restrict__ rel,
                                    const T* __restrict__ w1, const T* __restrict__ b1,
                                    const T* __restrict__ lnw, const T* __restrict__ lnb,
                                    double eps, int64_t n, int64_t h, int64_t k, int64_t c,
                                    T* __restrict__ out) {
  extern __shared__ unsigned char smem_raw[];
  T* xhat = reinterpret_cast<T*>(smem_raw);
  T* y = xhat + c;
  T* p = y + c;
  T* red = p + c;
  const int64_t pair = blockIdx.x, i = pair / k, j = pair % k;
  pe_hidden_block<T>(rel + 3 * pair, w1, b1, lnw, lnb, c, eps, xhat, y, p, red);
  for (int64_t hh = 0; hh < h; ++hh) {
    const T* rh = r + (hh * n + i) * c;
    T part = 0;
    for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) part += rh[ch] * p[ch];
    const T total = block_sum(part, red);
    if (threadIdx.x == 0) out[(i * h + hh) * k + j] = total;
  }
}

template <typename T>
__global__ void pe_score_bwd_kernel(const T* __restrict__ grad, const T* __restrict__ r,
                                    const T* __restrict__ rel, const T* __restrict__ w1,
                                    const T* __restrict__ b1, const T* __restrict__ lnw,
                                    const T* __restrict__ lnb, double eps, int64_t n, int64_t h,
                                    int64_t k, int64_t c, T* __restrict__ grad_r,
                                    double* __restrict__ grad_w1, double* __restrict__ grad_b1,
                                    double* __restrict__ grad_lnw,
                                    double* __restrict__ grad_lnb) {
  // the PE-parameter gradients sum one term per pair (N * k of them): they are accumulated in
  // float64, like the CPU kernel's, so that float32 rounding does not grow with N * k
  extern __shared__ unsigned char smem_raw[];
  T* xhat = reinterpret_cast<T*>(smem_raw);
  T* y = xhat + c;
  T* p = y + c;
  T* red = p + c;
  const int64_t pair = blockIdx.x, i = pair / k, j = pair % k;
  const T* rl = rel + 3 * pair;
  const T rstd = pe_hidden_block<T>(rl, w1, b1, lnw, lnb, c, eps, xhat, y, p, red);
  // dP, then ReLU / affine backward; keep dxhat in p[] (p is no longer needed afterwards)
  T part1 = 0, part2 = 0;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    T dp = 0;
    for (int64_t hh = 0; hh < h; ++hh) {
      const T g = grad[(i * h + hh) * k + j];
      atomicAdd(grad_r + (hh * n + i) * c + ch, g * p[ch]);
      dp += g * r[(hh * n + i) * c + ch];
    }
    const T dy = y[ch] > 0 ? dp : T(0);
    atomicAdd(grad_lnw + ch, static_cast<double>(dy * xhat[ch]));
    atomicAdd(grad_lnb + ch, static_cast<double>(dy));
    const T dxh = dy * lnw[ch];
    p[ch] = dxh;
    part1 += dxh;
    part2 += dxh * xhat[ch];
  }
  const T m1 = block_sum(part1, red) / static_cast<T>(c);
  const T m2 = block_sum(part2, red) / static_cast<T>(c);
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    const T dz = rstd * (p[ch] - m1 - xhat[ch] * m2);
    atomicAdd(grad_w1 + 3 * ch, static_cast<double>(dz * rl[0]));
    atomicAdd(grad_w1 + 3 * ch + 1, static_cast<double>(dz * rl[1]));
    atomicAdd(grad_w1 + 3 * ch + 2, static_cast<double>(dz * rl[2]));
    atomicAdd(grad_b1 + ch, static_cast<double>(dz));
  }
}

void check_pe_cuda_args(const at::Tensor& r, const at::Tensor& rel, const at::Tensor& w1,
                        const at::Tensor& b1, const at::Tensor& lnw, const at::Tensor& lnb) {
  for (const at::Tensor* t : {&r, &rel, &w1, &b1, &lnw, &lnb}) {
    ODIN_CHECK_CUDA(*t);
    ODIN_CHECK_INPUT(*t);
    ODIN_CHECK_SAME_DTYPE(*t, r);
  }
  ODIN_CHECK(r.dim() == 3 && rel.dim() == 3 && rel.size(0) == r.size(1) && rel.size(2) == 3,
              "expected r (H, N, C) and rel (N, k, 3)");
  const int64_t c = r.size(2);
  ODIN_CHECK(c <= kPeMaxC, "CUDA knn_pe_score supports C <= ", kPeMaxC, ", got ", c);
  ODIN_CHECK(w1.dim() == 2 && w1.size(0) == c && w1.size(1) == 3 && b1.numel() == c &&
                  lnw.numel() == c && lnb.numel() == c,
              "PE parameters must be (C, 3) and (C,)");
}

}  // namespace

at::Tensor knn_pe_score_forward_cuda(const at::Tensor& r, const at::Tensor& rel,
                                     const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& lnw, const at::Tensor& lnb, double eps) {
  check_pe_cuda_args(r, rel, w1, b1, lnw, lnb);
  c10::cuda::CUDAGuard guard(r.device());
  const int64_t h = r.size(0), n = r.size(1), c = r.size(2), k = rel.size(1);
  auto out = at::empty({n, h, k}, r.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "knn_pe_score_forward_cuda", [&] {
    const size_t smem = (3 * c + kPeThreads) * sizeof(scalar_t);
    pe_score_fwd_kernel<scalar_t><<<n * k, kPeThreads, smem, stream>>>(
        r.data_ptr<scalar_t>(), rel.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(),
        b1.data_ptr<scalar_t>(), lnw.data_ptr<scalar_t>(), lnb.data_ptr<scalar_t>(), eps, n, h,
        k, c, out.data_ptr<scalar_t>());
  });
  ODIN_CUDA_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> knn_pe_score_backward_cuda(const at::Tensor& grad, const at::Tensor& r,
                                                   const at::Tensor& rel, const at::Tensor& w1,
                                                   const at::Tensor& b1, const at::Tensor& lnw,
                                                   const at::Tensor& lnb, double eps) {
  check_pe_cuda_args(r, rel, w1, b1, lnw, lnb);
  ODIN_CHECK_CUDA(grad);
  ODIN_CHECK_INPUT(grad);
  c10::cuda::CUDAGuard guard(r.device());
  const int64_t h = r.size(0), n = r.size(1), c = r.size(2), k = rel.size(1);
  auto grad_r = at::zeros_like(r);
  const auto f64 = r.options().dtype(at::kDouble);  // float64 accumulators (see the kernel)
  auto grad_w1 = at::zeros(w1.sizes(), f64);
  auto grad_b1 = at::zeros(b1.sizes(), f64);
  auto grad_lnw = at::zeros(lnw.sizes(), f64);
  auto grad_lnb = at::zeros(lnb.sizes(), f64);
  if (n * k > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "knn_pe_score_backward_cuda", [&] {
      const size_t smem = (3 * c + kPeThreads) * sizeof(scalar_t);
      pe_score_bwd_kernel<scalar_t><<<n * k, kPeThreads, smem, stream>>>(
          grad.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), rel.data_ptr<scalar_t>(),
          w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(), lnw.data_ptr<scalar_t>(),
          lnb.data_ptr<scalar_t>(), eps, n, h, k, c, grad_r.data_ptr<scalar_t>(),
          grad_w1.data_ptr<double>(), grad_b1.data_ptr<double>(), grad_lnw.data_ptr<double>(),
          grad_lnb.data_ptr<double>());
    });
    ODIN_CUDA_LAUNCH_CHECK();
  }
  const auto dt = w1.scalar_type();
  return {grad_r, grad_w1.to(dt), grad_b1.to(dt), grad_lnw.to(dt), grad_lnb.to(dt)};
}

}  // namespace odin
