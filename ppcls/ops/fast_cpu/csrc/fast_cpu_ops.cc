// CPU kernels for the MobileNeXt fast training path (float32, and float64 for tests; NCHW).
//
//   fast_dwconv3x3        depthwise 3x3 convolution, padding 1, stride 1 or 2,
//                         with its input and weight gradients;
//   fast_bn_act_train     training-mode batch norm (batch statistics, running-stat update)
//                         optionally fused with ReLU6, with its gradients;
//   fast_conv1x1          pointwise convolution as GEMM (oneDNN's sgemm), with its gradients.
//
// Paddle's own CPU kernels for these run one thread and, for the depthwise convolution,
// a generic grouped-convolution loop; these are written for what MobileNeXt needs only.
// Every loop over planes or channels is an OpenMP loop with an explicit thread count
// (attribute "threads"), and the inner loops are plain contiguous loops the compiler
// vectorises. Per-plane sums are in the tensor's type, sums across planes double.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "paddle/extension.h"

// oneDNN's C GEMM, from the libdnnl.so.3 that Paddle ships (declared here: its headers need
// not be on the include path). Row-major; returns dnnl_success (0) on success.
extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                          const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                          float* C, int64_t ldc);

namespace {

constexpr int64_t kMinParallelWork = 1 << 14;  // below this many elements, stay on one thread

inline int ThreadsFor(int64_t work, int threads) {
  return work < kMinParallelWork ? 1 : std::max(1, threads);
}

inline int64_t OutSize(int64_t in, int stride) { return (in - 1) / stride + 1; }

void CheckInputs(const paddle::Tensor& x, const paddle::Tensor& w) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "fast_dwconv3x3 runs on CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 || x.dtype() == paddle::DataType::FLOAT64,
           "fast_dwconv3x3 takes float32 or float64");
  PD_CHECK(w.dtype() == x.dtype(), "fast_dwconv3x3: weight and input dtypes differ");
  PD_CHECK(x.shape().size() == 4, "fast_dwconv3x3 takes NCHW input");
  PD_CHECK(w.shape().size() == 4 && w.shape()[0] == x.shape()[1] && w.shape()[1] == 1 &&
               w.shape()[2] == 3 && w.shape()[3] == 3,
           "fast_dwconv3x3 weight must be [C, 1, 3, 3]");
}

// ---------------------------------------------------------------------------------------
// Depthwise 3x3, one plane. Rows outside the input read from `zeros` (padding 1).
// ---------------------------------------------------------------------------------------

// y[i][j] = sum_{a,b} k[a][b] * x[S*i + a - 1][S*j + b - 1]
template <typename T, int S>
void DwPlaneForward(const T* __restrict x, int64_t H, int64_t W, const T* k,
                    const T* __restrict zeros, T* __restrict y, int64_t Ho, int64_t Wo) {
  // Interior columns: every tap inside the row, j in [j0, j1).
  const int64_t j0 = 1;
  const int64_t j1 = (W < 2) ? j0 : std::max<int64_t>(j0, std::min<int64_t>(Wo, (W - 2) / S + 1));
  for (int64_t i = 0; i < Ho; ++i) {
    const T* rows[3];
    for (int a = 0; a < 3; ++a) {
      const int64_t r = S * i + a - 1;
      rows[a] = (r < 0 || r >= H) ? zeros : x + r * W;
    }
    const T* __restrict r0 = rows[0];
    const T* __restrict r1 = rows[1];
    const T* __restrict r2 = rows[2];
    T* __restrict yr = y + i * Wo;
    auto edge = [&](int64_t j) {
      T s = 0;
      for (int b = 0; b < 3; ++b) {
        const int64_t c = S * j + b - 1;
        if (c < 0 || c >= W) continue;
        s += k[b] * r0[c] + k[3 + b] * r1[c] + k[6 + b] * r2[c];
      }
      yr[j] = s;
    };
    edge(0);
    if (S == 1) {
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) {
        yr[j] = k[0] * r0[j - 1] + k[1] * r0[j] + k[2] * r0[j + 1] + k[3] * r1[j - 1] +
                k[4] * r1[j] + k[5] * r1[j + 1] + k[6] * r2[j - 1] + k[7] * r2[j] +
                k[8] * r2[j + 1];
      }
    } else {
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t c = S * j;
        yr[j] = k[0] * r0[c - 1] + k[1] * r0[c] + k[2] * r0[c + 1] + k[3] * r1[c - 1] +
                k[4] * r1[c] + k[5] * r1[c + 1] + k[6] * r2[c - 1] + k[7] * r2[c] +
                k[8] * r2[c + 1];
      }
    }
    for (int64_t j = std::max<int64_t>(j1, 1); j < Wo; ++j) edge(j);
  }
}

// Input gradient of a stride-2 plane: dx[r][c] gathers the dy entries it contributed to.
template <typename T>
void DwPlaneInputGradStride2(const T* __restrict dy, int64_t Ho, int64_t Wo, const T* k,
                             T* __restrict dx, int64_t H, int64_t W) {
  for (int64_t r = 0; r < H; ++r) {
    T* __restrict dxr = dx + r * W;
    for (int64_t c = 0; c < W; ++c) dxr[c] = 0;
    // Input row r = 2*i + a - 1: a = 1 for even r; a = 0 (i = (r+1)/2) and a = 2 (i = (r-1)/2) for odd r.
    for (int a = 0; a < 3; ++a) {
      const int64_t num = r + 1 - a;
      if (num < 0 || (num & 1)) continue;
      const int64_t i = num / 2;
      if (i >= Ho) continue;
      const T* __restrict g = dy + i * Wo;
      const T k0 = k[3 * a], k1 = k[3 * a + 1], k2 = k[3 * a + 2];
      // even columns c = 2j take b = 1; odd columns c = 2j + 1 take b = 0 (j + 1) and b = 2 (j).
      // Every j < Wo - 1 has both columns inside the row; the last j may lack c + 1.
#pragma omp simd
      for (int64_t j = 0; j < Wo - 1; ++j) {
        dxr[2 * j] += k1 * g[j];
        dxr[2 * j + 1] += k2 * g[j] + k0 * g[j + 1];
      }
      const int64_t j = Wo - 1;
      dxr[2 * j] += k1 * g[j];
      if (2 * j + 1 < W) dxr[2 * j + 1] += k2 * g[j];
    }
  }
}

// Weight gradient contribution of one plane: acc[a*3+b] += sum_{i,j} dy[i][j] x[S*i+a-1][S*j+b-1].
// Stride 1 keeps the nine sums as nine 64-byte vector accumulators over the whole plane
// (GCC vector extensions; rows outside the input read `zeros`) and reduces them once at
// the end: a horizontal reduction per row and tap would cost more than the products.
template <typename T>
struct Vec64 {
  typedef T type __attribute__((vector_size(64)));
  static constexpr int kLanes = 64 / sizeof(T);
  static type Load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
};

template <typename T, int S>
void DwPlaneWeightGrad(const T* __restrict x, int64_t H, int64_t W, const T* __restrict dy,
                       int64_t Ho, int64_t Wo, const T* __restrict zeros, double* acc) {
  using V = typename Vec64<T>::type;
  constexpr int kLanes = Vec64<T>::kLanes;
  V vacc[9];
  for (int t = 0; t < 9; ++t) vacc[t] = V{} ;
  T part[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  // Columns j in [1, j1) have all three taps inside the row.
  const int64_t j1 = (W < 2) ? 1 : std::max<int64_t>(1, std::min<int64_t>(Wo, (W - 2) / S + 1));
  for (int64_t i = 0; i < Ho; ++i) {
    const T* __restrict g = dy + i * Wo;
    const T* rows[3];
    for (int a = 0; a < 3; ++a) {
      const int64_t r = S * i + a - 1;
      rows[a] = (r < 0 || r >= H) ? zeros : x + r * W;
    }
    int64_t j = 1;
    if (S == 1) {
      for (; j + kLanes <= j1; j += kLanes) {
        const V gv = Vec64<T>::Load(g + j);
#pragma GCC unroll 3
        for (int a = 0; a < 3; ++a) {
          vacc[3 * a] += gv * Vec64<T>::Load(rows[a] + j - 1);
          vacc[3 * a + 1] += gv * Vec64<T>::Load(rows[a] + j);
          vacc[3 * a + 2] += gv * Vec64<T>::Load(rows[a] + j + 1);
        }
      }
    }
    // The rest (stride 2, the interior tail, column 0, columns past j1), scalar with bounds.
    auto column = [&](int64_t jj) {
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) {
          const int64_t c = S * jj + b - 1;
          if (c >= 0 && c < W) part[3 * a + b] += g[jj] * rows[a][c];
        }
    };
    for (; j < Wo; ++j) column(j);
    column(0);
  }
  for (int t = 0; t < 9; ++t) {
    T sum = part[t];
    for (int l = 0; l < kLanes; ++l) sum += vacc[t][l];
    acc[t] += sum;
  }
}

// Narrow planes (the 14x14 and smaller maps), stride 1: a row-wise loop would be a few
// lanes long, so these work on a zero-bordered copy of the plane, [H + 2, W + 2], and run
// one flat loop over H * (W + 2) positions (the two border columns are computed and
// dropped). Buffers are per thread; borders are zeroed once and never written.
constexpr int64_t kNarrowPlane = 32;

template <typename T>
struct NarrowBuffers {
  int64_t H, W, P;             // P = W + 2, the padded row pitch
  std::vector<T> pad, flat, g;  // [(H+2)*P + 2], [H*P], [H*P]
  NarrowBuffers(int64_t h, int64_t w)
      : H(h), W(w), P(w + 2), pad((h + 2) * (w + 2) + 2, T(0)), flat(h * (w + 2), T(0)),
        g(h * (w + 2), T(0)) {}
  void Pad(const T* x) {
    for (int64_t i = 0; i < H; ++i) std::memcpy(&pad[(i + 1) * P + 1], x + i * W, W * sizeof(T));
  }
};

template <typename T>
void DwPlaneForwardNarrow(const T* x, const T* k, T* __restrict y, NarrowBuffers<T>* buf) {
  buf->Pad(x);
  const int64_t P = buf->P, L = buf->H * P;
  const T* __restrict p0 = buf->pad.data();
  const T* __restrict p1 = p0 + P;
  const T* __restrict p2 = p0 + 2 * P;
  T* __restrict o = buf->flat.data();
#pragma omp simd
  for (int64_t q = 0; q < L; ++q) {
    o[q] = k[0] * p0[q] + k[1] * p0[q + 1] + k[2] * p0[q + 2] + k[3] * p1[q] + k[4] * p1[q + 1] +
           k[5] * p1[q + 2] + k[6] * p2[q] + k[7] * p2[q + 1] + k[8] * p2[q + 2];
  }
  for (int64_t i = 0; i < buf->H; ++i) std::memcpy(y + i * buf->W, o + i * P, buf->W * sizeof(T));
}

template <typename T>
void DwPlaneWeightGradNarrow(const T* x, const T* dy, NarrowBuffers<T>* buf, double* acc) {
  buf->Pad(x);
  const int64_t P = buf->P, L = buf->H * P, W = buf->W;
  for (int64_t i = 0; i < buf->H; ++i) std::memcpy(&buf->g[i * P], dy + i * W, W * sizeof(T));
  const T* __restrict p0 = buf->pad.data();
  const T* __restrict p1 = p0 + P;
  const T* __restrict p2 = p0 + 2 * P;
  const T* __restrict g = buf->g.data();
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8)
  for (int64_t q = 0; q < L; ++q) {
    const T gv = g[q];
    s0 += gv * p0[q];
    s1 += gv * p0[q + 1];
    s2 += gv * p0[q + 2];
    s3 += gv * p1[q];
    s4 += gv * p1[q + 1];
    s5 += gv * p1[q + 2];
    s6 += gv * p2[q];
    s7 += gv * p2[q + 1];
    s8 += gv * p2[q + 2];
  }
  const T sums[9] = {s0, s1, s2, s3, s4, s5, s6, s7, s8};
  for (int t = 0; t < 9; ++t) acc[t] += sums[t];
}

template <typename T, int S>
void DwForwardAll(const T* x, const T* w, T* y, int64_t N, int64_t C, int64_t H,
                  int64_t W, int threads) {
  const int64_t Ho = OutSize(H, S), Wo = OutSize(W, S);
  const int nt = ThreadsFor(N * C * H * W, threads);
  const bool narrow = S == 1 && W < kNarrowPlane;
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> zeros(W, T(0));
    NarrowBuffers<T> buf(narrow ? H : 0, narrow ? W : 0);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < N * C; ++p) {
      const int64_t c = p % C;
      if (narrow) {
        DwPlaneForwardNarrow<T>(x + p * H * W, w + 9 * c, y + p * Ho * Wo, &buf);
      } else {
        DwPlaneForward<T, S>(x + p * H * W, H, W, w + 9 * c, zeros.data(), y + p * Ho * Wo, Ho, Wo);
      }
    }
  }
}


template <typename T>
void DwBackwardAll(const T* xp, const T* wp, const T* gp, T* dxp, T* dwp, int64_t N, int64_t C,
                   int64_t H, int64_t W, int stride, int threads) {
  const int64_t Ho = OutSize(H, stride), Wo = OutSize(W, stride);
  // Input gradient: stride 1 is the forward pass with the kernel turned by 180 degrees.
  if (stride == 1) {
    std::vector<T> flipped(9 * C);
    for (int64_t c = 0; c < C; ++c)
      for (int t = 0; t < 9; ++t) flipped[9 * c + t] = wp[9 * c + 8 - t];
    DwForwardAll<T, 1>(gp, flipped.data(), dxp, N, C, H, W, threads);
  } else {
#pragma omp parallel for schedule(static) num_threads(ThreadsFor(N * C * H * W, threads))
    for (int64_t p = 0; p < N * C; ++p) {
      DwPlaneInputGradStride2<T>(gp + p * Ho * Wo, Ho, Wo, wp + 9 * (p % C), dxp + p * H * W, H, W);
    }
  }
  // Weight gradient: each thread owns whole channels and sums over the batch.
#pragma omp parallel num_threads(ThreadsFor(N * C * H * W, std::min<int64_t>(threads, C)))
  {
    const std::vector<T> zeros(W, T(0));
    const bool narrow = stride == 1 && W < kNarrowPlane;
    NarrowBuffers<T> buf(narrow ? H : 0, narrow ? W : 0);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      double acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n * C + c;
        if (narrow) {
          DwPlaneWeightGradNarrow<T>(xp + p * H * W, gp + p * Ho * Wo, &buf, acc);
        } else if (stride == 1) {
          DwPlaneWeightGrad<T, 1>(xp + p * H * W, H, W, gp + p * Ho * Wo, Ho, Wo, zeros.data(), acc);
        } else {
          DwPlaneWeightGrad<T, 2>(xp + p * H * W, H, W, gp + p * Ho * Wo, Ho, Wo, zeros.data(), acc);
        }
      }
      for (int t = 0; t < 9; ++t) dwp[9 * c + t] = static_cast<T>(acc[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Batch norm on batch statistics (+ ReLU6). Large planes go channel by channel (contiguous
// HW runs); small planes (the late, low-resolution layers) go sample by sample over whole
// C*HW rows with per-element accumulators, since a per-plane loop would be all overhead.
//
// y = act(fma(x - mean, scale, beta)), scale = gamma * invstd rounded to T. The backward
// pass recomputes the pre-activation by the same expression from the same T values, so
// its ReLU6 mask is exactly the forward's (0 < pre < 6, as paddle's relu6_grad on the
// output), without keeping or reading y. Sums over the batch are double.
// ---------------------------------------------------------------------------------------

constexpr int64_t kSmallPlane = 64;  // HW below this: row-wise regime

template <typename T>
inline T Relu6(T v) {  // by selects: std::min/max take references and defeat vectorisation
  v = v > T(0) ? v : T(0);
  return v < T(6) ? v : T(6);
}

template <bool kRelu6, typename T>
inline T Activate(T pre) {
  return kRelu6 ? Relu6(pre) : pre;
}

template <bool kRelu6, typename T>
inline T PassGrad(T pre, T g) {  // the activation's gradient at `pre`
  return (!kRelu6 || ((pre > T(0)) & (pre < T(6)))) ? g : T(0);
}

template <typename T>
inline T BnScale(T gamma, T invstd) {
  return static_cast<T>(static_cast<double>(gamma) * static_cast<double>(invstd));
}

// Row-wise sums over the batch: f(n, acc) adds sample n's row(s) into acc (width L each,
// `rows` of them), split over threads by sample ranges; partial sums are added in thread
// order, so results are deterministic for a given thread count.
template <typename F>
std::vector<double> RowSums(int64_t N, int64_t L, int rows, int threads, F f) {
  const int nt = static_cast<int>(std::min<int64_t>(ThreadsFor(N * L, threads), N));
  const int64_t width = L * rows;
  std::vector<double> part(static_cast<size_t>(nt) * width, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    double* acc = part.data() + t * width;
    for (int64_t n = N * t / nt; n < N * (t + 1) / nt; ++n) f(n, acc);
  }
  std::vector<double> out(part.begin(), part.begin() + width);
  for (int t = 1; t < nt; ++t)
    for (int64_t j = 0; j < width; ++j) out[j] += part[t * width + j];
  return out;
}

// Per-channel sums of an L = C*HW row, and per-channel values expanded to such a row.
inline std::vector<double> ChannelSums(const double* row, int64_t C, int64_t HW) {
  std::vector<double> sums(C, 0.0);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < HW; ++k) sums[c] += row[c * HW + k];
  return sums;
}

template <typename T, typename U>
std::vector<T> ExpandRow(const U* per_channel, int64_t C, int64_t HW) {
  std::vector<T> row(C * HW);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < HW; ++k) row[c * HW + k] = static_cast<T>(per_channel[c]);
  return row;
}

template <typename T>
struct BnForwardArgs {
  const T *x, *gamma, *beta, *running_mean, *running_var;
  T *y, *saved_mean, *saved_invstd, *mean_out, *var_out;
  int64_t N, C, HW;
  double momentum, epsilon;
  int threads;

  // From channel c's batch mean and biased variance: the saved and running statistics.
  void Finish(int64_t c, double mean, double var) const {
    saved_mean[c] = static_cast<T>(mean);
    saved_invstd[c] = static_cast<T>(1.0 / std::sqrt(var + epsilon));
    mean_out[c] = static_cast<T>(momentum * running_mean[c] + (1.0 - momentum) * mean);
    var_out[c] = static_cast<T>(momentum * running_var[c] + (1.0 - momentum) * var);
  }
};

template <bool kRelu6, typename T>
void BnForwardLargePlanes(const BnForwardArgs<T>& a) {
  const int64_t N = a.N, C = a.C, HW = a.HW;
  const double M = static_cast<double>(N * HW);
#pragma omp parallel for schedule(static) num_threads(ThreadsFor(N * C * HW, std::min<int64_t>(a.threads, C)))
  for (int64_t c = 0; c < C; ++c) {
    // One pass for the statistics, shifted by a sample value so E[d^2] - E[d]^2 stays exact.
    const T shift = a.x[c * HW];
    double sum = 0.0, sumsq = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const T* __restrict xc = a.x + (n * C + c) * HW;
      T ps = 0, pq = 0;
#pragma omp simd reduction(+ : ps, pq)
      for (int64_t k = 0; k < HW; ++k) {
        const T d = xc[k] - shift;
        ps += d;
        pq += d * d;
      }
      sum += ps;
      sumsq += pq;
    }
    const double dmean = sum / M;
    a.Finish(c, shift + dmean, std::max(0.0, sumsq / M - dmean * dmean));
    const T m = a.saved_mean[c], s = BnScale(a.gamma[c], a.saved_invstd[c]), b = a.beta[c];
    for (int64_t n = 0; n < N; ++n) {
      const T* __restrict xc = a.x + (n * C + c) * HW;
      T* __restrict yc = a.y + (n * C + c) * HW;
#pragma omp simd
      for (int64_t k = 0; k < HW; ++k) yc[k] = Activate<kRelu6>(std::fma(xc[k] - m, s, b));
    }
  }
}

template <bool kRelu6, typename T>
void BnForwardSmallPlanes(const BnForwardArgs<T>& a) {
  const int64_t N = a.N, C = a.C, HW = a.HW, L = C * HW;
  const double M = static_cast<double>(N * HW);
  const std::vector<double> sum = ChannelSums(RowSums(N, L, 1, a.threads, [&](int64_t n, double* __restrict out) {
    const T* __restrict row = a.x + n * L;
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) out[j] += row[j];
  }).data(), C, HW);
  std::vector<double> mean(C);
  for (int64_t c = 0; c < C; ++c) mean[c] = sum[c] / M;
  const std::vector<double> dmrow = ExpandRow<double>(mean.data(), C, HW);
  const std::vector<double> sq = ChannelSums(RowSums(N, L, 1, a.threads, [&](int64_t n, double* __restrict out) {
    const T* __restrict row = a.x + n * L;
    const double* __restrict m = dmrow.data();
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) {
      const double d = static_cast<double>(row[j]) - m[j];
      out[j] += d * d;
    }
  }).data(), C, HW);
  std::vector<T> scale(C);
  for (int64_t c = 0; c < C; ++c) {
    a.Finish(c, mean[c], sq[c] / M);
    scale[c] = BnScale(a.gamma[c], a.saved_invstd[c]);
  }
  const std::vector<T> mrow = ExpandRow<T>(a.saved_mean, C, HW), srow = ExpandRow<T>(scale.data(), C, HW),
                       brow = ExpandRow<T>(a.beta, C, HW);
#pragma omp parallel for schedule(static) num_threads(std::min<int64_t>(ThreadsFor(N * L, a.threads), N))
  for (int64_t n = 0; n < N; ++n) {
    const T* __restrict row = a.x + n * L;
    T* __restrict out = a.y + n * L;
    const T *__restrict mr = mrow.data(), *__restrict sr = srow.data(), *__restrict br = brow.data();
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) out[j] = Activate<kRelu6>(std::fma(row[j] - mr[j], sr[j], br[j]));
  }
}

template <typename T>
struct BnBackwardArgs {
  const T *x, *gamma, *beta, *saved_mean, *saved_invstd, *dy;
  T *dx, *dgamma, *dbeta;
  int64_t N, C, HW;
  int threads;

  // g = dy where the activation passed (all of dy without ReLU6), xhat = (x - mean) * invstd:
  // dbeta = sum g, dgamma = sum g * xhat,
  // dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)) = ca * (g - cm - (x - mean) * cb),
  // from sum_g and sum_gx = sum g * (x - mean).
  void Coeffs(int64_t c, double sum_g, double sum_gx, T* ca, T* cm, T* cb) const {
    const double M = static_cast<double>(N * HW);
    const double invstd = saved_invstd[c];
    dbeta[c] = static_cast<T>(sum_g);
    dgamma[c] = static_cast<T>(sum_gx * invstd);
    *ca = static_cast<T>(gamma[c] * invstd);
    *cm = static_cast<T>(sum_g / M);
    *cb = static_cast<T>(invstd * invstd * sum_gx / M);
  }
};

template <bool kRelu6, typename T>
void BnBackwardLargePlanes(const BnBackwardArgs<T>& p) {
  const int64_t N = p.N, C = p.C, HW = p.HW;
#pragma omp parallel for schedule(static) num_threads(ThreadsFor(N * C * HW, std::min<int64_t>(p.threads, C)))
  for (int64_t c = 0; c < C; ++c) {
    const T m = p.saved_mean[c], s = BnScale(p.gamma[c], p.saved_invstd[c]), b = p.beta[c];
    double sum_g = 0.0, sum_gx = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const T* __restrict xc = p.x + (n * C + c) * HW;
      const T* __restrict gc = p.dy + (n * C + c) * HW;
      T pg = 0, pgx = 0;
#pragma omp simd reduction(+ : pg, pgx)
      for (int64_t k = 0; k < HW; ++k) {
        const T d = xc[k] - m;
        const T g = PassGrad<kRelu6>(std::fma(d, s, b), gc[k]);
        pg += g;
        pgx += g * d;
      }
      sum_g += pg;
      sum_gx += pgx;
    }
    T ca, cm, cb;
    p.Coeffs(c, sum_g, sum_gx, &ca, &cm, &cb);
    for (int64_t n = 0; n < N; ++n) {
      const T* __restrict xc = p.x + (n * C + c) * HW;
      const T* __restrict gc = p.dy + (n * C + c) * HW;
      T* __restrict dxc = p.dx + (n * C + c) * HW;
#pragma omp simd
      for (int64_t k = 0; k < HW; ++k) {
        const T d = xc[k] - m;
        dxc[k] = ca * (PassGrad<kRelu6>(std::fma(d, s, b), gc[k]) - cm - d * cb);
      }
    }
  }
}

template <bool kRelu6, typename T>
void BnBackwardSmallPlanes(const BnBackwardArgs<T>& p) {
  const int64_t N = p.N, C = p.C, HW = p.HW, L = C * HW;
  std::vector<T> scale(C);
  for (int64_t c = 0; c < C; ++c) scale[c] = BnScale(p.gamma[c], p.saved_invstd[c]);
  const std::vector<T> mrow = ExpandRow<T>(p.saved_mean, C, HW), srow = ExpandRow<T>(scale.data(), C, HW),
                       brow = ExpandRow<T>(p.beta, C, HW);
  // One pass, two accumulator rows: [0, L) sums g, [L, 2L) sums g * (x - mean).
  const std::vector<double> acc = RowSums(N, L, 2, p.threads, [&](int64_t n, double* __restrict out) {
    const T* __restrict xr = p.x + n * L;
    const T* __restrict gr = p.dy + n * L;
    const T *__restrict mr = mrow.data(), *__restrict sr = srow.data(), *__restrict br = brow.data();
    double* __restrict og = out;
    double* __restrict ogx = out + L;
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) {
      const T d = xr[j] - mr[j];
      const T g = PassGrad<kRelu6>(std::fma(d, sr[j], br[j]), gr[j]);
      og[j] += g;
      ogx[j] += g * d;
    }
  });
  const std::vector<double> sum_g = ChannelSums(acc.data(), C, HW), sum_gx = ChannelSums(acc.data() + L, C, HW);
  std::vector<T> ca(C), cm(C), cb(C);
  for (int64_t c = 0; c < C; ++c) p.Coeffs(c, sum_g[c], sum_gx[c], &ca[c], &cm[c], &cb[c]);
  const std::vector<T> arow = ExpandRow<T>(ca.data(), C, HW), cmrow = ExpandRow<T>(cm.data(), C, HW),
                       cbrow = ExpandRow<T>(cb.data(), C, HW);
#pragma omp parallel for schedule(static) num_threads(std::min<int64_t>(ThreadsFor(N * L, p.threads), N))
  for (int64_t n = 0; n < N; ++n) {
    const T* __restrict xr = p.x + n * L;
    const T* __restrict gr = p.dy + n * L;
    T* __restrict out = p.dx + n * L;
    const T *__restrict mr = mrow.data(), *__restrict sr = srow.data(), *__restrict br = brow.data();
    const T *__restrict ar = arow.data(), *__restrict cmr = cmrow.data(), *__restrict cbr = cbrow.data();
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) {
      const T d = xr[j] - mr[j];
      out[j] = ar[j] * (PassGrad<kRelu6>(std::fma(d, sr[j], br[j]), gr[j]) - cmr[j] - d * cbr[j]);
    }
  }
}

template <typename T>
void BnForward(const BnForwardArgs<T>& a, bool relu6) {
  const bool small = a.HW < kSmallPlane;
  if (relu6) {
    small ? BnForwardSmallPlanes<true>(a) : BnForwardLargePlanes<true>(a);
  } else {
    small ? BnForwardSmallPlanes<false>(a) : BnForwardLargePlanes<false>(a);
  }
}

template <typename T>
void BnBackward(const BnBackwardArgs<T>& p, bool relu6) {
  const bool small = p.HW < kSmallPlane;
  if (relu6) {
    small ? BnBackwardSmallPlanes<true>(p) : BnBackwardLargePlanes<true>(p);
  } else {
    small ? BnBackwardSmallPlanes<false>(p) : BnBackwardLargePlanes<false>(p);
  }
}

// ---------------------------------------------------------------------------------------
// Pointwise (1x1) convolution as GEMM. float32 runs oneDNN's sgemm (the library Paddle
// ships; it picks AVX2/AVX-512 code for the CPU at hand and threads with OpenMP); float64,
// used by the tests only, runs a plain loop. Row-major C = op(A) * op(B) (+ C if accumulate).
// ---------------------------------------------------------------------------------------

void Gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, bool accumulate, float* C, int64_t ldc) {
  const int status = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb,
                                accumulate ? 1.0f : 0.0f, C, ldc);
  PD_CHECK(status == 0, "dnnl_sgemm failed with status ", status);
}

void Gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
          const double* B, int64_t ldb, bool accumulate, double* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    double* __restrict ci = C + i * ldc;
    if (!accumulate)
      for (int64_t j = 0; j < N; ++j) ci[j] = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double aik = ta ? A[k * lda + i] : A[i * lda + k];
      if (tb) {
        for (int64_t j = 0; j < N; ++j) ci[j] += aik * B[j * ldb + k];
      } else {
        const double* __restrict bk = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) ci[j] += aik * bk[j];
      }
    }
  }
}

// NCHW [N, C, HW] <-> CNHW [C, N * HW]: whole HW runs are copied, so this is cheap for
// the small maps it is used on.
template <typename T>
void ToChannelMajor(const T* src, T* dst, int64_t N, int64_t C, int64_t HW, int threads) {
#pragma omp parallel for schedule(static) num_threads(ThreadsFor(N * C * HW, threads))
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = 0; n < N; ++n)
      std::copy(src + (n * C + c) * HW, src + (n * C + c + 1) * HW, dst + (c * N + n) * HW);
}

template <typename T>
void FromChannelMajor(const T* src, T* dst, int64_t N, int64_t C, int64_t HW, int threads) {
#pragma omp parallel for schedule(static) num_threads(ThreadsFor(N * C * HW, threads))
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = 0; n < N; ++n)
      std::copy(src + (c * N + n) * HW, src + (c * N + n + 1) * HW, dst + (n * C + c) * HW);
}

// Large maps: one GEMM per sample, Y[n] = W * X[n]. Small maps: one GEMM for the batch on
// channel-major copies, Yt = W * Xt (HW == 1 needs no copies: Y = X * W^T).
constexpr int64_t kPerSampleGemmHW = 196;

template <typename T>
void PointwiseForward(const T* x, const T* w, T* y, int64_t N, int64_t C, int64_t O, int64_t HW,
                      int threads) {
  if (HW == 1) {
    Gemm(false, true, N, O, C, x, C, w, C, false, y, O);
  } else if (HW >= kPerSampleGemmHW) {
    for (int64_t n = 0; n < N; ++n) Gemm(false, false, O, HW, C, w, C, x + n * C * HW, HW, false, y + n * O * HW, HW);
  } else {
    std::vector<T> xt(N * C * HW), yt(N * O * HW);
    ToChannelMajor(x, xt.data(), N, C, HW, threads);
    Gemm(false, false, O, N * HW, C, w, C, xt.data(), N * HW, false, yt.data(), N * HW);
    FromChannelMajor(yt.data(), y, N, O, HW, threads);
  }
}

template <typename T>
void PointwiseBackward(const T* x, const T* w, const T* dy, T* dx, T* dw, int64_t N, int64_t C,
                       int64_t O, int64_t HW, int threads) {
  if (HW == 1) {
    Gemm(false, false, N, C, O, dy, O, w, C, false, dx, C);   // dX = dY * W
    Gemm(true, false, O, C, N, dy, O, x, C, false, dw, C);    // dW = dY^T * X
  } else if (HW >= kPerSampleGemmHW) {
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x + n * C * HW;
      const T* gn = dy + n * O * HW;
      Gemm(true, false, C, HW, O, w, C, gn, HW, false, dx + n * C * HW, HW);  // dX[n] = W^T dY[n]
      Gemm(false, true, O, C, HW, gn, HW, xn, HW, n > 0, dw, C);              // dW += dY[n] X[n]^T
    }
  } else {
    const int64_t L = N * HW;
    std::vector<T> xt(N * C * HW), gt(N * O * HW), dxt(N * C * HW);
    ToChannelMajor(x, xt.data(), N, C, HW, threads);
    ToChannelMajor(dy, gt.data(), N, O, HW, threads);
    Gemm(true, false, C, L, O, w, C, gt.data(), L, false, dxt.data(), L);
    Gemm(false, true, O, C, L, gt.data(), L, xt.data(), L, false, dw, C);
    FromChannelMajor(dxt.data(), dx, N, C, HW, threads);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// fast_dwconv3x3
// ---------------------------------------------------------------------------------------

std::vector<paddle::Tensor> DwConvForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                          int stride, int threads) {
  CheckInputs(x, w);
  PD_CHECK(stride == 1 || stride == 2, "fast_dwconv3x3: stride must be 1 or 2");
  const auto& s = x.shape();
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3];
  auto y = paddle::empty({N, C, OutSize(H, stride), OutSize(W, stride)}, x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.type(), "fast_dwconv3x3", ([&] {
    if (stride == 1) {
      DwForwardAll<data_t, 1>(x.data<data_t>(), w.data<data_t>(), y.data<data_t>(), N, C, H, W, threads);
    } else {
      DwForwardAll<data_t, 2>(x.data<data_t>(), w.data<data_t>(), y.data<data_t>(), N, C, H, W, threads);
    }
  }));
  return {y};
}

std::vector<paddle::Tensor> DwConvBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                           const paddle::Tensor& dy, int stride, int threads) {
  CheckInputs(x, w);
  const auto& s = x.shape();
  auto dx = paddle::empty(s, x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.type(), "fast_dwconv3x3_grad", ([&] {
    DwBackwardAll<data_t>(x.data<data_t>(), w.data<data_t>(), dy.data<data_t>(),
                          dx.data<data_t>(), dw.data<data_t>(), s[0], s[1], s[2], s[3], stride,
                          threads);
  }));
  return {dx, dw};
}

std::vector<std::vector<int64_t>> DwConvInferShape(const std::vector<int64_t>& x_shape,
                                                   const std::vector<int64_t>& w_shape,
                                                   int stride, int threads) {
  auto out = x_shape;
  if (out.size() == 4) {
    if (out[2] > 0) out[2] = OutSize(out[2], stride);
    if (out[3] > 0) out[3] = OutSize(out[3], stride);
  }
  return {out};
}

std::vector<paddle::DataType> DwConvInferDtype(const paddle::DataType& x_dtype,
                                               const paddle::DataType& w_dtype) {
  return {x_dtype};
}

PD_BUILD_OP(fast_dwconv3x3)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(DwConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DwConvInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DwConvInferDtype));

PD_BUILD_GRAD_OP(fast_dwconv3x3)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(DwConvBackward));

// ---------------------------------------------------------------------------------------
// fast_bn_act_train: y = act(gamma * (x - mean) / sqrt(var + eps) + beta) on batch
// statistics. Also outputs the batch mean and 1/sqrt(var + eps) for the backward pass, and
// the running statistics updated as paddle.nn.BatchNorm2D does (biased batch variance,
// new = momentum * old + (1 - momentum) * batch); the caller copies those into its buffers.
// ---------------------------------------------------------------------------------------

std::vector<paddle::Tensor> BnActTrainForward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                              const paddle::Tensor& beta,
                                              const paddle::Tensor& running_mean,
                                              const paddle::Tensor& running_var, float momentum,
                                              float epsilon, bool relu6, int threads) {
  PD_CHECK(x.is_cpu() && x.shape().size() == 4, "fast_bn_act_train takes an NCHW CPU tensor");
  PD_CHECK(gamma.dtype() == x.dtype() && running_mean.dtype() == x.dtype(),
           "fast_bn_act_train: parameter and input dtypes differ");
  const auto& s = x.shape();
  const int64_t N = s[0], C = s[1], HW = s[2] * s[3];
  auto y = paddle::empty(s, x.dtype(), x.place());
  auto saved_mean = paddle::empty({C}, x.dtype(), x.place());
  auto saved_invstd = paddle::empty({C}, x.dtype(), x.place());
  auto mean_out = paddle::empty({C}, x.dtype(), x.place());
  auto var_out = paddle::empty({C}, x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.type(), "fast_bn_act_train", ([&] {
    BnForwardArgs<data_t> a{x.data<data_t>(), gamma.data<data_t>(), beta.data<data_t>(),
                            running_mean.data<data_t>(), running_var.data<data_t>(),
                            y.data<data_t>(), saved_mean.data<data_t>(), saved_invstd.data<data_t>(),
                            mean_out.data<data_t>(), var_out.data<data_t>(), N, C, HW,
                            momentum, epsilon, threads};
    BnForward(a, relu6);
  }));
  return {y, saved_mean, saved_invstd, mean_out, var_out};
}

std::vector<paddle::Tensor> BnActTrainBackward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                               const paddle::Tensor& beta,
                                               const paddle::Tensor& saved_mean,
                                               const paddle::Tensor& saved_invstd,
                                               const paddle::Tensor& dy, float momentum,
                                               float epsilon, bool relu6, int threads) {
  const auto& s = x.shape();
  const int64_t N = s[0], C = s[1], HW = s[2] * s[3];
  auto dx = paddle::empty(s, x.dtype(), x.place());
  auto dgamma = paddle::empty({C}, x.dtype(), x.place());
  auto dbeta = paddle::empty({C}, x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.type(), "fast_bn_act_train_grad", ([&] {
    BnBackwardArgs<data_t> p{x.data<data_t>(), gamma.data<data_t>(), beta.data<data_t>(),
                             saved_mean.data<data_t>(), saved_invstd.data<data_t>(),
                             dy.data<data_t>(), dx.data<data_t>(), dgamma.data<data_t>(),
                             dbeta.data<data_t>(), N, C, HW, threads};
    BnBackward(p, relu6);
  }));
  return {dx, dgamma, dbeta};
}

std::vector<std::vector<int64_t>> BnActInferShape(const std::vector<int64_t>& x_shape,
                                                  const std::vector<int64_t>& gamma_shape,
                                                  const std::vector<int64_t>& beta_shape,
                                                  const std::vector<int64_t>& rm_shape,
                                                  const std::vector<int64_t>& rv_shape,
                                                  float momentum, float epsilon, bool relu6,
                                                  int threads) {
  return {x_shape, gamma_shape, gamma_shape, gamma_shape, gamma_shape};
}

std::vector<paddle::DataType> BnActInferDtype(const paddle::DataType& x, const paddle::DataType& g,
                                              const paddle::DataType& b, const paddle::DataType& m,
                                              const paddle::DataType& v) {
  return {x, x, x, x, x};
}

PD_BUILD_OP(fast_bn_act_train)
    .Inputs({"X", "Gamma", "Beta", "RunningMean", "RunningVar"})
    .Outputs({"Y", "SavedMean", "SavedInvStd", "MeanOut", "VarOut"})
    .Attrs({"momentum: float", "epsilon: float", "relu6: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(BnActTrainForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BnActInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnActInferDtype));

PD_BUILD_GRAD_OP(fast_bn_act_train)
    .Inputs({"X", "Gamma", "Beta", "SavedMean", "SavedInvStd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"momentum: float", "epsilon: float", "relu6: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(BnActTrainBackward));

// ---------------------------------------------------------------------------------------
// fast_conv1x1: pointwise convolution, stride 1, no bias; weight [O, C, 1, 1].
// ---------------------------------------------------------------------------------------

void CheckPointwise(const paddle::Tensor& x, const paddle::Tensor& w) {
  PD_CHECK(x.is_cpu() && x.shape().size() == 4, "fast_conv1x1 takes an NCHW CPU tensor");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 || x.dtype() == paddle::DataType::FLOAT64,
           "fast_conv1x1 takes float32 or float64");
  PD_CHECK(w.dtype() == x.dtype() && w.shape().size() == 4 && w.shape()[1] == x.shape()[1] &&
               w.shape()[2] == 1 && w.shape()[3] == 1,
           "fast_conv1x1 weight must be [O, C, 1, 1] of the input's dtype");
}

std::vector<paddle::Tensor> PointwiseConvForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                 int threads) {
  CheckPointwise(x, w);
  const auto& s = x.shape();
  const int64_t O = w.shape()[0];
  auto y = paddle::empty({s[0], O, s[2], s[3]}, x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.type(), "fast_conv1x1", ([&] {
    PointwiseForward<data_t>(x.data<data_t>(), w.data<data_t>(), y.data<data_t>(), s[0], s[1], O,
                             s[2] * s[3], threads);
  }));
  return {y};
}

std::vector<paddle::Tensor> PointwiseConvBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                  const paddle::Tensor& dy, int threads) {
  CheckPointwise(x, w);
  const auto& s = x.shape();
  auto dx = paddle::empty(s, x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.type(), "fast_conv1x1_grad", ([&] {
    PointwiseBackward<data_t>(x.data<data_t>(), w.data<data_t>(), dy.data<data_t>(),
                              dx.data<data_t>(), dw.data<data_t>(), s[0], s[1], w.shape()[0],
                              s[2] * s[3], threads);
  }));
  return {dx, dw};
}

std::vector<std::vector<int64_t>> PointwiseInferShape(const std::vector<int64_t>& x_shape,
                                                      const std::vector<int64_t>& w_shape,
                                                      int threads) {
  auto out = x_shape;
  if (out.size() == 4 && !w_shape.empty()) out[1] = w_shape[0];
  return {out};
}

PD_BUILD_OP(fast_conv1x1)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(PointwiseConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(PointwiseInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DwConvInferDtype));

PD_BUILD_GRAD_OP(fast_conv1x1)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(PointwiseConvBackward));
