// The time loops of the manual recurrent core (model/manual_backward.py) in C++: the same steps on the same
// buffers, with the element-wise work of a step done in a few passes over its rows instead of one
// python-dispatched op each, and the small matrix products by a kernel of their own that ends in the gate's
// activation. Values agree with the python loops to float rounding (sums in another order, fused multiply-adds,
// an exp within 2 ulp).
// Every sequence is (G, T, B, X) and every step view (G, B, X) with contiguous rows.

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using at::Tensor;
using Steps = std::vector<Tensor>;
using Maybe = std::optional<Tensor>;
// One side of the decoder loop (generator or controller) as python names its tensors (manual_backward._cpp_side)
using Named = std::unordered_map<std::string, Tensor>;

const Tensor& field(const Named& side, const std::string& name) {
  const auto found = side.find(name);
  if (found == side.end()) throw std::invalid_argument("the decoder loop's C++ side has no tensor '" + name + "'");
  return found->second;
}

// The rows a loop reads and writes never overlap: vectorize without alias checks.
#define IVDEP _Pragma("GCC ivdep")

Steps steps_of(const Tensor& sequence) { return sequence.unbind(1); }

Tensor scratch_like(const Tensor& x) { return at::empty_like(x, at::MemoryFormat::Contiguous); }

// Row pointers into a (G, B, X) step view.
template <typename T>
struct Rows {
  T* data;
  int64_t group_stride, row_stride;
  explicit Rows(const Tensor& x) : data(x.data_ptr<T>()), group_stride(x.stride(0)), row_stride(x.stride(1)) {
    TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "a step view must be (G, B, X) with contiguous rows");
  }
  T* operator()(int64_t g, int64_t b) const { return data + g * group_stride + b * row_stride; }
};

template <typename Body>
void for_rows(const Tensor& like, Body body) {
  for (int64_t g = 0; g < like.size(0); ++g)
    for (int64_t b = 0; b < like.size(1); ++b) body(g, b);
}

// The loops' matrix products, out (G, B, N) = act([addend +] a (G, B, K) @ w (G, K, N)): a register-tiled
// kernel on the widest vectors of the build, each weight packed once per loop (rows padded to whole vectors),
// the gate's activation applied while the result is in registers. At the loops' sizes (B 64, K and N 4-300)
// it ran 1.1-1.3x MKL's batched GEMM on one core (AVX-512), with no per-call setup.
// A tile of accumulators fills about half the vector registers: 16 of 32 with AVX-512 and on ARM, 12 of 16
// with AVX2 or SSE. (benchmarks/RESULTS.md: other tiles were slower on AVX-512.)
#ifndef VECTOR_BYTES
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#define TILE_ROWS 8
#define TILE_VECTORS 2
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#define TILE_ROWS 4
#define TILE_VECTORS 3
#elif defined(__aarch64__)
#define VECTOR_BYTES 16
#define TILE_ROWS 4
#define TILE_VECTORS 4
#else
#define VECTOR_BYTES 16
#define TILE_ROWS 4
#define TILE_VECTORS 3
#endif
#endif
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(VECTOR_BYTES)));
  typedef int32_t Ints __attribute__((vector_size(VECTOR_BYTES)));
  typedef uint32_t Bits __attribute__((vector_size(VECTOR_BYTES)));
};
template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(VECTOR_BYTES)));
};

template <typename T>
constexpr int64_t lanes_of = sizeof(typename Lanes<T>::V) / sizeof(T);

template <typename V, typename T>
V load(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}

template <typename T>
struct Packed {
  Tensor data;
  int64_t k, n, row;  // row: n rounded up to whole vectors
  explicit Packed(const Tensor& w)
      : k(w.size(1)), n(w.size(2)), row((n + lanes_of<T> - 1) / lanes_of<T> * lanes_of<T>) {
    data = at::zeros({w.size(0), k, row}, w.options());
    data.narrow(2, 0, n).copy_(w);
  }
  const T* group(int64_t g) const { return data.data_ptr<T>() + g * k * row; }
};

// exp on a vector of floats (Cephes' expf: 2^n e^r, |r| <= ln2 / 2, a degree-7 polynomial; within 1 ulp of exp
// on [-80, 80], where the loops' sigmoids need it, and clamped there; NaN stays NaN).
inline Lanes<float>::V exp_lanes(Lanes<float>::V x) {
  using V = Lanes<float>::V;
  using Bits = Lanes<float>::Bits;
  const V bound = V{} + 80.0f;
  V y = x > bound ? bound : x;
  y = y < -bound ? -bound : y;
  const V shift = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (y * 1.44269504088896341f + shift) - shift;
  const V r = (y - n * 0.693359375f) - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  Bits bits;
  __builtin_memcpy(&bits, &p, sizeof(V));
  bits += __builtin_convertvector(__builtin_convertvector(n, Lanes<float>::Ints), Bits) << 23;  // times 2^n
  V e;
  __builtin_memcpy(&e, &bits, sizeof(V));
  return x != x ? x : e;
}

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
inline Lanes<float>::V sigmoid(Lanes<float>::V x) { return 1.0f / (1.0f + exp_lanes(-x)); }
inline Lanes<double>::V sigmoid(Lanes<double>::V x) {
  for (int j = 0; j < lanes_of<double>; ++j) x[j] = sigmoid(x[j]);
  return x;
}

// The activations a product can end in: none, the z|r gates' sigmoid, and the n gate's tanh, as
// 2 sigmoid(2x) - 1 (manual_backward._tanh_).
struct Linear {
  template <typename V>
  V operator()(V y) const { return y; }
};
struct Sigmoid {
  template <typename V>
  V operator()(V y) const { return sigmoid(y); }
};
struct Tanh {
  template <typename V>
  V operator()(V y) const { return sigmoid(y * 2) * 2 - 1; }
};

// R rows x NV vectors of out, from column 0 of the row pointers; `width` valid columns (the last vector may
// be partial).
template <typename T, int R, int NV, typename Act>
void gemm_tile(T* const* out, const T* const* add, const T* const* a, const T* w, int64_t k, int64_t row,
               int64_t width, Act act) {
  using V = typename Lanes<T>::V;
  constexpr int64_t L = lanes_of<T>;
  // the addend and output rows are in large buffers, far from the cache: ask for them (both ends of each vector:
  // rows need not start on a cache line) while the tile computes
  for (int r = 0; r < R; ++r)
    for (int64_t j : {int64_t(0), L, NV * L - 1}) {
      if (add) __builtin_prefetch(add[r] + j);
      __builtin_prefetch(out[r] + j, 1);
    }
  V c[R][NV] = {};
  for (int64_t i = 0; i < k; ++i) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load<V>(w + i * row + v * L);
    for (int r = 0; r < R; ++r) {
      const T x = a[r][i];
      for (int v = 0; v < NV; ++v) c[r][v] += x * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      const int64_t lanes = std::min(L, width - v * L);
      V y = c[r][v];
      if (add && lanes == L) y += load<V>(add[r] + v * L);
      if (add && lanes < L)
        for (int64_t j = 0; j < lanes; ++j) y[j] += add[r][v * L + j];
      y = act(y);
      if (lanes == L)
        __builtin_memcpy(out[r] + v * L, &y, sizeof(V));
      else
        for (int64_t j = 0; j < lanes; ++j) out[r][v * L + j] = y[j];
    }
}

template <typename T, int R, typename Act>
void gemm_rows(T* const* out, const T* const* add, const T* const* a, const Packed<T>& w, int64_t g, Act act) {
  constexpr int64_t L = lanes_of<T>;
  T* o[R];
  const T* x[R];
  for (int64_t col = 0; col < w.n; col += TILE_VECTORS * L) {
    for (int r = 0; r < R; ++r) o[r] = out[r] + col, x[r] = add ? add[r] + col : nullptr;
    const T* w_col = w.group(g) + col;
    const int64_t width = w.n - col;
    const int64_t vectors = std::min<int64_t>(TILE_VECTORS, (width + L - 1) / L);
    // the last columns: a tile of as many vectors as they need
    [&]<int... V>(std::integer_sequence<int, V...>) {
      ((vectors == V + 1 ? gemm_tile<T, R, V + 1>(o, add ? x : nullptr, a, w_col, w.k, w.row, width, act)
                         : void()),
       ...);
    }(std::make_integer_sequence<int, TILE_VECTORS>{});
  }
}

// out = act([addend +] a @ w) for every group; addend may be out itself (accumulate) or a row broadcast over
// the batch (row stride 0).
template <typename T, typename Act = Linear>
void gemm(const Tensor& out, const Tensor& a, const Packed<T>& w, const Maybe& addend = {}, Act act = {}) {
  constexpr int R = TILE_ROWS;
  Rows<T> o_rows(out), a_rows(a);
  std::optional<Rows<T>> x_rows;
  if (addend) x_rows.emplace(*addend);
  T* o[R];
  const T *x[R], *s[R];
  auto tile = [&](auto rows, int64_t g, int64_t b) {
    constexpr int n = decltype(rows)::value;
    for (int r = 0; r < n; ++r)
      o[r] = o_rows(g, b + r), s[r] = a_rows(g, b + r), x[r] = x_rows ? (*x_rows)(g, b + r) : nullptr;
    gemm_rows<T, n>(o, x_rows ? x : nullptr, s, w, g, act);
  };
  for (int64_t g = 0; g < out.size(0); ++g) {
    int64_t b = 0;
    for (; b + R <= out.size(1); b += R) tile(std::integral_constant<int, R>{}, g, b);
    for (; b < out.size(1); ++b) tile(std::integral_constant<int, 1>{}, g, b);
  }
}

// One network's forward record, per step: h_0..h_T, gates z|r and n.
struct Record {
  Steps h, zr, n;
  int64_t hidden;
  Record(const Tensor& trajectory, const Tensor& gates, const Tensor& n_gates)
      : h(steps_of(trajectory)), zr(steps_of(gates)), n(steps_of(n_gates)), hidden(n_gates.size(-1)) {}
};

template <typename T>
T clamp(T v, T clip) {
  return v < -clip ? -clip : (v > clip ? clip : v);  // NaN passes through, as torch.clamp
}

// Step t of a clipped GRU (manual_backward._gru_forward_step): writes z|r, n and h_{t+1} into the record.
template <typename T>
void gru_forward_step(int64_t t, Record& rnn, const Tensor& x_zr, const Tensor& x_n, const Packed<T>& w_zr,
                      const Packed<T>& w_n, Tensor& reset_h, T clip) {
  const int64_t H = rnn.hidden;
  Tensor zr = rnn.zr[t], n = rnn.n[t];
  gemm<T>(zr, rnn.h[t], w_zr, x_zr, Sigmoid{});
  Rows<T> z_rows(zr), h_rows(rnn.h[t]), rh_rows(reset_h), n_rows(n), next_rows(rnn.h[t + 1]);
  for_rows(zr, [&](int64_t g, int64_t b) {
    const T *r = z_rows(g, b) + H, *h = h_rows(g, b);
    T* rh = rh_rows(g, b);
    IVDEP for (int64_t j = 0; j < H; ++j) rh[j] = r[j] * h[j];
  });
  gemm<T>(n, reset_h, w_n, x_n, Tanh{});
  for_rows(n, [&](int64_t g, int64_t b) {
    const T *n_g = n_rows(g, b), *z = z_rows(g, b), *h = h_rows(g, b);
    T* next = next_rows(g, b);
    IVDEP for (int64_t j = 0; j < H; ++j) next[j] = clamp((h[j] - n_g[j]) * z[j] + n_g[j], clip);
  });
}

// Scratch rows of one network's backward step.
struct BackwardScratch {
  Tensor d_update, d_reset_h, base;
  explicit BackwardScratch(const Tensor& like) : d_update(scratch_like(like)), d_reset_h(scratch_like(like)),
                                                 base(scratch_like(like)) {}
};

// Step t of a clipped GRU in reverse (manual_backward._gru_backward_step): given g = dL/dh_t, writes dL/dx_proj_t
// (z | r | n) into d_x[t] and dL/dh_{t-1} into d_previous. The clamp passes the gradient where |h_t| < clip.
template <typename T>
void gru_backward_step(int64_t t, const Tensor& g, const Record& s, const Packed<T>& w_zr_t, const Packed<T>& w_n_t,
                       const Steps& d_x, BackwardScratch& scratch, Tensor& d_previous, T clip) {
  const int64_t H = s.hidden;
  Rows<T> g_rows(g), zr_rows(s.zr[t]), n_rows(s.n[t]), h_rows(s.h[t]), next_rows(s.h[t + 1]);
  Rows<T> dx_rows(d_x[t]), du_rows(scratch.d_update);
  for_rows(g, [&](int64_t gi, int64_t b) {
    const T *grad = g_rows(gi, b), *z = zr_rows(gi, b), *n = n_rows(gi, b), *h_next = next_rows(gi, b);
    const T* h_prev = h_rows(gi, b);
    T *dx = dx_rows(gi, b), *du = du_rows(gi, b);
    IVDEP for (int64_t j = 0; j < H; ++j) {
      const T d_update = grad[j] * T(std::abs(h_next[j]) < clip);
      const T one_minus_z = T(1) - z[j];
      du[j] = d_update;
      dx[2 * H + j] = (d_update * one_minus_z) * (T(1) - n[j] * n[j]);
      dx[j] = (d_update * (h_prev[j] - n[j])) * (z[j] * one_minus_z);
    }
  });
  gemm<T>(scratch.d_reset_h, d_x[t].narrow(-1, 2 * H, H), w_n_t);
  Rows<T> drh_rows(scratch.d_reset_h), base_rows(scratch.base);
  for_rows(g, [&](int64_t gi, int64_t b) {
    const T *z = zr_rows(gi, b), *r = zr_rows(gi, b) + H, *h_prev = h_rows(gi, b);
    const T *drh = drh_rows(gi, b), *du = du_rows(gi, b);
    T *dx = dx_rows(gi, b), *base = base_rows(gi, b);
    IVDEP for (int64_t j = 0; j < H; ++j) {
      dx[H + j] = (drh[j] * h_prev[j]) * (r[j] - r[j] * r[j]);
      base[j] = du[j] * z[j] + drh[j] * r[j];
    }
  });
  gemm<T>(scratch.base, d_x[t].narrow(-1, 0, 2 * H), w_zr_t, scratch.base);
  std::swap(scratch.base, d_previous);
}

// out = a + b (+ c), row by row.
template <typename T>
void add_rows(const Tensor& out, const Tensor& a, const Tensor& b, const Maybe& c = {}) {
  const int64_t X = out.size(-1);
  Rows<T> o_rows(out), a_rows(a), b_rows(b);
  for_rows(out, [&](int64_t g, int64_t r) {
    const T *x = a_rows(g, r), *y = b_rows(g, r);
    T* o = o_rows(g, r);
    IVDEP for (int64_t j = 0; j < X; ++j) o[j] = x[j] + y[j];
  });
  if (!c) return;
  Rows<T> c_rows(*c);
  for_rows(out, [&](int64_t g, int64_t r) {
    const T* z = c_rows(g, r);
    T* o = o_rows(g, r);
    IVDEP for (int64_t j = 0; j < X; ++j) o[j] = o[j] + z[j];
  });
}

// out = a * b, row by row (out may be a).
template <typename T>
void mul_rows(const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t X = out.size(-1);
  Rows<T> o_rows(out), a_rows(a), b_rows(b);
  for_rows(out, [&](int64_t g, int64_t r) {
    const T *x = a_rows(g, r), *y = b_rows(g, r);
    T* o = o_rows(g, r);
    IVDEP for (int64_t j = 0; j < X; ++j) o[j] = x[j] * y[j];
  });
}

template <typename T>
void gru_forward_impl(const Tensor& x_proj, const Tensor& trajectory, const Tensor& gates, const Tensor& n_gates,
                      const Tensor& w_zr, const Tensor& w_n, double clip) {
  Record rnn(trajectory, gates, n_gates);
  const int64_t H = rnn.hidden;
  Tensor reset_h = scratch_like(rnn.h[0]);
  const Steps x = steps_of(x_proj);
  const Packed<T> zr(w_zr), n(w_n);
  for (int64_t t = 0; t < x_proj.size(1); ++t)
    gru_forward_step<T>(t, rnn, x[t].narrow(-1, 0, 2 * H), x[t].narrow(-1, 2 * H, H), zr, n, reset_h, T(clip));
}

template <typename T>
Tensor gru_backward_impl(const Tensor& d_states, const Tensor& trajectory, const Tensor& gates,
                         const Tensor& n_gates, const Tensor& w_zr, const Tensor& w_n, const Tensor& d_x_all,
                         T clip) {
  const Record s(trajectory, gates, n_gates);
  const Packed<T> w_zr_t(w_zr.transpose(1, 2)), w_n_t(w_n.transpose(1, 2));
  const Steps d_steps = steps_of(d_states), d_x = steps_of(d_x_all);
  BackwardScratch scratch(d_steps[0]);
  Tensor g = scratch_like(d_steps[0]), d_h = scratch_like(d_steps[0]);
  const int64_t last = d_states.size(1) - 1;
  gru_backward_step<T>(last, d_steps[last], s, w_zr_t, w_n_t, d_x, scratch, d_h, clip);
  for (int64_t t = last - 1; t >= 0; --t) {
    add_rows<T>(g, d_steps[t], d_h);
    gru_backward_step<T>(t, g, s, w_zr_t, w_n_t, d_x, scratch, d_h, clip);
  }
  return d_h;
}

// ManualGRUSequence's forward loop: x_proj (G, T, B, 3H); trajectory (G, T + 1, B, H) with h_0 in place, gates
// (G, T, B, 2H), n_gates (G, T, B, H) are filled in.
void gru_forward(const Tensor& x_proj, const Tensor& trajectory, const Tensor& gates, const Tensor& n_gates,
                 const Tensor& w_zr, const Tensor& w_n, double clip) {
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gru_forward",
                             [&] { gru_forward_impl<scalar_t>(x_proj, trajectory, gates, n_gates, w_zr, w_n, clip); });
}

// ManualGRUSequence's backward loop: fills d_x_all (G, T, B, 3H) and returns dL/dh_0.
Tensor gru_backward(const Tensor& d_states, const Tensor& trajectory, const Tensor& gates, const Tensor& n_gates,
                    const Tensor& w_zr, const Tensor& w_n, const Tensor& d_x_all, double clip) {
  Tensor d_h;
  AT_DISPATCH_FLOATING_TYPES(d_states.scalar_type(), "gru_backward", [&] {
    d_h = gru_backward_impl<scalar_t>(d_states.contiguous(), trajectory, gates, n_gates, w_zr, w_n, d_x_all,
                                      scalar_t(clip));
  });
  return d_h;
}

// The controller's side of the decoder loop: its inputs, weights, record and output buffers.
template <typename T>
struct Controller {
  Packed<T> w_fac, w_zr, w_n, co_w, gen_w_co;
  Tensor co_b;  // broadcast over the batch: (G, B, 2 co_dim) with row stride 0
  Steps x, params, stds, gen_inputs, masks, noise;
  Record rnn;
  int64_t hidden, co_dim;
  Controller(const Named& t, const Maybe& mask, const Maybe& noise)
      : w_fac(field(t, "w_fac")), w_zr(field(t, "zr")), w_n(field(t, "n")), co_w(field(t, "co_w")),
        gen_w_co(field(t, "gen_w_co")),
        co_b(field(t, "co_b").unsqueeze(1).expand({-1, field(t, "trajectory").size(2), -1})),
        x(steps_of(field(t, "in_proj"))), params(steps_of(field(t, "params"))), stds(steps_of(field(t, "stds"))),
        gen_inputs(steps_of(field(t, "gen_inputs"))),
        rnn(field(t, "trajectory"), field(t, "zr_gates"), field(t, "n_gates")), hidden(rnn.hidden),
        co_dim(field(t, "stds").size(-1)) {
    if (mask) masks = steps_of(mask->contiguous());
    if (noise) this->noise = steps_of(noise->contiguous());
  }
};

// The controller step of the decoder's forward loop (manual_backward._controller_forward_step): returns the generator's
// input projection for step t with the controller output added, in gen_x.
template <typename T>
void controller_forward_step(int64_t t, Controller<T>& con, const Tensor& factor, const Tensor& gen_in_x,
                             Tensor& con_factor, Tensor& con_x, Tensor& reset_h, Tensor& gen_x, T clip) {
  const int64_t H = con.hidden, C = con.co_dim;
  const Tensor* factor_in = &factor;
  if (!con.masks.empty()) {
    mul_rows<T>(con_factor, factor, con.masks[t]);
    factor_in = &con_factor;
  }
  gemm<T>(con_x, *factor_in, con.w_fac, con.x[t]);
  gru_forward_step<T>(t, con.rnn, con_x.narrow(-1, 0, 2 * H), con_x.narrow(-1, 2 * H, H), con.w_zr, con.w_n,
                      reset_h, clip);
  Tensor params = con.params[t];
  gemm<T>(params, con.rnn.h[t + 1], con.co_w, con.co_b);
  Rows<T> p_rows(params), std_rows(con.stds[t]), co_rows(con.gen_inputs[t]);
  const bool sampled = !con.noise.empty();
  Rows<T> noise_rows(sampled ? con.noise[t] : con.stds[t]);
  for_rows(params, [&](int64_t g, int64_t b) {
    const T *mean = p_rows(g, b), *logvar = p_rows(g, b) + C, *eps = noise_rows(g, b);
    T *std = std_rows(g, b), *co = co_rows(g, b);
    IVDEP for (int64_t j = 0; j < C; ++j) {
      std[j] = std::exp(logvar[j] * T(0.5));
      co[j] = sampled ? mean[j] + std[j] * eps[j] : mean[j];
    }
  });
  gemm<T>(gen_x, con.gen_inputs[t], con.gen_w_co, gen_in_x);
}

template <typename T>
void decoder_forward_impl(const Named& gen_t, const Tensor& factor_trajectory, const Maybe& gen_mask,
                          const std::optional<Named>& con_t, const Maybe& con_mask, const Maybe& co_noise,
                          double clip_) {
  const T clip(clip_);
  const Tensor& gen_in_proj = field(gen_t, "in_proj");
  const Packed<T> gen_zr(field(gen_t, "zr")), gen_n(field(gen_t, "n")), factor_w(field(gen_t, "factor_w"));
  Record gen(field(gen_t, "trajectory"), field(gen_t, "zr_gates"), field(gen_t, "n_gates"));
  const int64_t H = gen.hidden;
  const Steps gen_x_steps = steps_of(gen_in_proj), factors = steps_of(factor_trajectory);
  const Steps gen_masks = gen_mask ? steps_of(gen_mask->contiguous()) : Steps{};
  std::optional<Controller<T>> con;
  if (con_t) con.emplace(*con_t, con_mask, co_noise);
  Tensor reset_h = scratch_like(gen.h[0]), masked_h = scratch_like(reset_h);
  Tensor gen_x = scratch_like(gen_x_steps[0]);
  Tensor con_factor, con_x, con_reset_h;
  if (con) {
    con_factor = scratch_like(factors[0]);
    con_x = scratch_like(con->x[0]);
    con_reset_h = scratch_like(con->rnn.h[0]);
  }
  for (int64_t t = 0; t < gen_in_proj.size(1); ++t) {
    const Tensor* x = &gen_x_steps[t];
    if (con) {
      controller_forward_step<T>(t, *con, factors[t], gen_x_steps[t], con_factor, con_x, con_reset_h, gen_x, clip);
      x = &gen_x;
    }
    gru_forward_step<T>(t, gen, x->narrow(-1, 0, 2 * H), x->narrow(-1, 2 * H, H), gen_zr, gen_n, reset_h, clip);
    const Tensor* out = &gen.h[t + 1];
    if (!gen_masks.empty()) {
      mul_rows<T>(masked_h, gen.h[t + 1], gen_masks[t]);
      out = &masked_h;
    }
    Tensor factor = factors[t + 1];
    gemm<T>(factor, *out, factor_w);
  }
}

// ManualDecoder's forward loop, each side's tensors by name (manual_backward._cpp_decoder_forward). Fills the
// records in place.
void decoder_forward(const Named& gen, const Tensor& factor_trajectory, const Maybe& gen_mask,
                     const std::optional<Named>& con, const Maybe& con_mask, const Maybe& co_noise, double clip) {
  AT_DISPATCH_FLOATING_TYPES(factor_trajectory.scalar_type(), "decoder_forward", [&] {
    decoder_forward_impl<scalar_t>(gen, factor_trajectory, gen_mask, con, con_mask, co_noise, clip);
  });
}

// The controller's side of the decoder's backward loop.
template <typename T>
struct ControllerBackward {
  Record saved;
  Steps d_x, d_params, d_gen_inputs, d_co_means, d_co_stds, d_states, stds, noise, masks;
  Packed<T> zr_t, n_t, co_w_t, gen_w_co_t, w_fac_t;
  BackwardScratch scratch;
  Tensor d_co, d_con, g, d_h;
  int64_t co_dim;
  bool started = false;
  ControllerBackward(const Named& t, const Maybe& noise, const Maybe& mask)
      : saved(field(t, "trajectory"), field(t, "zr_gates"), field(t, "n_gates")), d_x(steps_of(field(t, "d_x"))),
        d_params(steps_of(field(t, "d_params"))), d_gen_inputs(steps_of(field(t, "d_gen_inputs").contiguous())),
        d_co_means(steps_of(field(t, "d_co_means").contiguous())),
        d_co_stds(steps_of(field(t, "d_co_stds").contiguous())),
        d_states(steps_of(field(t, "d_states").contiguous())), stds(steps_of(field(t, "stds"))),
        zr_t(field(t, "zr").transpose(1, 2)), n_t(field(t, "n").transpose(1, 2)),
        co_w_t(field(t, "co_w").transpose(1, 2)), gen_w_co_t(field(t, "gen_w_co").transpose(1, 2)),
        w_fac_t(field(t, "w_fac").transpose(1, 2)), scratch(saved.h[0]), d_co(scratch_like(d_gen_inputs[0])),
        d_con(scratch_like(saved.h[0])), g(scratch_like(d_con)), d_h(scratch_like(d_con)),
        co_dim(field(t, "stds").size(-1)) {
    if (noise) this->noise = steps_of(noise->contiguous());
    if (mask) masks = steps_of(mask->contiguous());
  }
};

// The controller step in reverse (manual_backward._controller_backward_step): from dL/dx_gen_t, writes dL/dfactor_{t-1}
// through the controller into d_factor.
template <typename T>
void controller_backward_step(int64_t t, ControllerBackward<T>& con, const Tensor& d_gen_x, Tensor& d_factor,
                              T clip) {
  const int64_t C = con.co_dim;
  gemm<T>(con.d_co, d_gen_x, con.gen_w_co_t, con.d_gen_inputs[t]);
  Rows<T> dco_rows(con.d_co), dp_rows(con.d_params[t]), dm_rows(con.d_co_means[t]), ds_rows(con.d_co_stds[t]);
  Rows<T> std_rows(con.stds[t]);
  const bool sampled = !con.noise.empty();
  Rows<T> noise_rows(sampled ? con.noise[t] : con.stds[t]);
  for_rows(con.d_co, [&](int64_t g, int64_t b) {
    const T *d_co = dco_rows(g, b), *d_mean = dm_rows(g, b), *d_std_in = ds_rows(g, b), *std = std_rows(g, b);
    const T* eps = noise_rows(g, b);
    T* d_params = dp_rows(g, b);
    IVDEP for (int64_t j = 0; j < C; ++j) {
      d_params[j] = d_co[j] + d_mean[j];
      const T d_std = sampled ? d_std_in[j] + d_co[j] * eps[j] : d_std_in[j];
      d_params[C + j] = d_std * (T(0.5) * std[j]);
    }
  });
  gemm<T>(con.d_con, con.d_params[t], con.co_w_t, con.d_states[t]);
  const Tensor* g = &con.d_con;
  if (con.started) {
    add_rows<T>(con.g, con.d_con, con.d_h);
    g = &con.g;
  }
  con.started = true;
  gru_backward_step<T>(t, *g, con.saved, con.zr_t, con.n_t, con.d_x, con.scratch, con.d_h, clip);
  gemm<T>(d_factor, con.d_x[t], con.w_fac_t);
  if (!con.masks.empty()) mul_rows<T>(d_factor, d_factor, con.masks[t]);
}

template <typename T>
std::vector<Tensor> decoder_backward_impl(const Named& gen_t, const Tensor& d_factor_all,
                                          const Tensor& d_factors_, const Tensor& d_gen_states_,
                                          const Maybe& gen_mask, const std::optional<Named>& con_t,
                                          const Maybe& co_noise, const Maybe& con_mask, T clip) {
  const Record gen(field(gen_t, "trajectory"), field(gen_t, "zr_gates"), field(gen_t, "n_gates"));
  const Steps d_gen_x = steps_of(field(gen_t, "d_x"));
  const Packed<T> gen_zr_t(field(gen_t, "zr").transpose(1, 2)), gen_n_t(field(gen_t, "n").transpose(1, 2));
  const Packed<T> factor_w_t(field(gen_t, "factor_w").transpose(1, 2));
  const Steps d_factor_steps = steps_of(d_factor_all), d_factors = steps_of(d_factors_.contiguous());
  const Steps d_gen_states = steps_of(d_gen_states_.contiguous());
  const Steps gen_masks = gen_mask ? steps_of(gen_mask->contiguous()) : Steps{};
  std::optional<ControllerBackward<T>> con;
  if (con_t) con.emplace(*con_t, co_noise, con_mask);
  BackwardScratch scratch(d_gen_states[0]);
  Tensor d_gen_in = scratch_like(d_gen_states[0]), g = scratch_like(d_gen_states[0]);
  Tensor d_gen_h = scratch_like(d_gen_states[0]), carry = scratch_like(d_factors[0]);
  for (int64_t t = static_cast<int64_t>(d_gen_states.size()) - 1; t >= 0; --t) {
    const bool last = t == static_cast<int64_t>(d_gen_states.size()) - 1;
    if (con && !last)
      add_rows<T>(d_factor_steps[t], d_factors[t], carry);
    else
      d_factor_steps[t].copy_(d_factors[t]);
    gemm<T>(d_gen_in, d_factor_steps[t], factor_w_t);
    if (!gen_masks.empty()) mul_rows<T>(d_gen_in, d_gen_in, gen_masks[t]);
    if (last)
      add_rows<T>(g, d_gen_states[t], d_gen_in);
    else
      add_rows<T>(g, d_gen_states[t], d_gen_in, d_gen_h);
    gru_backward_step<T>(t, g, gen, gen_zr_t, gen_n_t, d_gen_x, scratch, d_gen_h, clip);
    if (con) controller_backward_step<T>(t, *con, d_gen_x[t], carry, clip);
  }
  if (!con) return {d_gen_h};
  return {d_gen_h, carry, con->d_h};
}

// ManualDecoder's backward loop, each side's tensors by name (manual_backward._cpp_decoder_backward). Fills
// d_factor_all, the generator's d_x and the controller's d_x and d_params; returns dL/dgen_init, and with a
// controller dL/dfactor0 and dL/dcon_h0.
std::vector<Tensor> decoder_backward(const Named& gen, const Tensor& d_factor_all, const Tensor& d_factors,
                                     const Tensor& d_gen_states, const Maybe& gen_mask,
                                     const std::optional<Named>& con, const Maybe& co_noise, const Maybe& con_mask,
                                     double clip) {
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(d_factor_all.scalar_type(), "decoder_backward", [&] {
    out = decoder_backward_impl<scalar_t>(gen, d_factor_all, d_factors, d_gen_states, gen_mask, con, co_noise,
                                          con_mask, scalar_t(clip));
  });
  return out;
}

// An input projection of whole sequences, [bias (G, 1, N) +] x (G, M, K) @ w (G, K, N), by the loops' kernel: at
// M = T x B rows it ran 1.3-1.9x MKL's batched GEMM on one core.
Tensor project(const Tensor& x, const Tensor& w, const Maybe& bias) {
  Tensor out = at::empty({x.size(0), x.size(1), w.size(2)}, x.options());
  Maybe rows;
  if (bias) rows = bias->contiguous().expand({-1, x.size(1), -1});
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "project",
                             [&] { gemm<scalar_t>(out, x.contiguous(), Packed<scalar_t>(w), rows); });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  m.def("decoder_forward", &decoder_forward);
  m.def("decoder_backward", &decoder_backward);
  m.def("project", &project);
}
