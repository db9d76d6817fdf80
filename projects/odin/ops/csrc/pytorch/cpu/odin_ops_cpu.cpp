// CPU kernels of the ODIN ops (OpenMP): exact kNN on a per-scene hash grid, and the kNN-attention
// gather primitives. Squared distances use dx*dx + dy*dy + dz*dz evaluated left to right without
// fused multiply-add (the build passes -ffp-contract=off), like the PyTorch twin.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../../common/odin_ops.h"
#include "../../common/pytorch_cpp_helper.hpp"

namespace odin {
namespace {

constexpr double kPadDist2 = 1e10;  // official pointops2 padding value
// below this many inner-loop iterations a parallel region costs more than it saves
constexpr int64_t kParallelWork = 1 << 16;

template <typename T>
inline T sq_dist(const T* a, const T* b) {
  T dx = a[0] - b[0];
  T d = dx * dx;
  T dy = a[1] - b[1];
  d = d + dy * dy;
  T dz = a[2] - b[2];
  return d + dz * dz;
}

// The k best (d2, idx) pairs seen so far, sorted ascending lexicographically.
template <typename T>
struct TopK {
  int64_t k, count;
  T* d2;
  int64_t* idx;
  TopK(int64_t k_, T* d2_, int64_t* idx_) : k(k_), count(0), d2(d2_), idx(idx_) {}
  static inline bool less(T da, int64_t ia, T db, int64_t ib) {
    return da < db || (da == db && ia < ib);
  }
  inline void push(T d, int64_t i) {
    int64_t pos;
    if (count == k) {
      if (!less(d, i, d2[k - 1], idx[k - 1])) return;
      pos = k - 1;
    } else {
      pos = count++;
    }
    while (pos > 0 && less(d, i, d2[pos - 1], idx[pos - 1])) {
      d2[pos] = d2[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    d2[pos] = d;
    idx[pos] = i;
  }
};

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Open-addressing hash map int64 key -> int64 value (value -1 = absent).
struct HashMap {
  std::vector<int64_t> keys, vals;
  uint64_t mask = 0;
  void reset(int64_t expected) {
    uint64_t cap = 16;
    while (cap < static_cast<uint64_t>(expected) * 2) cap <<= 1;
    keys.assign(cap, -1);
    vals.assign(cap, -1);
    mask = cap - 1;
  }
  // returns the slot of key (inserting it with value `v` if absent) and whether it was inserted
  inline std::pair<uint64_t, bool> insert(int64_t key, int64_t v) {
    uint64_t s = mix64(static_cast<uint64_t>(key)) & mask;
    while (true) {
      if (keys[s] == key) return {s, false};
      if (keys[s] == -1) {
        keys[s] = key;
        vals[s] = v;
        return {s, true};
      }
      s = (s + 1) & mask;
    }
  }
  inline int64_t find(int64_t key) const {
    uint64_t s = mix64(static_cast<uint64_t>(key)) & mask;
    while (true) {
      if (keys[s] == key) return vals[s];
      if (keys[s] == -1) return -1;
      s = (s + 1) & mask;
    }
  }
};

// Uniform grid over one scene's support points; cells stored sparsely in a hash map.
template <typename T>
struct SceneGrid {
  double lo[3];
  double cs = 1.0, inv_cs = 1.0;
  int64_t dims[3];
  int64_t ncells = 0;
  std::vector<int64_t> cell_begin;  // ncells + 1
  std::vector<T> pts;               // points sorted by cell, xyz interleaved
  std::vector<int64_t> gidx;        // global support row of every sorted point
  HashMap map;

  inline int64_t key_of(int64_t cx, int64_t cy, int64_t cz) const {
    return (cx * dims[1] + cy) * dims[2] + cz;
  }
  inline void cell_of(const T* p, int64_t* c) const {
    for (int a = 0; a < 3; ++a) {
      int64_t v = static_cast<int64_t>(std::floor((static_cast<double>(p[a]) - lo[a]) * inv_cs));
      c[a] = std::min<int64_t>(std::max<int64_t>(v, 0), dims[a] - 1);
    }
  }
  void set_cell_size(double c, const double* ext) {
    cs = c;
    inv_cs = 1.0 / c;
    for (int a = 0; a < 3; ++a) dims[a] = static_cast<int64_t>(std::floor(ext[a] * inv_cs)) + 1;
  }
  int64_t count_cells(const T* s, int64_t n, HashMap& tmp) {
    tmp.reset(n);
    int64_t occ = 0, c[3];
    for (int64_t i = 0; i < n; ++i) {
      cell_of(s + 3 * i, c);
      occ += tmp.insert(key_of(c[0], c[1], c[2]), 0).second ? 1 : 0;
    }
    return occ;
  }

  void build(const T* s, int64_t n, int64_t first_row, double target_per_cell) {
    double hi[3], ext[3];
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::numeric_limits<double>::infinity();
      hi[a] = -std::numeric_limits<double>::infinity();
    }
    for (int64_t i = 0; i < n; ++i)
      for (int a = 0; a < 3; ++a) {
        double v = static_cast<double>(s[3 * i + a]);
        lo[a] = std::min(lo[a], v);
        hi[a] = std::max(hi[a], v);
      }
    double max_ext = 0.0;
    for (int a = 0; a < 3; ++a) {
      ext[a] = hi[a] - lo[a];
      max_ext = std::max(max_ext, ext[a]);
    }
    if (max_ext <= 0.0) {
      set_cell_size(1.0, ext);
    } else {
      // start from a volume-filling guess, then adapt to the real occupancy (surfaces occupy
      // far fewer cells than volumes); the lower bound keeps keys inside int64
      const double min_cs = max_ext / static_cast<double>(1 << 20);
      double c = std::max(min_cs, max_ext / std::cbrt(std::max(1.0, n / target_per_cell)));
      HashMap tmp;
      for (int it = 0; it < 6; ++it) {
        set_cell_size(c, ext);
        double per_cell = static_cast<double>(n) / static_cast<double>(count_cells(s, n, tmp));
        double ratio = target_per_cell / per_cell;
        if (ratio > 0.6 && ratio < 1.6) break;
        c = std::max(min_cs, c * std::sqrt(std::min(16.0, std::max(1.0 / 16.0, ratio))));
      }
      set_cell_size(c, ext);
    }
    // counting sort of the points by cell
    map.reset(n);
    std::vector<int64_t> cell_id(n);
    std::vector<int64_t> counts;
    int64_t c3[3];
    for (int64_t i = 0; i < n; ++i) {
      cell_of(s + 3 * i, c3);
      auto ins = map.insert(key_of(c3[0], c3[1], c3[2]), static_cast<int64_t>(counts.size()));
      if (ins.second) counts.push_back(0);
      int64_t id = map.vals[ins.first];
      counts[id]++;
      cell_id[i] = id;
    }
    ncells = static_cast<int64_t>(counts.size());
    cell_begin.assign(ncells + 1, 0);
    for (int64_t c = 0; c < ncells; ++c) cell_begin[c + 1] = cell_begin[c] + counts[c];
    std::vector<int64_t> fill(cell_begin.begin(), cell_begin.end() - 1);
    pts.resize(3 * n);
    gidx.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      int64_t dst = fill[cell_id[i]]++;
      for (int a = 0; a < 3; ++a) pts[3 * dst + a] = s[3 * i + a];
      gidx[dst] = first_row + i;
    }
  }

  inline void scan_cell(int64_t cell, const T* q, TopK<T>& top) const {
    for (int64_t p = cell_begin[cell]; p < cell_begin[cell + 1]; ++p)
      top.push(sq_dist(q, &pts[3 * p]), gidx[p]);
  }

  // every support point of the scene, in cell order (a fresh search: `top` is emptied first)
  void scan_all(const T* q, TopK<T>& top) const {
    top.count = 0;
    for (int64_t c = 0; c < ncells; ++c) scan_cell(c, q, top);
  }

  // exact ring search around q's cell (a fresh search: `top` is emptied first). Returns false,
  // with `top` partly filled, when the rings would probe more than `probe_budget` cells (a query
  // far from every support point, e.g. a mesh vertex no view saw): the caller then searches a
  // coarser grid or scans every point.
  bool search(const T* q, TopK<T>& top, int64_t probe_budget) const {
    top.count = 0;
    int64_t cq[3];
    for (int a = 0; a < 3; ++a)
      cq[a] = static_cast<int64_t>(std::floor((static_cast<double>(q[a]) - lo[a]) * inv_cs));
    int64_t r0 = 0;
    for (int a = 0; a < 3; ++a)
      r0 = std::max(r0, std::max(-cq[a], cq[a] - (dims[a] - 1)));
    const int64_t want = std::min<int64_t>(top.k, static_cast<int64_t>(gidx.size()));
    int64_t probes = 0;
    for (int64_t r = r0;; ++r) {
      int64_t lo_c[3], hi_c[3];
      for (int a = 0; a < 3; ++a) {
        lo_c[a] = std::max<int64_t>(cq[a] - r, 0);
        hi_c[a] = std::min<int64_t>(cq[a] + r, dims[a] - 1);
      }
      for (int64_t x = lo_c[0]; x <= hi_c[0]; ++x) {
        const bool x_shell = (x == cq[0] - r) || (x == cq[0] + r);
        for (int64_t y = lo_c[1]; y <= hi_c[1]; ++y) {
          const bool xy_shell = x_shell || (y == cq[1] - r) || (y == cq[1] + r);
          if (xy_shell) {
            for (int64_t z = lo_c[2]; z <= hi_c[2]; ++z) {
              ++probes;
              int64_t cell = map.find(key_of(x, y, z));
              if (cell >= 0) scan_cell(cell, q, top);
            }
          } else {
            // interior column of the shell: only its two end cells (r > 0 here)
            for (int64_t z : {cq[2] - r, cq[2] + r}) {
              if (z < lo_c[2] || z > hi_c[2]) continue;
              ++probes;
              int64_t cell = map.find(key_of(x, y, z));
              if (cell >= 0) scan_cell(cell, q, top);
            }
          }
        }
      }
      // distance from q to the unsearched part of the grid
      double dmin = std::numeric_limits<double>::infinity();
      for (int a = 0; a < 3; ++a) {
        const double qa = static_cast<double>(q[a]);
        if (cq[a] - r > 0) dmin = std::min(dmin, qa - (lo[a] + (cq[a] - r) * cs));
        if (cq[a] + r < dims[a] - 1) dmin = std::min(dmin, (lo[a] + (cq[a] + r + 1) * cs) - qa);
      }
      if (std::isinf(dmin)) return true;  // the whole grid has been searched
      if (top.count >= want && dmin > 0 &&
          static_cast<double>(top.d2[want - 1]) * (1.0 + 1e-5) < dmin * dmin)
        return true;
      if (probes > probe_budget) return false;
    }
  }
};

// Queries of one scene: a fine grid (about k/2 points per cell) answers queries near the
// support; a query whose rings would probe many empty cells goes to a coarse grid (about 16x the
// points per cell, i.e. ~4x the cell size on surfaces), and only then to a scan of every point.
// Each level is exact (the ring search stops only when no unsearched cell can hold a closer
// point), and the top-k keeps (distance, index) order whatever order points arrive in, so the
// result does not depend on the level that answered.
template <typename T>
struct SceneIndex {
  static constexpr int64_t kCoarseMinPoints = 4096;  // below this a full scan is cheap enough
  static constexpr int64_t kFineBudget = 343;         // a 7x7x7 block of cells
  SceneGrid<T> fine, coarse;
  bool has_coarse = false;

  void build(const T* s, int64_t n, int64_t first_row, double per_cell) {
    fine.build(s, n, first_row, per_cell);
    has_coarse = n >= kCoarseMinPoints;
    if (has_coarse) coarse.build(s, n, first_row, 16.0 * per_cell);
  }

  void query(const T* q, TopK<T>& top) const {
    // probing more cells than the fine grid has costs more than scanning them all; a coarse
    // probe costs about what scanning one fine cell does
    const int64_t full = std::max<int64_t>(64, fine.ncells);
    if (fine.search(q, top, has_coarse ? std::min(full, kFineBudget) : full)) return;
    if (has_coarse && coarse.search(q, top, full)) return;
    fine.scan_all(q, top);
  }
};

template <typename T>
void knn_scene_brute(const T* q, int64_t nq, const T* s, int64_t ns, int64_t first_row, int64_t k,
                     int64_t* out_idx, T* out_d2) {
#pragma omp parallel for schedule(dynamic, 64) if (nq * ns > kParallelWork)
  for (int64_t i = 0; i < nq; ++i) {
    TopK<T> top(k, out_d2 + i * k, out_idx + i * k);
    for (int64_t j = 0; j < ns; ++j) top.push(sq_dist(q + 3 * i, s + 3 * j), first_row + j);
    for (int64_t t = top.count; t < k; ++t) {
      out_idx[i * k + t] = first_row;
      out_d2[i * k + t] = static_cast<T>(kPadDist2);
    }
  }
}

template <typename T>
void knn_scene_grid(const T* q, int64_t nq, const T* s, int64_t ns, int64_t first_row, int64_t k,
                    int64_t* out_idx, T* out_d2) {
  SceneIndex<T> grid;
  grid.build(s, ns, first_row, std::max(2.0, 0.5 * static_cast<double>(k)));
#pragma omp parallel for schedule(dynamic, 64) if (nq > 256)
  for (int64_t i = 0; i < nq; ++i) {
    TopK<T> top(k, out_d2 + i * k, out_idx + i * k);
    grid.query(q + 3 * i, top);
    for (int64_t t = top.count; t < k; ++t) {
      out_idx[i * k + t] = first_row;
      out_d2[i * k + t] = static_cast<T>(kPadDist2);
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> knn_forward_cpu(const at::Tensor& query,
                                                    const at::Tensor& support,
                                                    const at::Tensor& query_offsets,
                                                    const at::Tensor& support_offsets, int64_t k) {
  ODIN_CHECK_CPU(query);
  ODIN_CHECK_INPUT(query);
  ODIN_CHECK_INPUT(support);
  ODIN_CHECK_SAME_DTYPE(query, support);
  ODIN_CHECK_INT64(query_offsets);
  ODIN_CHECK_INT64(support_offsets);
  ODIN_CHECK(query.dim() == 2 && query.size(1) == 3, "query must be (M, 3)");
  ODIN_CHECK(support.dim() == 2 && support.size(1) == 3, "support must be (N, 3)");
  ODIN_CHECK(k >= 1, "k must be >= 1");
  ODIN_CHECK(query_offsets.numel() == support_offsets.numel(), "offset lengths differ");
  auto qo = query_offsets.contiguous();
  auto so = support_offsets.contiguous();
  const int64_t* qo_p = qo.data_ptr<int64_t>();
  const int64_t* so_p = so.data_ptr<int64_t>();
  const int64_t m = query.size(0);
  auto idx = at::empty({m, k}, query.options().dtype(at::kLong));
  auto dist2 = at::empty({m, k}, query.options());
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_forward_cpu", [&] {
    const scalar_t* q = query.data_ptr<scalar_t>();
    const scalar_t* s = support.data_ptr<scalar_t>();
    int64_t* oi = idx.data_ptr<int64_t>();
    scalar_t* od = dist2.data_ptr<scalar_t>();
    int64_t qs = 0, ss = 0;
    for (int64_t b = 0; b < qo.numel(); ++b) {
      const int64_t qe = qo_p[b], se = so_p[b];
      ODIN_CHECK(qe >= qs && se >= ss && qe <= m && se <= support.size(0), "bad offsets");
      const int64_t nq = qe - qs, ns = se - ss;
      if (nq > 0) {
        ODIN_CHECK(ns > 0, "scene ", b, " has query points but no support point");
        if (ns <= 256)
          knn_scene_brute<scalar_t>(q + 3 * qs, nq, s + 3 * ss, ns, ss, k, oi + qs * k,
                                    od + qs * k);
        else
          knn_scene_grid<scalar_t>(q + 3 * qs, nq, s + 3 * ss, ns, ss, k, oi + qs * k,
                                   od + qs * k);
      }
      qs = qe;
      ss = se;
    }
  });
  return {idx, dist2};
}

namespace {

void check_gather_args(const at::Tensor& a, const at::Tensor& table, const at::Tensor& idx) {
  ODIN_CHECK_CPU(a);
  ODIN_CHECK_CPU(table);
  ODIN_CHECK_INPUT(a);
  ODIN_CHECK_INPUT(table);
  ODIN_CHECK_INPUT(idx);
  ODIN_CHECK_INT64(idx);
  ODIN_CHECK_SAME_DTYPE(a, table);
  ODIN_CHECK(table.dim() == 2 && idx.dim() == 2 && idx.size(0) == a.size(0), "bad shapes");
  const int64_t* p = idx.data_ptr<int64_t>();
  const int64_t m = table.size(0);
  for (int64_t i = 0; i < idx.numel(); ++i)
    ODIN_CHECK(p[i] >= 0 && p[i] < m, "neighbour index ", p[i], " out of range [0, ", m, ")");
}

// [c0, c1): this thread's channel slice for scatter-style backward passes (no write conflicts)
inline void channel_slice(int64_t c, int64_t* c0, int64_t* c1) {
#ifdef _OPENMP
  const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
  const int64_t t = 0, nt = 1;
#endif
  *c0 = c * t / nt;
  *c1 = c * (t + 1) / nt;
}

}  // namespace

namespace {

template <typename T>
void gather_dot_fwd_impl(const T* qp, const T* kp, const int64_t* ip, T* op, int64_t n, int64_t c,
                         int64_t h, int64_t k) {
  const int64_t d = c / h;
#pragma omp parallel for schedule(static) if (n * k * c > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T* qi = qp + i * c;
    for (int64_t j = 0; j < k; ++j) {
      const T* kr = kp + ip[i * k + j] * c;
      for (int64_t hh = 0; hh < h; ++hh) {
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t t = 0; t < d; ++t) acc += qi[hh * d + t] * kr[hh * d + t];
        op[(i * h + hh) * k + j] = acc;
      }
    }
  }
}

// out[i, head hh] += sum_j w[i,hh,j] * table[idx[i,j], head hh]   (out pre-zeroed)
template <typename T>
void gather_wsum_impl(const T* wp, const T* tp, const int64_t* ip, T* op, int64_t n, int64_t c,
                      int64_t h, int64_t k) {
  const int64_t d = c / h;
#pragma omp parallel for schedule(static) if (n * k * c > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    T* oi = op + i * c;
    for (int64_t j = 0; j < k; ++j) {
      const T* tr = tp + ip[i * k + j] * c;
      for (int64_t hh = 0; hh < h; ++hh) {
        const T w = wp[(i * h + hh) * k + j];
#pragma omp simd
        for (int64_t t = 0; t < d; ++t) oi[hh * d + t] += w * tr[hh * d + t];
      }
    }
  }
}

// table_grad[idx[i,j], ch] += w[i, head(ch), j] * rows[i, ch]; threads own channel slices
template <typename T>
void scatter_rows_impl(const T* wp, const T* rp, const int64_t* ip, T* gp, int64_t n, int64_t c,
                       int64_t h, int64_t k) {
  const int64_t d = c / h;
#pragma omp parallel if (n * k * c > kParallelWork)
  {
    int64_t c0, c1;
    channel_slice(c, &c0, &c1);
    for (int64_t i = 0; i < n && c0 < c1; ++i) {
      const T* ri = rp + i * c;
      for (int64_t j = 0; j < k; ++j) {
        T* gr = gp + ip[i * k + j] * c;
        for (int64_t ch = c0; ch < c1; ++ch) gr[ch] += wp[(i * h + ch / d) * k + j] * ri[ch];
      }
    }
  }
}

}  // namespace

at::Tensor knn_gather_dot_forward_cpu(const at::Tensor& q, const at::Tensor& key,
                                      const at::Tensor& idx, int64_t num_heads) {
  check_gather_args(q, key, idx);
  const int64_t n = q.size(0), c = q.size(1), k = idx.size(1), h = num_heads;
  ODIN_CHECK(key.size(1) == c && c % h == 0, "channel mismatch");
  auto out = at::empty({n, h, k}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_gather_dot_forward_cpu", [&] {
    gather_dot_fwd_impl<scalar_t>(q.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
                                  idx.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), n, c, h, k);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> knn_gather_dot_backward_cpu(const at::Tensor& grad,
                                                               const at::Tensor& q,
                                                               const at::Tensor& key,
                                                               const at::Tensor& idx,
                                                               int64_t num_heads) {
  check_gather_args(q, key, idx);
  ODIN_CHECK_INPUT(grad);
  const int64_t n = q.size(0), c = q.size(1), k = idx.size(1), h = num_heads;
  ODIN_CHECK(grad.numel() == n * h * k, "grad must be (N, H, k)");
  auto grad_q = at::zeros_like(q);
  auto grad_key = at::zeros_like(key);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "knn_gather_dot_backward_cpu", [&] {
    gather_wsum_impl<scalar_t>(grad.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
                               idx.data_ptr<int64_t>(), grad_q.data_ptr<scalar_t>(), n, c, h, k);
    scatter_rows_impl<scalar_t>(grad.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
                                idx.data_ptr<int64_t>(), grad_key.data_ptr<scalar_t>(), n, c, h,
                                k);
  });
  return {grad_q, grad_key};
}

at::Tensor knn_gather_wsum_forward_cpu(const at::Tensor& attn, const at::Tensor& value,
                                       const at::Tensor& idx) {
  check_gather_args(attn, value, idx);
  const int64_t n = attn.size(0), h = attn.size(1), k = idx.size(1), c = value.size(1);
  ODIN_CHECK(attn.dim() == 3 && attn.size(2) == k && c % h == 0, "shape mismatch");
  auto out = at::zeros({n, c}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "knn_gather_wsum_forward_cpu", [&] {
    gather_wsum_impl<scalar_t>(attn.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(),
                               idx.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), n, c, h, k);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> knn_gather_wsum_backward_cpu(const at::Tensor& grad,
                                                                const at::Tensor& attn,
                                                                const at::Tensor& value,
                                                                const at::Tensor& idx) {
  check_gather_args(attn, value, idx);
  ODIN_CHECK_INPUT(grad);
  const int64_t n = attn.size(0), h = attn.size(1), k = idx.size(1), c = value.size(1);
  ODIN_CHECK(grad.numel() == n * c, "grad must be (N, C)");
  auto grad_attn = at::empty_like(attn);
  auto grad_value = at::zeros_like(value);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "knn_gather_wsum_backward_cpu", [&] {
    // grad_attn[i,hh,j] = <grad[i, head hh], value[idx[i,j], head hh]>
    gather_dot_fwd_impl<scalar_t>(grad.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(),
                                  idx.data_ptr<int64_t>(), grad_attn.data_ptr<scalar_t>(), n, c,
                                  h, k);
    scatter_rows_impl<scalar_t>(attn.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                idx.data_ptr<int64_t>(), grad_value.data_ptr<scalar_t>(), n, c,
                                h, k);
  });
  return {grad_attn, grad_value};
}

namespace {

// Relative-position hidden of one pair: z = W1 rel + b1, LayerNorm, ReLU. Fills xhat (normalised
// z), y (after the affine LN) and p (after ReLU); returns rstd.
// w1t is the TRANSPOSED fc1 weight (3, C).
template <typename T>
inline T pe_hidden(const T* rel, const T* w1t, const T* b1, const T* lnw, const T* lnb, int64_t c,
                   double eps, T* xhat, T* y, T* p) {
  const T rx = rel[0], ry = rel[1], rz = rel[2];
  const T *wx = w1t, *wy = w1t + c, *wz = w1t + 2 * c;
  T mean = 0;
#pragma omp simd reduction(+ : mean)
  for (int64_t ch = 0; ch < c; ++ch) {
    const T z = wx[ch] * rx + wy[ch] * ry + wz[ch] * rz + b1[ch];
    xhat[ch] = z;
    mean += z;
  }
  mean /= static_cast<T>(c);
  T var = 0;
#pragma omp simd reduction(+ : var)
  for (int64_t ch = 0; ch < c; ++ch) {
    const T dz = xhat[ch] - mean;
    var += dz * dz;
  }
  var /= static_cast<T>(c);
  const T rstd = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var) + eps));
#pragma omp simd
  for (int64_t ch = 0; ch < c; ++ch) {
    const T xh = (xhat[ch] - mean) * rstd;
    xhat[ch] = xh;
    const T yy = xh * lnw[ch] + lnb[ch];
    y[ch] = yy;
    p[ch] = yy > 0 ? yy : T(0);
  }
  return rstd;
}

template <typename T>
void pe_score_fwd_impl(const T* r, const T* rel, const T* w1t, const T* b1, const T* lnw,
                       const T* lnb, double eps, T* out, int64_t n, int64_t h, int64_t k,
                       int64_t c) {
#pragma omp parallel if (n * k * c > kParallelWork)
  {
    std::vector<T> buf(3 * c);
    T *xhat = buf.data(), *y = xhat + c, *p = y + c;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        pe_hidden<T>(rel + 3 * (i * k + j), w1t, b1, lnw, lnb, c, eps, xhat, y, p);
        for (int64_t hh = 0; hh < h; ++hh) {
          const T* rh = r + (hh * n + i) * c;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t ch = 0; ch < c; ++ch) acc += rh[ch] * p[ch];
          out[(i * h + hh) * k + j] = acc;
        }
      }
    }
  }
}

template <typename T>
void pe_score_bwd_impl(const T* grad, const T* r, const T* rel, const T* w1t, const T* b1,
                       const T* lnw, const T* lnb, double eps, T* grad_r, T* grad_w1t, T* grad_b1,
                       T* grad_lnw, T* grad_lnb, int64_t n, int64_t h, int64_t k, int64_t c) {
#ifdef _OPENMP
  const int nt = omp_get_max_threads();
#else
  const int nt = 1;
#endif
  // Per-thread parameter-gradient accumulators [w1t (3c) | b1 | lnw | lnb], reduced at the end.
  // They sum one term per pair (N k terms, e.g. 16k per 2048-voxel chunk) and are kept in double:
  // a float32 running sum over that many terms loses digits (its error grows with the number of
  // terms), where the official formulation's autograd reduces the same terms with pairwise sums.
  std::vector<double> acc(static_cast<size_t>(nt) * 6 * c, 0.0);
#pragma omp parallel num_threads(nt) if (n * k * c > kParallelWork)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num();
#else
    const int t = 0;
#endif
    double* a_wx = acc.data() + static_cast<size_t>(t) * 6 * c;
    double *a_wy = a_wx + c, *a_wz = a_wy + c, *a_b1 = a_wz + c, *a_lnw = a_b1 + c,
           *a_lnb = a_lnw + c;
    std::vector<T> buf(5 * c);
    T *xhat = buf.data(), *y = xhat + c, *p = y + c, *dp = p + c, *dx = dp + c;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        const T* rl = rel + 3 * (i * k + j);
        const T rstd = pe_hidden<T>(rl, w1t, b1, lnw, lnb, c, eps, xhat, y, p);
        std::fill(dp, dp + c, T(0));
        for (int64_t hh = 0; hh < h; ++hh) {
          const T g = grad[(i * h + hh) * k + j];
          const T* rh = r + (hh * n + i) * c;
          T* grh = grad_r + (hh * n + i) * c;
#pragma omp simd
          for (int64_t ch = 0; ch < c; ++ch) {
            grh[ch] += g * p[ch];
            dp[ch] += g * rh[ch];
          }
        }
        // ReLU, LayerNorm affine and normalisation backward
        T m1 = 0, m2 = 0;
#pragma omp simd reduction(+ : m1, m2)
        for (int64_t ch = 0; ch < c; ++ch) {
          const T dy = y[ch] > 0 ? dp[ch] : T(0);
          a_lnw[ch] += dy * xhat[ch];
          a_lnb[ch] += dy;
          const T dxh = dy * lnw[ch];
          dx[ch] = dxh;
          m1 += dxh;
          m2 += dxh * xhat[ch];
        }
        m1 /= static_cast<T>(c);
        m2 /= static_cast<T>(c);
        const T rx = rl[0], ry = rl[1], rz = rl[2];
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch) {
          const T dz = rstd * (dx[ch] - m1 - xhat[ch] * m2);
          a_wx[ch] += dz * rx;
          a_wy[ch] += dz * ry;
          a_wz[ch] += dz * rz;
          a_b1[ch] += dz;
        }
      }
    }
  }
  for (int64_t e = 0; e < 6 * c; ++e) {
    double sum = 0;
    for (int t = 0; t < nt; ++t) sum += acc[static_cast<size_t>(t) * 6 * c + e];
    const T total = static_cast<T>(sum);
    if (e < 3 * c) grad_w1t[e] = total;
    else if (e < 4 * c) grad_b1[e - 3 * c] = total;
    else if (e < 5 * c) grad_lnw[e - 4 * c] = total;
    else grad_lnb[e - 5 * c] = total;
  }
}

void check_pe_args(const at::Tensor& r, const at::Tensor& rel, const at::Tensor& w1,
                   const at::Tensor& b1, const at::Tensor& lnw, const at::Tensor& lnb) {
  for (const at::Tensor* t : {&r, &rel, &w1, &b1, &lnw, &lnb}) {
    ODIN_CHECK_CPU(*t);
    ODIN_CHECK_INPUT(*t);
    ODIN_CHECK_SAME_DTYPE(*t, r);
  }
  ODIN_CHECK(r.dim() == 3 && rel.dim() == 3 && rel.size(0) == r.size(1) && rel.size(2) == 3,
              "expected r (H, N, C) and rel (N, k, 3)");
  const int64_t c = r.size(2);
  ODIN_CHECK(w1.dim() == 2 && w1.size(0) == c && w1.size(1) == 3 && b1.numel() == c &&
                  lnw.numel() == c && lnb.numel() == c,
              "PE parameters must be (C, 3) and (C,)");
}

}  // namespace

at::Tensor knn_pe_score_forward_cpu(const at::Tensor& r, const at::Tensor& rel,
                                    const at::Tensor& w1, const at::Tensor& b1,
                                    const at::Tensor& lnw, const at::Tensor& lnb, double eps) {
  check_pe_args(r, rel, w1, b1, lnw, lnb);
  const int64_t h = r.size(0), n = r.size(1), c = r.size(2), k = rel.size(1);
  auto out = at::empty({n, h, k}, r.options());
  auto w1t = w1.t().contiguous();
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "knn_pe_score_forward_cpu", [&] {
    pe_score_fwd_impl<scalar_t>(r.data_ptr<scalar_t>(), rel.data_ptr<scalar_t>(),
                                w1t.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                                lnw.data_ptr<scalar_t>(), lnb.data_ptr<scalar_t>(), eps,
                                out.data_ptr<scalar_t>(), n, h, k, c);
  });
  return out;
}

std::vector<at::Tensor> knn_pe_score_backward_cpu(const at::Tensor& grad, const at::Tensor& r,
                                                  const at::Tensor& rel, const at::Tensor& w1,
                                                  const at::Tensor& b1, const at::Tensor& lnw,
                                                  const at::Tensor& lnb, double eps) {
  check_pe_args(r, rel, w1, b1, lnw, lnb);
  ODIN_CHECK_INPUT(grad);
  const int64_t h = r.size(0), n = r.size(1), c = r.size(2), k = rel.size(1);
  ODIN_CHECK(grad.numel() == n * h * k, "grad must be (N, H, k)");
  auto grad_r = at::zeros_like(r);
  auto w1t = w1.t().contiguous();
  auto grad_w1t = at::empty_like(w1t);
  auto grad_b1 = at::empty_like(b1);
  auto grad_lnw = at::empty_like(lnw);
  auto grad_lnb = at::empty_like(lnb);
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "knn_pe_score_backward_cpu", [&] {
    pe_score_bwd_impl<scalar_t>(
        grad.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), rel.data_ptr<scalar_t>(),
        w1t.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(), lnw.data_ptr<scalar_t>(),
        lnb.data_ptr<scalar_t>(), eps, grad_r.data_ptr<scalar_t>(), grad_w1t.data_ptr<scalar_t>(),
        grad_b1.data_ptr<scalar_t>(), grad_lnw.data_ptr<scalar_t>(), grad_lnb.data_ptr<scalar_t>(),
        n, h, k, c);
  });
  return {grad_r, grad_w1t.t().contiguous(), grad_b1, grad_lnw, grad_lnb};
}

}  // namespace odin
