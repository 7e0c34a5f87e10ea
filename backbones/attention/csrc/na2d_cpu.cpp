// Neighborhood attention 2-D on CPU: the unfused QK(+RPB) and AV operators with
// their backward passes, vectorised over the head dimension and parallelised
// with at::parallel_for.
//
// Layouts (all contiguous):
//   q, k, v, out, dout     [B, H, W, heads, D]
//   logits / attn          [B, H, W, heads, K]   K = kr * kc, slot t = tr * kc + tc
//   rpb                    [heads, 2kr-1, 2kc-1]
// The neighborhoods come from the per-axis tables built in indices.py:
//   start[L]        first key of a query's window (key t = start + t * dilation)
//   rpb_start[L]    bias index of the first key
//   inv_query[L,M]  queries that attend to a key, inv_slot[L,M] the slot it
//                   occupies for them, inv_count[L] how many there are.
// Gradients w.r.t. keys/values are computed by iterating over these inverse
// neighborhoods (a gather per key), so no thread ever scatters into shared
// memory and no atomics are needed.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

struct Axis {
  int64_t length;
  int64_t kernel;
  int64_t dilation;
  int64_t inv_width;
  const int64_t* start;
  const int64_t* rpb_start;
  const int64_t* inv_query;
  const int64_t* inv_slot;
  const int64_t* inv_count;
};

Axis make_axis(const std::vector<at::Tensor>& tables, int64_t kernel, int64_t dilation) {
  TORCH_CHECK(tables.size() == 5, "expected 5 axis tables, got ", tables.size());
  for (const auto& t : tables) {
    TORCH_CHECK(t.scalar_type() == at::kLong && t.is_contiguous() && t.device().is_cpu(),
                "axis tables must be contiguous int64 CPU tensors");
  }
  return Axis{tables[0].size(0), kernel, dilation, tables[2].size(1),
              tables[0].data_ptr<int64_t>(), tables[1].data_ptr<int64_t>(),
              tables[2].data_ptr<int64_t>(), tables[3].data_ptr<int64_t>(),
              tables[4].data_ptr<int64_t>()};
}

// DIM > 0 fixes the head dimension at compile time (fully unrolled, vectorised
// loops); DIM == 0 is the generic runtime-sized version.
template <int DIM>
inline int64_t head_dim(int64_t runtime) {
  return DIM > 0 ? DIM : runtime;
}

template <int DIM, typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  const int64_t len = head_dim<DIM>(n);
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < len; ++d) acc += a[d] * b[d];
  return acc;
}

template <int DIM, typename T>
inline void axpy(T alpha, const T* x, T* y, int64_t n) {
  const int64_t len = head_dim<DIM>(n);
#pragma omp simd
  for (int64_t d = 0; d < len; ++d) y[d] += alpha * x[d];
}

// Runs body.template operator()<DIM>() with DIM matching `dim` when it is one of
// the head dims of the published models (and common powers of two).
template <typename Body>
void dispatch_head_dim(int64_t dim, Body&& body) {
  switch (dim) {
    case 16: body.template operator()<16>(); break;
    case 24: body.template operator()<24>(); break;
    case 32: body.template operator()<32>(); break;
    case 48: body.template operator()<48>(); break;
    case 64: body.template operator()<64>(); break;
    default: body.template operator()<0>(); break;
  }
}

// out[c] = q . x[c] for `count` rows x[c] = base + c * step, four rows at a time
// so the FMA chains are independent and q is loaded once per group.
template <int DIM, typename T>
inline void dots(const T* q, const T* base, int64_t step, int64_t count, T* out, int64_t n) {
  const int64_t len = head_dim<DIM>(n);
  int64_t c = 0;
  for (; c + 4 <= count; c += 4) {
    const T *x0 = base + c * step, *x1 = x0 + step, *x2 = x1 + step, *x3 = x2 + step;
    T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t d = 0; d < len; ++d) {
      const T qd = q[d];
      a0 += qd * x0[d];
      a1 += qd * x1[d];
      a2 += qd * x2[d];
      a3 += qd * x3[d];
    }
    out[c] = a0;
    out[c + 1] = a1;
    out[c + 2] = a2;
    out[c + 3] = a3;
  }
  for (; c < count; ++c) out[c] = dot<DIM>(q, base + c * step, len);
}

// acc += sum_c w[c] * x[c] for rows x[c] = base + c * step.
template <int DIM, typename T>
inline void axpys(const T* w, const T* base, int64_t step, int64_t count, T* acc, int64_t n) {
  const int64_t len = head_dim<DIM>(n);
  int64_t c = 0;
  for (; c + 4 <= count; c += 4) {
    const T *x0 = base + c * step, *x1 = x0 + step, *x2 = x1 + step, *x3 = x2 + step;
    const T w0 = w[c], w1 = w[c + 1], w2 = w[c + 2], w3 = w[c + 3];
#pragma omp simd
    for (int64_t d = 0; d < len; ++d) acc[d] += w0 * x0[d] + w1 * x1[d] + w2 * x2[d] + w3 * x3[d];
  }
  for (; c < count; ++c) axpy<DIM>(w[c], base + c * step, acc, len);
}

// acc += sum_c w[c] * x[c] for arbitrary rows x[c].
template <int DIM, typename T>
inline void axpy_list(const T* w, const T* const* x, int64_t count, T* acc, int64_t n) {
  const int64_t len = head_dim<DIM>(n);
  int64_t c = 0;
  for (; c + 4 <= count; c += 4) {
    const T *x0 = x[c], *x1 = x[c + 1], *x2 = x[c + 2], *x3 = x[c + 3];
    const T w0 = w[c], w1 = w[c + 1], w2 = w[c + 2], w3 = w[c + 3];
#pragma omp simd
    for (int64_t d = 0; d < len; ++d) acc[d] += w0 * x0[d] + w1 * x1[d] + w2 * x2[d] + w3 * x3[d];
  }
  for (; c < count; ++c) axpy<DIM>(w[c], x[c], acc, len);
}

// ---------------------------------------------------------------- row primitives
// The fused kernels work on lists of row pointers (a window's keys or values, or the
// queries of a key's inverse neighborhood): out[c] = x . rows[c] and
// out = sum_c w[c] rows[c]. The AVX-512 versions (float, head dim a multiple of 16)
// keep 16 dot products in flight and reduce them together with one transpose tree,
// and split the weighted sum over four independent accumulators, so neither waits
// on the latency of one FMA chain; the portable versions serve everything else.

#if defined(__AVX512F__)
// Lane c of the result is the sum of the 16 lanes of v[c].
inline __m512 transpose_sum16(const __m512* v) {
  __m512 t[8], u[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit chunk: [a0+a2, b0+b2, a1+a3, b1+b3]
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per chunk: the chunk sums of v[4i..4i+3]
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // Add the four chunks, leaving v[4i+m]'s total in lane 4i+m.
  const __m512 y01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 y23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(y01, y23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(y01, y23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Dot products of x with rows[0..n), n <= 16, written to out[0..n).
template <int DIM>
inline void dots16(const __m512* x, const float* const* rows, int64_t n, float* out) {
  constexpr int C = DIM / 16;
  __m512 acc[16];
  for (int r = 0; r < 16; ++r) {
    if (r < n) {
      const float* y = rows[r];
      __m512 a = _mm512_mul_ps(x[0], _mm512_loadu_ps(y));
      for (int c = 1; c < C; ++c) a = _mm512_fmadd_ps(x[c], _mm512_loadu_ps(y + 16 * c), a);
      acc[r] = a;
    } else {
      acc[r] = _mm512_setzero_ps();
    }
  }
  const __m512 sums = transpose_sum16(acc);
  if (n == 16)
    _mm512_storeu_ps(out, sums);
  else
    _mm512_mask_storeu_ps(out, static_cast<__mmask16>((1u << n) - 1), sums);
}
#endif

template <int DIM, typename T>
inline void dots_rows(const T* x, const T* const* rows, int64_t count, T* out, int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && DIM > 0 && DIM % 16 == 0) {
    constexpr int C = DIM / 16;
    __m512 xv[C];
    for (int c = 0; c < C; ++c) xv[c] = _mm512_loadu_ps(x + 16 * c);
    int64_t t = 0;
    for (; t + 16 <= count; t += 16) dots16<DIM>(xv, rows + t, 16, out + t);
    if (count - t >= 4) {
      dots16<DIM>(xv, rows + t, count - t, out + t);
      return;
    }
    for (; t < count; ++t) out[t] = dot<DIM>(x, rows[t], n);
    return;
  }
#endif
  for (int64_t t = 0; t < count; ++t) out[t] = dot<DIM>(x, rows[t], n);
}

// out = sum_c w[c] rows[c] (overwrites out).
template <int DIM, typename T>
inline void weighted_sum_rows(const T* w, const T* const* rows, int64_t count, T* out, int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && DIM > 0 && DIM % 16 == 0) {
    constexpr int C = DIM / 16;
    __m512 a0[C], a1[C], a2[C], a3[C];
    for (int c = 0; c < C; ++c) a0[c] = a1[c] = a2[c] = a3[c] = _mm512_setzero_ps();
    int64_t t = 0;
    for (; t + 4 <= count; t += 4) {
      const __m512 w0 = _mm512_set1_ps(w[t]), w1 = _mm512_set1_ps(w[t + 1]), w2 = _mm512_set1_ps(w[t + 2]),
                   w3 = _mm512_set1_ps(w[t + 3]);
      for (int c = 0; c < C; ++c) {
        a0[c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(rows[t] + 16 * c), a0[c]);
        a1[c] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(rows[t + 1] + 16 * c), a1[c]);
        a2[c] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(rows[t + 2] + 16 * c), a2[c]);
        a3[c] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(rows[t + 3] + 16 * c), a3[c]);
      }
    }
    for (; t < count; ++t) {
      const __m512 wt = _mm512_set1_ps(w[t]);
      for (int c = 0; c < C; ++c) a0[c] = _mm512_fmadd_ps(wt, _mm512_loadu_ps(rows[t] + 16 * c), a0[c]);
    }
    for (int c = 0; c < C; ++c)
      _mm512_storeu_ps(out + 16 * c, _mm512_add_ps(_mm512_add_ps(a0[c], a1[c]), _mm512_add_ps(a2[c], a3[c])));
    return;
  }
#endif
  std::fill(out, out + head_dim<DIM>(n), T(0));
  axpy_list<DIM>(w, rows, count, out, n);
}

// out_a = scale_a * sum_c wa[c] rows_a[c] and out_b = sum_c wb[c] rows_b[c] in one
// pass over the list (the key pass of the backward: dk from q, dv from dout).
template <int DIM, typename T>
inline void weighted_sum_pair_rows(const T* wa, const T* const* rows_a, const T* wb, const T* const* rows_b,
                                   int64_t count, T scale_a, T* out_a, T* out_b, int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && DIM > 0 && DIM % 16 == 0) {
    constexpr int C = DIM / 16;
    __m512 a0[C], a1[C], b0[C], b1[C];
    for (int c = 0; c < C; ++c) a0[c] = a1[c] = b0[c] = b1[c] = _mm512_setzero_ps();
    int64_t t = 0;
    for (; t + 2 <= count; t += 2) {
      const __m512 wa0 = _mm512_set1_ps(wa[t]), wa1 = _mm512_set1_ps(wa[t + 1]);
      const __m512 wb0 = _mm512_set1_ps(wb[t]), wb1 = _mm512_set1_ps(wb[t + 1]);
      for (int c = 0; c < C; ++c) {
        a0[c] = _mm512_fmadd_ps(wa0, _mm512_loadu_ps(rows_a[t] + 16 * c), a0[c]);
        a1[c] = _mm512_fmadd_ps(wa1, _mm512_loadu_ps(rows_a[t + 1] + 16 * c), a1[c]);
        b0[c] = _mm512_fmadd_ps(wb0, _mm512_loadu_ps(rows_b[t] + 16 * c), b0[c]);
        b1[c] = _mm512_fmadd_ps(wb1, _mm512_loadu_ps(rows_b[t + 1] + 16 * c), b1[c]);
      }
    }
    if (t < count) {
      const __m512 wat = _mm512_set1_ps(wa[t]), wbt = _mm512_set1_ps(wb[t]);
      for (int c = 0; c < C; ++c) {
        a0[c] = _mm512_fmadd_ps(wat, _mm512_loadu_ps(rows_a[t] + 16 * c), a0[c]);
        b0[c] = _mm512_fmadd_ps(wbt, _mm512_loadu_ps(rows_b[t] + 16 * c), b0[c]);
      }
    }
    const __m512 sa = _mm512_set1_ps(scale_a);
    for (int c = 0; c < C; ++c) {
      _mm512_storeu_ps(out_a + 16 * c, _mm512_mul_ps(sa, _mm512_add_ps(a0[c], a1[c])));
      _mm512_storeu_ps(out_b + 16 * c, _mm512_add_ps(b0[c], b1[c]));
    }
    return;
  }
#endif
  weighted_sum_rows<DIM>(wa, rows_a, count, out_a, n);
  weighted_sum_rows<DIM>(wb, rows_b, count, out_b, n);
  for (int64_t d = 0; d < head_dim<DIM>(n); ++d) out_a[d] *= scale_a;
}

constexpr int64_t kGrain = 16;

// Shape bookkeeping shared by all kernels.
struct Problem {
  int64_t batch, height, width, heads, dim, n_keys;
  Axis rows, cols;
  int64_t tokens() const { return batch * height * width; }
  int64_t token_stride() const { return heads * dim; }
};

// Calls fn(first_slot, first_key_token, key_step, count) for each window row of
// query token n: its keys are first_key + c * key_step for c < count.
template <typename Fn>
inline void for_each_key_row(const Problem& p, int64_t n, Fn&& fn) {
  const int64_t plane = p.height * p.width;
  const int64_t b = n / plane, i = (n / p.width) % p.height, j = n % p.width;
  const int64_t sr = p.rows.start[i], sc = p.cols.start[j];
  for (int64_t tr = 0; tr < p.rows.kernel; ++tr) {
    const int64_t row = b * plane + (sr + tr * p.rows.dilation) * p.width;
    fn(tr * p.cols.kernel, row + sc, p.cols.dilation, p.cols.kernel);
  }
}

// Calls fn(query_token, slot) for every query whose window contains key token m.
template <typename Fn>
inline void for_each_query(const Problem& p, int64_t m, Fn&& fn) {
  const int64_t plane = p.height * p.width;
  const int64_t b = m / plane, i = (m / p.width) % p.height, j = m % p.width;
  const int64_t nr = p.rows.inv_count[i], nc = p.cols.inv_count[j];
  const int64_t* qr = p.rows.inv_query + i * p.rows.inv_width;
  const int64_t* sr = p.rows.inv_slot + i * p.rows.inv_width;
  const int64_t* qc = p.cols.inv_query + j * p.cols.inv_width;
  const int64_t* sc = p.cols.inv_slot + j * p.cols.inv_width;
  for (int64_t a = 0; a < nr; ++a) {
    const int64_t row = b * plane + qr[a] * p.width;
    const int64_t slot_row = sr[a] * p.cols.kernel;
    for (int64_t c = 0; c < nc; ++c) fn(row + qc[c], slot_row + sc[c]);
  }
}

Problem make_problem(const at::Tensor& x, int64_t n_keys, const std::vector<at::Tensor>& row_tables,
                     const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc, int64_t dr,
                     int64_t dc) {
  TORCH_CHECK(x.dim() == 5, "expected a [B, H, W, heads, D] tensor");
  Problem p{x.size(0), x.size(1), x.size(2), x.size(3), x.size(4), n_keys,
            make_axis(row_tables, kr, dr), make_axis(col_tables, kc, dc)};
  TORCH_CHECK(p.rows.length == p.height && p.cols.length == p.width,
              "axis tables do not match the feature map");
  TORCH_CHECK(n_keys == kr * kc, "inconsistent number of neighbors");
  return p;
}

void check_same(const at::Tensor& a, const at::Tensor& b, const char* what) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), what, ": CPU tensors expected");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), what, ": dtype mismatch");
}

// ---------------------------------------------------------------- building blocks
// Each works on one (token, head) pair; `ts` is the token stride heads * D.

// logits[t] = (scale * q) . k[key_t] (+ rpb), for the window of query token n.
template <int DIM, typename T>
inline void window_logits(const Problem& p, int64_t n, int64_t h, const T* qp, const T* kp, const T* bias,
                          T scale, T* qs, T* logits) {
  const int64_t D = head_dim<DIM>(p.dim), ts = p.token_stride();
  const T* qn = qp + n * ts + h * D;
  for (int64_t d = 0; d < D; ++d) qs[d] = qn[d] * scale;
  for_each_key_row(p, n, [&](int64_t t0, int64_t key0, int64_t step, int64_t count) {
    dots<DIM>(qs, kp + key0 * ts + h * D, step * ts, count, logits + t0, D);
  });
  if (bias) {
    const int64_t i = (n / p.width) % p.height, j = n % p.width;
    const int64_t br = p.rows.rpb_start[i], bc = p.cols.rpb_start[j];
    const int64_t bias_w = 2 * p.cols.kernel - 1;
    const T* bh = bias + h * (2 * p.rows.kernel - 1) * bias_w;
    for (int64_t tr = 0; tr < p.rows.kernel; ++tr)
      for (int64_t tc = 0; tc < p.cols.kernel; ++tc)
        logits[tr * p.cols.kernel + tc] += bh[(br + tr) * bias_w + bc + tc];
  }
}

// acc = sum_t w[t] x[key_t] over the window of query token n (x: values or keys).
template <int DIM, typename T>
inline void window_weighted_sum(const Problem& p, int64_t n, int64_t h, const T* w, const T* xp, T* acc) {
  const int64_t D = head_dim<DIM>(p.dim), ts = p.token_stride();
  std::fill(acc, acc + D, T(0));
  for_each_key_row(p, n, [&](int64_t t0, int64_t key0, int64_t step, int64_t count) {
    axpys<DIM>(w + t0, xp + key0 * ts + h * D, step * ts, count, acc, D);
  });
}

// The (query token, slot) pairs whose window contains key token m, collected
// once per key and reused for every head.
struct InverseList {
  std::vector<int64_t> query, slot;
  int64_t count = 0;
  explicit InverseList(const Problem& p)
      : query(p.rows.inv_width * p.cols.inv_width), slot(p.rows.inv_width * p.cols.inv_width) {}
  void collect(const Problem& p, int64_t m) {
    count = 0;
    for_each_query(p, m, [&](int64_t n, int64_t t) {
      query[count] = n;
      slot[count++] = t;
    });
  }
};

// acc = sum over the collected queries n of w[n, h, slot] x[n, h].
// `weights`/`ptrs` are per-thread scratch with room for the whole list.
template <int DIM, typename T>
inline void inverse_weighted_sum(const Problem& p, const InverseList& inv, int64_t h, const T* w, const T* xp,
                                 T* acc, T* weights, const T** ptrs) {
  const int64_t D = head_dim<DIM>(p.dim), ts = p.token_stride();
  for (int64_t c = 0; c < inv.count; ++c) {
    weights[c] = w[(inv.query[c] * p.heads + h) * p.n_keys + inv.slot[c]];
    ptrs[c] = xp + inv.query[c] * ts + h * D;
  }
  std::fill(acc, acc + D, T(0));
  axpy_list<DIM>(weights, ptrs, inv.count, acc, D);
}

// Gradient of the bias table, accumulated in one buffer per thread and summed at
// the end (no races, no serial pass over the map).
template <typename T>
class BiasGrad {
 public:
  BiasGrad(const Problem& p, bool enabled)
      : p_(p), width_(2 * p.cols.kernel - 1), size_(p.heads * (2 * p.rows.kernel - 1) * width_),
        buffers_(enabled ? at::get_num_threads() * size_ : 0, T(0)) {}

  bool enabled() const { return !buffers_.empty(); }

  // Adds g[t] (the logit gradients of query token n, head h) to the thread's buffer.
  void add(int64_t n, int64_t h, const T* g) {
    T* local = buffers_.data() + at::get_thread_num() * size_ + h * (size_ / p_.heads);
    const int64_t i = (n / p_.width) % p_.height, j = n % p_.width;
    const int64_t br = p_.rows.rpb_start[i], bc = p_.cols.rpb_start[j], kc = p_.cols.kernel;
    for (int64_t tr = 0; tr < p_.rows.kernel; ++tr) {
      T* row = local + (br + tr) * width_ + bc;
      const T* gr = g + tr * kc;
      for (int64_t tc = 0; tc < kc; ++tc) row[tc] += gr[tc];
    }
  }

  void reduce_into(T* out) const {
    for (size_t offset = 0; offset < buffers_.size(); offset += size_)
      for (int64_t e = 0; e < size_; ++e) out[e] += buffers_[offset + e];
  }

 private:
  const Problem& p_;
  int64_t width_, size_;
  std::vector<T> buffers_;
};

// ---------------------------------------------------------------- operators
// The unfused pair (attention weights for visualisation, attention dropout).
// logits[n, h, t] = (scale * q[n, h]) . k[key_t(n), h] + rpb[h, bias_t(n)]
at::Tensor qk_forward(const at::Tensor& q_in, const at::Tensor& k_in, const c10::optional<at::Tensor>& rpb_in,
                      const std::vector<at::Tensor>& row_tables, const std::vector<at::Tensor>& col_tables,
                      int64_t kr, int64_t kc, int64_t dr, int64_t dc, double scale) {
  check_same(q_in, k_in, "na2d_qk");
  const auto q = q_in.contiguous(), k = k_in.contiguous();
  const Problem p = make_problem(q, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  at::Tensor rpb;
  if (rpb_in.has_value()) rpb = rpb_in->contiguous();
  auto out = at::empty({p.batch, p.height, p.width, p.heads, p.n_keys}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_qk_forward", [&] {
    using T = scalar_t;
    const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>();
    const T* bp = rpb.defined() ? rpb.data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    dispatch_head_dim(p.dim, [&]<int DIM>() {
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        std::vector<T> qs(p.dim);
        for (int64_t n = begin; n < end; ++n)
          for (int64_t h = 0; h < p.heads; ++h)
            window_logits<DIM>(p, n, h, qp, kp, bp, static_cast<T>(scale), qs.data(),
                               op + (n * p.heads + h) * p.n_keys);
      });
    });
  });
  return out;
}

// Returns (dq, dk, drpb); drpb is undefined when with_rpb is false.
std::vector<at::Tensor> qk_backward(const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in,
                                    bool with_rpb, const std::vector<at::Tensor>& row_tables,
                                    const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc,
                                    int64_t dr, int64_t dc, double scale) {
  check_same(q_in, k_in, "na2d_qk_backward");
  check_same(q_in, grad_in, "na2d_qk_backward");
  const auto g = grad_in.contiguous(), q = q_in.contiguous(), k = k_in.contiguous();
  const Problem p = make_problem(q, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  auto dq = at::empty_like(q), dk = at::empty_like(k);
  at::Tensor drpb;
  if (with_rpb) drpb = at::zeros({p.heads, 2 * kr - 1, 2 * kc - 1}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_qk_backward", [&] {
    using T = scalar_t;
    const T *gp = g.data_ptr<T>(), *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>();
    T *dqp = dq.data_ptr<T>(), *dkp = dk.data_ptr<T>();
    const T s = static_cast<T>(scale);
    BiasGrad<T> bias_grad(p, with_rpb);
    dispatch_head_dim(p.dim, [&]<int DIM>() {
      const int64_t D = head_dim<DIM>(p.dim), ts = p.token_stride();
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
          for (int64_t h = 0; h < p.heads; ++h) {
            const T* gn = gp + (n * p.heads + h) * p.n_keys;
            if (bias_grad.enabled()) bias_grad.add(n, h, gn);
            T* dqn = dqp + n * ts + h * D;
            window_weighted_sum<DIM>(p, n, h, gn, kp, dqn);
            for (int64_t d = 0; d < D; ++d) dqn[d] *= s;
          }
      });
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        InverseList inv(p);
        std::vector<T> weights(inv.query.size());
        std::vector<const T*> ptrs(inv.query.size());
        for (int64_t m = begin; m < end; ++m) {
          inv.collect(p, m);
          for (int64_t h = 0; h < p.heads; ++h) {
            T* dkm = dkp + m * ts + h * D;
            inverse_weighted_sum<DIM>(p, inv, h, gp, qp, dkm, weights.data(), ptrs.data());
            for (int64_t d = 0; d < D; ++d) dkm[d] *= s;
          }
        }
      });
    });
    if (with_rpb) bias_grad.reduce_into(drpb.data_ptr<T>());
  });
  return {dq, dk, drpb};
}

// out[n, h] = sum_t attn[n, h, t] v[key_t(n), h]
at::Tensor av_forward(const at::Tensor& attn_in, const at::Tensor& v_in, const std::vector<at::Tensor>& row_tables,
                      const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc, int64_t dr, int64_t dc) {
  check_same(attn_in, v_in, "na2d_av");
  const auto a = attn_in.contiguous(), v = v_in.contiguous();
  const Problem p = make_problem(v, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  auto out = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "na2d_av_forward", [&] {
    using T = scalar_t;
    const T *ap = a.data_ptr<T>(), *vp = v.data_ptr<T>();
    T* op = out.data_ptr<T>();
    dispatch_head_dim(p.dim, [&]<int DIM>() {
      const int64_t D = head_dim<DIM>(p.dim), ts = p.token_stride();
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
          for (int64_t h = 0; h < p.heads; ++h)
            window_weighted_sum<DIM>(p, n, h, ap + (n * p.heads + h) * p.n_keys, vp, op + n * ts + h * D);
      });
    });
  });
  return out;
}

// Returns (dattn, dv).
std::vector<at::Tensor> av_backward(const at::Tensor& grad_in, const at::Tensor& attn_in, const at::Tensor& v_in,
                                    const std::vector<at::Tensor>& row_tables,
                                    const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc,
                                    int64_t dr, int64_t dc) {
  check_same(attn_in, v_in, "na2d_av_backward");
  check_same(grad_in, v_in, "na2d_av_backward");
  const auto g = grad_in.contiguous(), a = attn_in.contiguous(), v = v_in.contiguous();
  const Problem p = make_problem(v, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  auto dattn = at::empty_like(a), dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "na2d_av_backward", [&] {
    using T = scalar_t;
    const T *gp = g.data_ptr<T>(), *ap = a.data_ptr<T>(), *vp = v.data_ptr<T>();
    T *dap = dattn.data_ptr<T>(), *dvp = dv.data_ptr<T>();
    dispatch_head_dim(p.dim, [&]<int DIM>() {
      const int64_t D = head_dim<DIM>(p.dim), ts = p.token_stride();
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
          for (int64_t h = 0; h < p.heads; ++h) {
            T* dan = dap + (n * p.heads + h) * p.n_keys;
            for_each_key_row(p, n, [&](int64_t t0, int64_t key0, int64_t step, int64_t count) {
              dots<DIM>(gp + n * ts + h * D, vp + key0 * ts + h * D, step * ts, count, dan + t0, D);
            });
          }
      });
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        InverseList inv(p);
        std::vector<T> weights(inv.query.size());
        std::vector<const T*> ptrs(inv.query.size());
        for (int64_t m = begin; m < end; ++m) {
          inv.collect(p, m);
          for (int64_t h = 0; h < p.heads; ++h)
            inverse_weighted_sum<DIM>(p, inv, h, ap, gp, dvp + m * ts + h * D, weights.data(), ptrs.data());
        }
      });
    });
  });
  return {dattn, dv};
}

// ---------------------------------------------------------------- fused (one pass per direction)
// The fused op reads q/k/v in their own layout (any strides, contiguous head dim:
// views of one qkv tensor need no copy) and walks every dilated window in place,
// from the per-axis tables of the natural layout: no re-layout of the map.

// Element strides of a [B, H, W, heads, D] tensor.
struct Strides {
  int64_t b, r, c, h;
  int64_t at(int64_t bi, int64_t i, int64_t j, int64_t hi) const { return bi * b + i * r + j * c + hi * h; }
};

Strides strides_of(const at::Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2), x.stride(3)}; }

at::Tensor with_contiguous_head_dim(const at::Tensor& x) { return x.stride(4) == 1 ? x : x.contiguous(); }

// x[t] = exp(x[t] - shift) for t < n, x[t] - shift <= 0. float: a vectorisable
// 2^y evaluation (range reduction to [-1/2, 1/2], degree-6 polynomial, exponent
// bits), relative error below 2e-7; double: std::exp.
inline void exp_shifted(float* x, int64_t n, float shift) {
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) {
    float y = (x[t] - shift) * 1.4426950408889634f;
    y = y < -126.0f ? -126.0f : y;
    const float k = (y + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
    const float f = (y - k) * 0.6931471805599453f;  // e^f with |f| <= ln2 / 2
    float p = 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    x[t] = p * scale;
  }
}

inline void exp_shifted(double* x, int64_t n, double shift) {
  for (int64_t t = 0; t < n; ++t) x[t] = std::exp(x[t] - shift);
}

// Softmax of logits[0..n) in place; returns the natural-log sum-exp.
template <typename T>
inline T softmax_in_place(T* logits, int64_t n) {
  T m = logits[0];
  for (int64_t t = 1; t < n; ++t) m = logits[t] > m ? logits[t] : m;
  exp_shifted(logits, n, m);
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < n; ++t) sum += logits[t];
  const T inv = T(1) / sum;
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) logits[t] *= inv;
  return m + std::log(sum);
}

// g[t] = probs[t] * (g[t] - delta): the logit gradients from the weight gradients g.
template <typename T>
inline void softmax_backward_in_place(const T* probs, T delta, T* g, int64_t n) {
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) g[t] = probs[t] * (g[t] - delta);
}

// The query token n of a [B, H, W] map as (b, i, j).
struct Token {
  int64_t b, i, j;
};

inline Token token_of(const Problem& p, int64_t n) {
  const int64_t plane = p.height * p.width;
  return {n / plane, (n / p.width) % p.height, n % p.width};
}

// Positions of one axis in dilation-group order: group r = i mod d first, then
// position g = i div d within it. Walking queries (and keys) in this order makes
// consecutive ones share most of their (dilated) windows, so large dilations stay
// cache-friendly without moving any data.
std::vector<int64_t> group_order(int64_t length, int64_t dilation) {
  std::vector<int64_t> order;
  order.reserve(length);
  for (int64_t r = 0; r < dilation; ++r)
    for (int64_t i = r; i < length; i += dilation) order.push_back(i);
  return order;
}

// Visits the tokens of a [B, H, W] map in dilation-group order: the n-th visited.
struct GroupedWalk {
  std::vector<int64_t> rows, cols;
  int64_t height, width;
  GroupedWalk(const Problem& p)
      : rows(group_order(p.height, p.rows.dilation)), cols(group_order(p.width, p.cols.dilation)),
        height(p.height), width(p.width) {}
  // (token index in the natural layout, its coordinates)
  std::pair<int64_t, Token> operator()(int64_t n) const {
    const int64_t plane = height * width, b = n / plane, x = (n / width) % height, y = n % width;
    const Token t{b, rows[x], cols[y]};
    return {b * plane + t.i * width + t.j, t};
  }
};

// ---- dilation groups packed per thread
// With dilation d, a window's keys lie d tokens apart along a row and d rows apart
// along a column: with power-of-two strides (d = 16 and 256-byte tokens) every key of
// a window falls in the same L1 set, and pages apart in any case. A dilation group
// (rows ri + gi * dr, columns rj + gj * dc of one image) is an undilated map of its
// own, so a thread copies the group it works on into a small contiguous buffer
// [len_r, len_c, heads, D] and walks the windows there. The buffers are per thread
// and bounded (kMaxGroupBytes per tensor); the map itself is never re-laid out.
constexpr int64_t kMaxGroupBytes = int64_t(2) << 20;

struct Group {
  int64_t b, ri, rj, len_r, len_c;
  int64_t tokens() const { return len_r * len_c; }
};

inline int64_t groups_per_image(const Problem& p) { return p.rows.dilation * p.cols.dilation; }

inline Group group_of(const Problem& p, int64_t index) {
  const int64_t per_image = groups_per_image(p), r = index % per_image;
  const int64_t ri = r / p.cols.dilation, rj = r % p.cols.dilation;
  return {index / per_image, ri, rj, (p.height - ri + p.rows.dilation - 1) / p.rows.dilation,
          (p.width - rj + p.cols.dilation - 1) / p.cols.dilation};
}

// An image map below this size (per tensor) stays in cache as it is: no packing.
constexpr int64_t kMinPackedMapBytes = int64_t(512) << 10;

// Whether to work group by group on packed copies: dilated, a map too large for the
// cache, enough groups for every thread, and each group's copy small enough to stay
// in cache.
inline bool use_packed_groups(const Problem& p, int64_t element_size) {
  if (p.rows.dilation == 1 && p.cols.dilation == 1) return false;
  const int64_t token_bytes = p.heads * p.dim * element_size;
  const int64_t groups = p.batch * groups_per_image(p);
  const int64_t largest = ((p.height + p.rows.dilation - 1) / p.rows.dilation) *
                          ((p.width + p.cols.dilation - 1) / p.cols.dilation) * token_bytes;
  return p.height * p.width * token_bytes >= kMinPackedMapBytes && groups >= 2 * at::get_num_threads() &&
         largest <= kMaxGroupBytes;
}

// dst[gi, gj, h, :] = src[b, ri + gi * dr, rj + gj * dc, h, :]
template <typename T>
void pack_group(const Problem& p, const Group& g, const T* src, const Strides& s, T* dst) {
  const int64_t D = p.dim;
  for (int64_t gi = 0; gi < g.len_r; ++gi)
    for (int64_t gj = 0; gj < g.len_c; ++gj) {
      const T* token = src + s.at(g.b, g.ri + gi * p.rows.dilation, g.rj + gj * p.cols.dilation, 0);
      T* out = dst + (gi * g.len_c + gj) * p.heads * D;
      for (int64_t h = 0; h < p.heads; ++h) std::memcpy(out + h * D, token + h * s.h, D * sizeof(T));
    }
}

// Index of token (i, j) of group g in its packed copy, in tokens.
inline int64_t packed_token(const Problem& p, const Group& g, int64_t i, int64_t j) {
  return ((i - g.ri) / p.rows.dilation) * g.len_c + (j - g.rj) / p.cols.dilation;
}

// offsets[t] = element offset of key t of the window of token (i, j) in its group's
// packed copy, at head 0.
inline void packed_window_offsets(const Problem& p, const Group& g, int64_t i, int64_t j, int64_t* offsets) {
  const int64_t token_size = p.heads * p.dim;
  const int64_t first = packed_token(p, g, p.rows.start[i], p.cols.start[j]);
  int64_t t = 0;
  for (int64_t tr = 0; tr < p.rows.kernel; ++tr)
    for (int64_t tc = 0; tc < p.cols.kernel; ++tc) offsets[t++] = (first + tr * g.len_c + tc) * token_size;
}

// Walks every dilation group in parallel: packs tensors a and b of the group, then
// calls visit(scratch, g, i, j, n, a_packed, b_packed) for each of its tokens (i, j),
// n = its index in the map. `make_scratch()` gives each thread its working memory.
template <typename T, typename MakeScratch, typename Visit>
void for_each_packed_group(const Problem& p, const T* a, const Strides& sa, const T* b, const Strides& sb,
                           MakeScratch&& make_scratch, Visit&& visit) {
  at::parallel_for(0, p.batch * groups_per_image(p), 1, [&](int64_t begin, int64_t end) {
    auto scratch = make_scratch();
    std::vector<T> a_buf, b_buf;
    for (int64_t index = begin; index < end; ++index) {
      const Group g = group_of(p, index);
      a_buf.resize(g.tokens() * p.heads * p.dim);
      b_buf.resize(a_buf.size());
      pack_group(p, g, a, sa, a_buf.data());
      pack_group(p, g, b, sb, b_buf.data());
      for (int64_t i = g.ri; i < p.height; i += p.rows.dilation)
        for (int64_t j = g.rj; j < p.width; j += p.cols.dilation)
          visit(scratch, g, i, j, (g.b * p.height + i) * p.width + j, a_buf.data(), b_buf.data());
    }
  });
}

// offsets[t] = element offset of key t of token `tok`'s window in a tensor with
// strides ys, at head 0 (slot order: t = tr * kc + tc).
inline void window_offsets(const Problem& p, Token tok, const Strides& ys, int64_t* offsets) {
  const int64_t sr = p.rows.start[tok.i], sc = p.cols.start[tok.j], step = p.cols.dilation * ys.c;
  int64_t t = 0;
  for (int64_t tr = 0; tr < p.rows.kernel; ++tr) {
    const int64_t row = ys.at(tok.b, sr + tr * p.rows.dilation, sc, 0);
    for (int64_t tc = 0; tc < p.cols.kernel; ++tc) offsets[t++] = row + tc * step;
  }
}

// rows[t] = base + offsets[t]: a window's keys or values at one head.
template <typename T>
inline void window_rows(const T* base, const int64_t* offsets, int64_t count, const T** rows) {
  for (int64_t t = 0; t < count; ++t) rows[t] = base + offsets[t];
}

template <typename T>
inline void add_bias(const Problem& p, Token tok, int64_t h, const T* bias, T* logits) {
  const int64_t br = p.rows.rpb_start[tok.i], bc = p.cols.rpb_start[tok.j], kc = p.cols.kernel;
  const int64_t bias_w = 2 * kc - 1;
  const T* bh = bias + h * (2 * p.rows.kernel - 1) * bias_w;
  for (int64_t tr = 0; tr < p.rows.kernel; ++tr) {
    const T* row = bh + (br + tr) * bias_w + bc;
    T* out = logits + tr * kc;
    for (int64_t tc = 0; tc < kc; ++tc) out[tc] += row[tc];
  }
}

// Returns (out, lse, probs): out [B, H, W, heads, D], lse [B, H, W, heads] and the
// softmax weights [B, H, W, heads, K] the backward reads (all contiguous).
std::vector<at::Tensor> fused_forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                      const c10::optional<at::Tensor>& rpb_in,
                                      const std::vector<at::Tensor>& row_tables,
                                      const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc, int64_t dr,
                                      int64_t dc, double scale) {
  check_same(q_in, k_in, "na2d_fused");
  check_same(q_in, v_in, "na2d_fused");
  const auto q = with_contiguous_head_dim(q_in), k = with_contiguous_head_dim(k_in),
             v = with_contiguous_head_dim(v_in);
  const Problem p = make_problem(q, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  at::Tensor rpb;
  if (rpb_in.has_value()) rpb = rpb_in->contiguous();
  auto out = at::empty({p.batch, p.height, p.width, p.heads, p.dim}, q.options());
  auto lse = at::empty({p.batch, p.height, p.width, p.heads}, q.options());
  auto probs = at::empty({p.batch, p.height, p.width, p.heads, p.n_keys}, q.options());
  const Strides sq = strides_of(q), sk = strides_of(k), sv = strides_of(v);
  const GroupedWalk walk(p);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_fused_forward", [&] {
    using T = scalar_t;
    const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
    const T* bp = rpb.defined() ? rpb.data_ptr<T>() : nullptr;
    T *op = out.data_ptr<T>(), *lp = lse.data_ptr<T>(), *pp = probs.data_ptr<T>();
    const T s = static_cast<T>(scale);
    dispatch_head_dim(p.dim, [&]<int DIM>() {
      const int64_t D = head_dim<DIM>(p.dim);
      const int64_t K = p.n_keys;
      // Query n at tok; its window's keys at kb + k_off[t] (+ h * kh), values likewise.
      auto attend = [&](int64_t n, Token tok, const T* kb, const int64_t* k_off, int64_t kh, const T* vb,
                        const int64_t* v_off, int64_t vh, T* qs, const T** rows) {
        for (int64_t h = 0; h < p.heads; ++h) {
          const T* qn = qp + sq.at(tok.b, tok.i, tok.j, h);
          for (int64_t d = 0; d < D; ++d) qs[d] = qn[d] * s;
          T* w = pp + (n * p.heads + h) * K;
          window_rows(kb + h * kh, k_off, K, rows);
          dots_rows<DIM>(qs, rows, K, w, D);
          if (bp) add_bias(p, tok, h, bp, w);
          lp[n * p.heads + h] = softmax_in_place(w, K);
          window_rows(vb + h * vh, v_off, K, rows);
          weighted_sum_rows<DIM>(w, rows, K, op + (n * p.heads + h) * D, D);
        }
      };
      if (use_packed_groups(p, sizeof(T))) {
        struct Scratch {
          std::vector<T> qs;
          std::vector<int64_t> off;
          std::vector<const T*> rows;
        };
        for_each_packed_group(
            p, kp, sk, vp, sv, [&] { return Scratch{std::vector<T>(D), std::vector<int64_t>(K), std::vector<const T*>(K)}; },
            [&](Scratch& sc, const Group& g, int64_t i, int64_t j, int64_t n, const T* kb, const T* vb) {
              packed_window_offsets(p, g, i, j, sc.off.data());
              attend(n, Token{g.b, i, j}, kb, sc.off.data(), D, vb, sc.off.data(), D, sc.qs.data(), sc.rows.data());
            });
        return;
      }
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        std::vector<T> qs(D);
        std::vector<int64_t> k_off(K), v_off(K);
        std::vector<const T*> rows(K);
        for (int64_t visit = begin; visit < end; ++visit) {
          const auto [n, tok] = walk(visit);
          window_offsets(p, tok, sk, k_off.data());
          window_offsets(p, tok, sv, v_off.data());
          attend(n, tok, kp, k_off.data(), sk.h, vp, v_off.data(), sv.h, qs.data(), rows.data());
        }
      });
    });
  });
  return {out, lse, probs};
}

// Returns (dq, dk, dv, drpb) of fused_forward from its output and softmax weights;
// drpb is undefined when with_rpb is false. Two passes: over queries (dq, the logit
// gradients, drpb), then over keys (dk, dv) through the inverse neighborhoods.
std::vector<at::Tensor> fused_backward(const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in,
                                       const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& probs_in,
                                       bool with_rpb, const std::vector<at::Tensor>& row_tables,
                                       const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc,
                                       int64_t dr, int64_t dc, double scale) {
  check_same(q_in, k_in, "na2d_fused_backward");
  check_same(q_in, v_in, "na2d_fused_backward");
  check_same(q_in, grad_in, "na2d_fused_backward");
  const auto q = with_contiguous_head_dim(q_in), k = with_contiguous_head_dim(k_in),
             v = with_contiguous_head_dim(v_in);
  const auto g = grad_in.contiguous(), o = out_in.contiguous(), a = probs_in.contiguous();
  const Problem p = make_problem(q, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  const auto shape = std::vector<int64_t>{p.batch, p.height, p.width, p.heads, p.dim};
  auto dq = at::empty(shape, q.options()), dk = at::empty(shape, q.options()), dv = at::empty(shape, q.options());
  auto dlogits = at::empty_like(a);
  at::Tensor drpb;
  if (with_rpb) drpb = at::zeros({p.heads, 2 * kr - 1, 2 * kc - 1}, q.options());
  const Strides sq = strides_of(q), sk = strides_of(k), sv = strides_of(v);
  const GroupedWalk walk(p);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_fused_backward", [&] {
    using T = scalar_t;
    const T *gp = g.data_ptr<T>(), *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
    const T *opp = o.data_ptr<T>(), *ap = a.data_ptr<T>();
    T *dqp = dq.data_ptr<T>(), *dkp = dk.data_ptr<T>(), *dvp = dv.data_ptr<T>(), *glp = dlogits.data_ptr<T>();
    const T s = static_cast<T>(scale);
    BiasGrad<T> bias_grad(p, with_rpb);
    dispatch_head_dim(p.dim, [&]<int DIM>() {
      const int64_t D = head_dim<DIM>(p.dim);
      const int64_t K = p.n_keys;
      const bool packed = use_packed_groups(p, sizeof(T));
      // Query pass for query n at tok: the logit gradients, drpb and dq; its window's
      // keys at kb + k_off[t] (+ h * kh), values likewise.
      auto query_pass = [&](int64_t n, Token tok, const T* kb, const int64_t* k_off, int64_t kh, const T* vb,
                            const int64_t* v_off, int64_t vh, const T** rows) {
        for (int64_t h = 0; h < p.heads; ++h) {
          const int64_t nh = n * p.heads + h;
          const T* gn = gp + nh * D;
          const T delta = dot<DIM>(gn, opp + nh * D, D);
          T* gl = glp + nh * K;
          window_rows(vb + h * vh, v_off, K, rows);
          dots_rows<DIM>(gn, rows, K, gl, D);  // d probs
          softmax_backward_in_place(ap + nh * K, delta, gl, K);
          if (bias_grad.enabled()) bias_grad.add(n, h, gl);
          T* dqn = dqp + nh * D;
          window_rows(kb + h * kh, k_off, K, rows);
          weighted_sum_rows<DIM>(gl, rows, K, dqn, D);
          for (int64_t d = 0; d < D; ++d) dqn[d] *= s;
        }
      };
      // Key pass for key m: dk and dv from the queries whose windows hold it, the
      // query vectors of the pair c at qb + q_offset[c] (+ h * qh), dout likewise.
      struct KeyScratch {
        InverseList inv;
        std::vector<int64_t> q_offset, g_offset, w_index;
        std::vector<T> wk, wv;
        std::vector<const T*> pq, pg;
        explicit KeyScratch(const Problem& p)
            : inv(p), q_offset(inv.query.size()), g_offset(inv.query.size()), w_index(inv.query.size()),
              wk(inv.query.size()), wv(inv.query.size()), pq(inv.query.size()), pg(inv.query.size()) {}
      };
      auto key_pass = [&](int64_t m, KeyScratch& ks, const T* qb, int64_t qh, const T* gb, int64_t gh) {
        const InverseList& inv = ks.inv;
        for (int64_t c = 0; c < inv.count; ++c) ks.w_index[c] = inv.query[c] * p.heads * K + inv.slot[c];
        for (int64_t h = 0; h < p.heads; ++h) {
          for (int64_t c = 0; c < inv.count; ++c) {
            const int64_t index = ks.w_index[c] + h * K;
            ks.wk[c] = glp[index];
            ks.wv[c] = ap[index];
            ks.pq[c] = qb + ks.q_offset[c] + h * qh;
            ks.pg[c] = gb + ks.g_offset[c] + h * gh;
          }
          weighted_sum_pair_rows<DIM>(ks.wk.data(), ks.pq.data(), ks.wv.data(), ks.pg.data(), inv.count, s,
                                      dkp + (m * p.heads + h) * D, dvp + (m * p.heads + h) * D, D);
        }
      };
      if (packed) {
        struct Scratch {
          std::vector<int64_t> off;
          std::vector<const T*> rows;
        };
        for_each_packed_group(
            p, kp, sk, vp, sv, [&] { return Scratch{std::vector<int64_t>(K), std::vector<const T*>(K)}; },
            [&](Scratch& sc, const Group& g, int64_t i, int64_t j, int64_t n, const T* kb, const T* vb) {
              packed_window_offsets(p, g, i, j, sc.off.data());
              query_pass(n, Token{g.b, i, j}, kb, sc.off.data(), D, vb, sc.off.data(), D, sc.rows.data());
            });
        const Strides sg{p.height * p.width * p.heads * D, p.width * p.heads * D, p.heads * D, D};
        for_each_packed_group(
            p, qp, sq, gp, sg, [&] { return KeyScratch(p); },
            [&](KeyScratch& ks, const Group& g, int64_t, int64_t, int64_t m, const T* qb, const T* gb) {
              ks.inv.collect(p, m);
              for (int64_t c = 0; c < ks.inv.count; ++c) {
                const Token t = token_of(p, ks.inv.query[c]);
                ks.q_offset[c] = ks.g_offset[c] = packed_token(p, g, t.i, t.j) * p.heads * D;
              }
              key_pass(m, ks, qb, D, gb, D);
            });
        return;
      }
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        std::vector<int64_t> k_off(K), v_off(K);
        std::vector<const T*> rows(K);
        for (int64_t visit = begin; visit < end; ++visit) {
          const auto [n, tok] = walk(visit);
          window_offsets(p, tok, sk, k_off.data());
          window_offsets(p, tok, sv, v_off.data());
          query_pass(n, tok, kp, k_off.data(), sk.h, vp, v_off.data(), sv.h, rows.data());
        }
      });
      at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
        KeyScratch ks(p);
        for (int64_t visit = begin; visit < end; ++visit) {
          const int64_t m = walk(visit).first;
          ks.inv.collect(p, m);
          for (int64_t c = 0; c < ks.inv.count; ++c) {
            const Token t = token_of(p, ks.inv.query[c]);
            ks.q_offset[c] = sq.at(t.b, t.i, t.j, 0);
            ks.g_offset[c] = ks.inv.query[c] * p.heads * D;
          }
          key_pass(m, ks, qp, sq.h, gp, D);
        }
      });
    });
    if (with_rpb) bias_grad.reduce_into(drpb.data_ptr<T>());
  });
  return {dq, dk, dv, drpb};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("qk_forward", &qk_forward, "NA2D QK(+RPB) forward (CPU)");
  m.def("qk_backward", &qk_backward, "NA2D QK(+RPB) backward (CPU)");
  m.def("av_forward", &av_forward, "NA2D AV forward (CPU)");
  m.def("av_backward", &av_backward, "NA2D AV backward (CPU)");
  m.def("fused_forward", &fused_forward, "NA2D fused forward: QK(+RPB), softmax, AV in one pass (CPU)");
  m.def("fused_backward", &fused_backward, "NA2D fused backward: dq, dk, dv, drpb in two passes (CPU)");
}
