// AVX2 + FMA attention kernels (attention_tile.h): scores with one key per lane (16 keys in two
// vectors, up to 4 query rows: 8 accumulators, one FMA per row, key pair and dimension), weighted V
// rows with one dimension per lane (16 dimensions, up to 4 rows). Every lane does the scalar
// kernels' operations in their order, so the results are the same bits. Functions carry target
// attributes instead of the file being built with -mavx2 (ODR: see gemv_avx2.cpp).
#if defined(__x86_64__)

#include <immintrin.h>

#include <cmath>

#include "backend/cpu/attention_tile.h"
#include "backend/cpu/backend_cpu.h"
#include "mx8/format/ue8m0.h"

#define MX8_AVX2 __attribute__((target("avx2,fma")))

namespace mx8::backend::cpu_impl {
namespace {

// 8 stored values at `src` (consecutive elements) to f32; fp8 values times `scale`, per lane.
template <KvFormat F>
MX8_AVX2 inline __m256 load8(const uint8_t* src, __m256 scale, const float* lut) {
  if constexpr (F == KvFormat::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(src));
  } else if constexpr (F == KvFormat::bf16) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  } else {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    return _mm256_mul_ps(_mm256_i32gather_ps(lut, idx, 4), scale);
  }
}

// Eight keys from p (a multiple of 8, all in one page since the page size is too) into lanes
// [8 h, 8 h + 8) of kt.
template <KvFormat F>
MX8_AVX2 void k_half(const AttentionTile& j, int p, int h, float* kt) {
  const float* lut = e4m3_table();
  const size_t step = size_t(j.page_size) * j.elem_bytes();  // one dimension further
  const uint8_t* src = j.k_elem(p, 0);
  __m256 scale = _mm256_set1_ps(1.0f);
  for (int d = 0; d < j.hd; ++d, src += step) {
    if constexpr (F == KvFormat::fp8) {
      if (d % 128 == 0) {
        alignas(32) float s[8];
        for (int i = 0; i < 8; ++i) s[i] = format::ue8m0_to_f32(j.scales(j.k_pool, p + i)[d / 128]);
        scale = _mm256_load_ps(s);
      }
    }
    _mm256_storeu_ps(kt + d * kKeyBlock + 8 * h, load8<F>(src, scale, lut));
  }
}

MX8_AVX2 void k_block_avx2(const AttentionTile& j, int p0, int lo, int hi, float* kt) {
  if (j.page_size % 8 != 0) return k_block_scalar(j, p0, lo, hi, kt);
  for (int h = 0; h < 2; ++h) {
    const int p = p0 + 8 * h;
    if (p >= hi || p + 8 <= lo) continue;  // no position of the half is read: its lanes stay as they are
    // The half lies in one page that holds a position of [lo, hi), so every read is inside the cache.
    switch (j.fmt) {
      case KvFormat::f32:
        k_half<KvFormat::f32>(j, p, h, kt);
        break;
      case KvFormat::bf16:
        k_half<KvFormat::bf16>(j, p, h, kt);
        break;
      case KvFormat::fp8:
        k_half<KvFormat::fp8>(j, p, h, kt);
        break;
    }
  }
}

template <KvFormat F>
MX8_AVX2 void v_rows_fmt(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  const float* lut = e4m3_table();
  const size_t eb = size_t(j.elem_bytes());
  for (int p = lo; p < hi; ++p) {
    const uint8_t* row = j.v_row(p);
    const uint8_t* sc = F == KvFormat::fp8 ? j.scales(j.v_pool, p) : nullptr;
    float* dst = vt + size_t(p - p0) * j.hd;
    for (int d = 0; d < j.hd; d += 8) {
      const __m256 scale = F == KvFormat::fp8 ? _mm256_set1_ps(format::ue8m0_to_f32(sc[d / 128])) : __m256{};
      _mm256_storeu_ps(dst + d, load8<F>(row + d * eb, scale, lut));
    }
  }
}

MX8_AVX2 void v_rows_avx2(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  if (j.hd % 8 != 0) return v_rows_scalar(j, p0, lo, hi, vt);
  switch (j.fmt) {
    case KvFormat::f32:
      return v_rows_fmt<KvFormat::f32>(j, p0, lo, hi, vt);
    case KvFormat::bf16:
      return v_rows_fmt<KvFormat::bf16>(j, p0, lo, hi, vt);
    case KvFormat::fp8:
      return v_rows_fmt<KvFormat::fp8>(j, p0, lo, hi, vt);
  }
}

template <int R>
MX8_AVX2 void qk_rows(const float* const* q, const float* kt, int hd, float scale, float* const* s) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int d = 0; d < hd; ++d) {
    const __m256 k0 = _mm256_loadu_ps(kt + d * kKeyBlock), k1 = _mm256_loadu_ps(kt + d * kKeyBlock + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 qd = _mm256_broadcast_ss(q[r] + d);
      acc[r][0] = _mm256_fmadd_ps(qd, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qd, k1, acc[r][1]);
    }
  }
  const __m256 sc = _mm256_set1_ps(scale);
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(s[r], _mm256_mul_ps(acc[r][0], sc));
    _mm256_storeu_ps(s[r] + 8, _mm256_mul_ps(acc[r][1], sc));
  }
}

MX8_AVX2 void qk_avx2(const float* const* q, int rows, const float* kt, int hd, float scale,
                      float* const* s) {
  switch (rows) {
    case 1:
      return qk_rows<1>(q, kt, hd, scale, s);
    case 2:
      return qk_rows<2>(q, kt, hd, scale, s);
    case 3:
      return qk_rows<3>(q, kt, hd, scale, s);
    default:
      return qk_rows<4>(q, kt, hd, scale, s);
  }
}

// Dimensions [d, d + 8 W) of R rows over the n weighted V rows.
template <int R, int W>
MX8_AVX2 void pv_span(const float* const* w, const float* vt, int n, int hd, float* const* out, int d) {
  __m256 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) acc[r][c] = _mm256_loadu_ps(out[r] + d + 8 * c);
  for (int i = 0; i < n; ++i) {
    __m256 v[W];
    for (int c = 0; c < W; ++c) v[c] = _mm256_loadu_ps(vt + size_t(i) * hd + d + 8 * c);
    for (int r = 0; r < R; ++r) {
      const __m256 wr = _mm256_broadcast_ss(w[r] + i);
      for (int c = 0; c < W; ++c) acc[r][c] = _mm256_fmadd_ps(wr, v[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) _mm256_storeu_ps(out[r] + d + 8 * c, acc[r][c]);
}

template <int R>
MX8_AVX2 void pv_rows(const float* const* w, const float* vt, int n, int hd, float* const* out) {
  int d = 0;
  for (; d + 16 <= hd; d += 16) pv_span<R, 2>(w, vt, n, hd, out, d);
  if (d + 8 <= hd) pv_span<R, 1>(w, vt, n, hd, out, d), d += 8;
  for (; d < hd; ++d)  // heads that are not a multiple of 8
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < n; ++i) out[r][d] = std::fma(w[r][i], vt[size_t(i) * hd + d], out[r][d]);
}

MX8_AVX2 void pv_avx2(const float* const* w, int rows, const float* vt, int n, int hd, float* const* out) {
  switch (rows) {
    case 1:
      return pv_rows<1>(w, vt, n, hd, out);
    case 2:
      return pv_rows<2>(w, vt, n, hd, out);
    case 3:
      return pv_rows<3>(w, vt, n, hd, out);
    default:
      return pv_rows<4>(w, vt, n, hd, out);
  }
}

}  // namespace

const TileKernels kAvx2TileKernels = {k_block_avx2, v_rows_avx2, qk_avx2, pv_avx2};

}  // namespace mx8::backend::cpu_impl

#endif  // __x86_64__
