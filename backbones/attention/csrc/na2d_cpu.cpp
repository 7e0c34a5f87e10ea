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

#include <vector>

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

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
}

template <typename T>
inline void axpy(T alpha, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

constexpr int64_t kGrain = 16;

// Shape bookkeeping shared by all kernels.
struct Problem {
  int64_t batch, height, width, heads, dim, n_keys;
  Axis rows, cols;
  int64_t tokens() const { return batch * height * width; }
  int64_t token_stride() const { return heads * dim; }
};

// Calls fn(slot, key_token) for every key in the window of query token n.
template <typename Fn>
inline void for_each_key(const Problem& p, int64_t n, Fn&& fn) {
  const int64_t plane = p.height * p.width;
  const int64_t b = n / plane, i = (n / p.width) % p.height, j = n % p.width;
  const int64_t sr = p.rows.start[i], sc = p.cols.start[j];
  for (int64_t tr = 0; tr < p.rows.kernel; ++tr) {
    const int64_t row = b * plane + (sr + tr * p.rows.dilation) * p.width;
    for (int64_t tc = 0; tc < p.cols.kernel; ++tc) {
      fn(tr * p.cols.kernel + tc, row + sc + tc * p.cols.dilation);
    }
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
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* bp = rpb.defined() ? rpb.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    const int64_t bias_w = 2 * kc - 1, bias_hw = (2 * kr - 1) * bias_w;
    at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> qs(p.dim);
      for (int64_t n = begin; n < end; ++n) {
        const int64_t i = (n / p.width) % p.height, j = n % p.width;
        const int64_t br = p.rows.rpb_start[i], bc = p.cols.rpb_start[j];
        for (int64_t h = 0; h < p.heads; ++h) {
          const scalar_t* qn = qp + n * p.token_stride() + h * p.dim;
          for (int64_t d = 0; d < p.dim; ++d) qs[d] = qn[d] * s;
          scalar_t* on = op + (n * p.heads + h) * p.n_keys;
          for_each_key(p, n, [&](int64_t t, int64_t key) {
            on[t] = dot(qs.data(), kp + key * p.token_stride() + h * p.dim, p.dim);
          });
          if (bp) {
            const scalar_t* bh = bp + h * bias_hw;
            for (int64_t tr = 0; tr < kr; ++tr)
              for (int64_t tc = 0; tc < kc; ++tc)
                on[tr * kc + tc] += bh[(br + tr) * bias_w + bc + tc];
          }
        }
      }
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
  auto dq = at::zeros_like(q), dk = at::zeros_like(k);
  at::Tensor drpb;
  if (with_rpb) drpb = at::zeros({p.heads, 2 * kr - 1, 2 * kc - 1}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_qk_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    scalar_t* dqp = dq.data_ptr<scalar_t>();
    scalar_t* dkp = dk.data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    const int64_t ts = p.token_stride();
    // dq[n] = scale * sum_t g[n, t] k[key_t]
    at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t h = 0; h < p.heads; ++h) {
          const scalar_t* gn = gp + (n * p.heads + h) * p.n_keys;
          scalar_t* dqn = dqp + n * ts + h * p.dim;
          for_each_key(p, n, [&](int64_t t, int64_t key) {
            axpy(gn[t] * s, kp + key * ts + h * p.dim, dqn, p.dim);
          });
        }
      }
    });
    // dk[m] = scale * sum over queries n attending to m of g[n, t] q[n]
    at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        for (int64_t h = 0; h < p.heads; ++h) {
          scalar_t* dkm = dkp + m * ts + h * p.dim;
          for_each_query(p, m, [&](int64_t n, int64_t t) {
            axpy(gp[(n * p.heads + h) * p.n_keys + t] * s, qp + n * ts + h * p.dim, dkm, p.dim);
          });
        }
      }
    });
    if (with_rpb) {
      scalar_t* dbp = drpb.data_ptr<scalar_t>();
      const int64_t bias_w = 2 * kc - 1, bias_hw = (2 * kr - 1) * bias_w;
      at::parallel_for(0, p.heads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t h = begin; h < end; ++h) {
          scalar_t* dbh = dbp + h * bias_hw;
          for (int64_t n = 0; n < p.tokens(); ++n) {
            const int64_t i = (n / p.width) % p.height, j = n % p.width;
            const int64_t br = p.rows.rpb_start[i], bc = p.cols.rpb_start[j];
            const scalar_t* gn = gp + (n * p.heads + h) * p.n_keys;
            for (int64_t tr = 0; tr < kr; ++tr)
              for (int64_t tc = 0; tc < kc; ++tc) dbh[(br + tr) * bias_w + bc + tc] += gn[tr * kc + tc];
          }
        }
      });
    }
  });
  return {dq, dk, drpb};
}

// out[n, h] = sum_t attn[n, h, t] v[key_t(n), h]
at::Tensor av_forward(const at::Tensor& attn_in, const at::Tensor& v_in, const std::vector<at::Tensor>& row_tables,
                      const std::vector<at::Tensor>& col_tables, int64_t kr, int64_t kc, int64_t dr, int64_t dc) {
  check_same(attn_in, v_in, "na2d_av");
  const auto a = attn_in.contiguous(), v = v_in.contiguous();
  const Problem p = make_problem(v, kr * kc, row_tables, col_tables, kr, kc, dr, dc);
  auto out = at::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "na2d_av_forward", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t ts = p.token_stride();
    at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t h = 0; h < p.heads; ++h) {
          const scalar_t* an = ap + (n * p.heads + h) * p.n_keys;
          scalar_t* on = op + n * ts + h * p.dim;
          for_each_key(p, n, [&](int64_t t, int64_t key) { axpy(an[t], vp + key * ts + h * p.dim, on, p.dim); });
        }
      }
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
  auto dattn = at::empty_like(a), dv = at::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "na2d_av_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* dap = dattn.data_ptr<scalar_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    const int64_t ts = p.token_stride();
    // dattn[n, t] = dout[n] . v[key_t]
    at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t h = 0; h < p.heads; ++h) {
          const scalar_t* gn = gp + n * ts + h * p.dim;
          scalar_t* dan = dap + (n * p.heads + h) * p.n_keys;
          for_each_key(p, n, [&](int64_t t, int64_t key) { dan[t] = dot(gn, vp + key * ts + h * p.dim, p.dim); });
        }
      }
    });
    // dv[m] = sum over queries n attending to m of attn[n, t] dout[n]
    at::parallel_for(0, p.tokens(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        for (int64_t h = 0; h < p.heads; ++h) {
          scalar_t* dvm = dvp + m * ts + h * p.dim;
          for_each_query(p, m, [&](int64_t n, int64_t t) {
            axpy(ap[(n * p.heads + h) * p.n_keys + t], gp + n * ts + h * p.dim, dvm, p.dim);
          });
        }
      }
    });
  });
  return {dattn, dv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("qk_forward", &qk_forward, "NA2D QK(+RPB) forward (CPU)");
  m.def("qk_backward", &qk_backward, "NA2D QK(+RPB) backward (CPU)");
  m.def("av_forward", &av_forward, "NA2D AV forward (CPU)");
  m.def("av_backward", &av_backward, "NA2D AV backward (CPU)");
}
