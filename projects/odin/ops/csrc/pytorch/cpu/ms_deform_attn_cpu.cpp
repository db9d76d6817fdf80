// Multi-scale deformable attention on the CPU (OpenMP), with mmcv's op signature.
//
// value (B, K, H, D): the K = sum_l h_l * w_l keys of all levels, level l starting at row
// level_start_index[l] and laid out row-major (y * w_l + x). For every query q, head h, level l
// and point p the location loc (x, y) in [0, 1] (normalised to the level map) is sampled
// bilinearly as torch's grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)
// does: pixel coordinates ix = x * w_l - 0.5, iy = y * h_l - 0.5, the four neighbouring pixels
// weighted by the fractional parts, pixels outside the map contributing zero. The D-vector of
// query q, head h is sum_{l,p} attn[q,h,l,p] * sample(l, p).
//
// Forward: OpenMP over (batch, query) rows, each thread writes only its own output row.
// Backward: OpenMP over (batch, head) pairs: the gradient rows value[b, :, h, :] of one pair are
// written by one thread only (no atomics, deterministic), and so are the pair's location and
// weight gradients. The build passes -ffp-contract=off (no fused multiply-add contraction).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../../common/odin_ops.h"
#include "../../common/pytorch_cpp_helper.hpp"

namespace odin {
namespace {

// below this many multiply-adds a parallel region costs more than it saves
constexpr int64_t kMsdaParallelWork = 1 << 15;

// Calls f(row, w, dw_dix, dw_diy) for each of the (up to) four pixels that location (lx, ly)
// reads on an h x w map: its row within the level map (y * w + x), its bilinear weight and the
// derivatives of that weight with respect to the pixel coordinates ix and iy. Pixels off the map
// are skipped (zero padding); outside [-1, w) x [-1, h) none is touched (NaN fails the test too).
template <typename T, typename F>
inline void for_each_tap(T lx, T ly, int64_t h, int64_t w, F&& f) {
  // Pixel coordinates in double: for float32 locations (24-bit mantissa) near a pixel centre and
  // maps narrower than 2^29 pixels, x * w - 0.5 is exact, so a location next to a pixel centre
  // (where the weights' derivatives jump) always lands on its exact side, on any CPU. (float32 grid_sample rounds
  // ((2x - 1) + 1) * (w / 2) - 0.5, with or without fused multiply-add depending on the CPU.)
  const double ix = static_cast<double>(lx) * static_cast<double>(w) - 0.5;
  const double iy = static_cast<double>(ly) * static_cast<double>(h) - 0.5;
  if (!(ix >= -1.0 && iy >= -1.0 && ix < static_cast<double>(w) && iy < static_cast<double>(h)))
    return;
  const double fx0 = std::floor(ix), fy0 = std::floor(iy);
  const int64_t x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
  const T ax = static_cast<T>(ix - fx0), ay = static_cast<T>(iy - fy0);  // fractional parts
  const T bx = static_cast<T>(1.0 - (ix - fx0)), by = static_cast<T>(1.0 - (iy - fy0));
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < w, y0_in = y0 >= 0, y1_in = y0 + 1 < h;
  const int64_t row = y0 * w + x0;
  if (y0_in && x0_in) f(row, bx * by, -by, -bx);
  if (y0_in && x1_in) f(row + 1, ax * by, by, -ax);
  if (y1_in && x0_in) f(row + w, bx * ay, -ay, bx);
  if (y1_in && x1_in) f(row + w + 1, ax * ay, ay, ax);
}

struct Dims {
  int64_t b, k, h, d, q, l, p;
};

// kD > 0: the head size as a compile-time constant (unrolled loops); 0: s.d at run time
template <typename T, int64_t kD>
void msda_forward_impl(const T* value, const int64_t* shapes, const int64_t* start, const T* loc,
                       const T* attn, T* out, const Dims& s) {
  const int64_t d = kD > 0 ? kD : s.d;
  const int64_t stride = s.h * d;  // between value rows
  const int64_t rows = s.b * s.q;
  const int64_t work = rows * s.h * s.l * s.p * 4 * d;
#pragma omp parallel for schedule(static) if (work > kMsdaParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / s.q;
    for (int64_t hh = 0; hh < s.h; ++hh) {
      T* acc = out + (r * s.h + hh) * d;
      for (int64_t t = 0; t < d; ++t) acc[t] = T(0);
      const int64_t lp0 = (r * s.h + hh) * s.l * s.p;  // first (level, point) of this head
      for (int64_t ll = 0; ll < s.l; ++ll) {
        const int64_t mh = shapes[2 * ll], mw = shapes[2 * ll + 1];
        const T* vbase = value + ((b * s.k + start[ll]) * s.h + hh) * d;
        for (int64_t pp = 0; pp < s.p; ++pp) {
          const int64_t i = lp0 + ll * s.p + pp;
          const T a = attn[i];
          for_each_tap<T>(loc[2 * i], loc[2 * i + 1], mh, mw, [&](int64_t row, T w, T, T) {
            const T* v = vbase + row * stride;
            const T c = a * w;
#pragma omp simd
            for (int64_t t = 0; t < d; ++t) acc[t] += c * v[t];
          });
        }
      }
    }
  }
}

template <typename T, int64_t kD>
void msda_backward_impl(const T* value, const int64_t* shapes, const int64_t* start, const T* loc,
                        const T* attn, const T* grad_out, T* grad_value, T* grad_loc,
                        T* grad_attn, const Dims& s) {
  const int64_t d = kD > 0 ? kD : s.d;
  const int64_t stride = s.h * d;
  const int64_t pairs = s.b * s.h;
  const int64_t work = s.b * s.q * s.h * s.l * s.p * 12 * d;
#pragma omp parallel for schedule(dynamic, 1) if (work > kMsdaParallelWork)
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t b = pair / s.h, hh = pair % s.h;
    for (int64_t qq = 0; qq < s.q; ++qq) {
      const int64_t r = b * s.q + qq;
      const T* g = grad_out + (r * s.h + hh) * d;
      const int64_t lp0 = (r * s.h + hh) * s.l * s.p;
      for (int64_t ll = 0; ll < s.l; ++ll) {
        const int64_t mh = shapes[2 * ll], mw = shapes[2 * ll + 1];
        const int64_t off = ((b * s.k + start[ll]) * s.h + hh) * d;
        const T* vbase = value + off;
        T* gvbase = grad_value + off;
        for (int64_t pp = 0; pp < s.p; ++pp) {
          const int64_t i = lp0 + ll * s.p + pp;
          const T a = attn[i];
          T ga = 0, gx = 0, gy = 0;
          for_each_tap<T>(loc[2 * i], loc[2 * i + 1], mh, mw,
                          [&](int64_t row, T w, T dw_dix, T dw_diy) {
                            const T* v = vbase + row * stride;
                            T* gv = gvbase + row * stride;
                            const T c = a * w;
                            T dot = 0;
#pragma omp simd reduction(+ : dot)
                            for (int64_t t = 0; t < d; ++t) {
                              dot += g[t] * v[t];
                              gv[t] += c * g[t];
                            }
                            ga += w * dot;
                            gx += dw_dix * dot;
                            gy += dw_diy * dot;
                          });
          grad_attn[i] = ga;
          // d ix / d x = w_l, d iy / d y = h_l
          grad_loc[2 * i] = a * gx * static_cast<T>(mw);
          grad_loc[2 * i + 1] = a * gy * static_cast<T>(mh);
        }
      }
    }
  }
}

// Runs body.template operator()<kD>() with the head size as a constant for common sizes.
#define ODIN_MSDA_DISPATCH_D(d, KD, ...)   \
  [&] {                                    \
    switch (d) {                           \
      case 32: {                           \
        constexpr int64_t KD = 32;         \
        return __VA_ARGS__();              \
      }                                    \
      case 64: {                           \
        constexpr int64_t KD = 64;         \
        return __VA_ARGS__();              \
      }                                    \
      case 16: {                           \
        constexpr int64_t KD = 16;         \
        return __VA_ARGS__();              \
      }                                    \
      case 8: {                            \
        constexpr int64_t KD = 8;          \
        return __VA_ARGS__();              \
      }                                    \
      default: {                           \
        constexpr int64_t KD = 0;          \
        return __VA_ARGS__();              \
      }                                    \
    }                                      \
  }()

Dims check_msda_args(const at::Tensor& value, const at::Tensor& spatial_shapes,
                     const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                     const at::Tensor& attn_weight) {
  for (const at::Tensor* t :
       {&value, &spatial_shapes, &level_start_index, &sampling_loc, &attn_weight}) {
    ODIN_CHECK_CPU(*t);
    ODIN_CHECK_INPUT(*t);
  }
  ODIN_CHECK_INT64(spatial_shapes);
  ODIN_CHECK_INT64(level_start_index);
  ODIN_CHECK_SAME_DTYPE(value, sampling_loc);
  ODIN_CHECK_SAME_DTYPE(value, attn_weight);
  ODIN_CHECK(value.dim() == 4, "value must be (bs, num_keys, num_heads, head_dims)");
  ODIN_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "sampling_locations must be (bs, num_queries, num_heads, num_levels, "
              "num_points, 2)");
  Dims s{value.size(0),        value.size(1),        value.size(2),       value.size(3),
         sampling_loc.size(1), sampling_loc.size(3), sampling_loc.size(4)};
  ODIN_CHECK(sampling_loc.size(0) == s.b && sampling_loc.size(2) == s.h,
              "sampling_locations batch/heads differ from value's");
  ODIN_CHECK(attn_weight.dim() == 5 && attn_weight.size(0) == s.b && attn_weight.size(1) == s.q &&
                  attn_weight.size(2) == s.h && attn_weight.size(3) == s.l &&
                  attn_weight.size(4) == s.p,
              "attention_weights must be (bs, num_queries, num_heads, num_levels, num_points) "
              "like sampling_locations");
  ODIN_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == s.l &&
                  spatial_shapes.size(1) == 2,
              "value_spatial_shapes must be (num_levels, 2) with num_levels = ", s.l);
  ODIN_CHECK(level_start_index.numel() == s.l, "level_start_index must have ", s.l,
              " entries");
  const int64_t* sh = spatial_shapes.data_ptr<int64_t>();
  const int64_t* st = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < s.l; ++l) {
    ODIN_CHECK(sh[2 * l] >= 1 && sh[2 * l + 1] >= 1, "level ", l, " has an empty map (",
                sh[2 * l], " x ", sh[2 * l + 1], ")");
    ODIN_CHECK(st[l] >= 0 && st[l] + sh[2 * l] * sh[2 * l + 1] <= s.k, "level ", l,
                " (start ", st[l], ", ", sh[2 * l], " x ", sh[2 * l + 1],
                ") lies outside the ", s.k, " value rows");
  }
  return s;
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight) {
  const Dims s =
      check_msda_args(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  auto out = at::empty({s.b, s.q, s.h * s.d}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    ODIN_MSDA_DISPATCH_D(s.d, KD, [&] {
      msda_forward_impl<scalar_t, KD>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
          attn_weight.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), s);
    });
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward_cpu(const at::Tensor& value,
                                                    const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output) {
  const Dims s =
      check_msda_args(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  ODIN_CHECK_CPU(grad_output);
  ODIN_CHECK_INPUT(grad_output);
  ODIN_CHECK_SAME_DTYPE(value, grad_output);
  ODIN_CHECK(grad_output.numel() == s.b * s.q * s.h * s.d,
              "grad_output must be (bs, num_queries, num_heads * head_dims)");
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(sampling_loc);
  auto grad_attn = at::zeros_like(attn_weight);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    ODIN_MSDA_DISPATCH_D(s.d, KD, [&] {
      msda_backward_impl<scalar_t, KD>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
          attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
          grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
          grad_attn.data_ptr<scalar_t>(), s);
    });
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace odin
