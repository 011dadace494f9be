// AVX2/FMA/F16C helpers for the CPU backend (splat_cpu is built with -march=x86-64-v3).
// No fast-math: NaN and Inf go through these helpers as IEEE arithmetic says.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "splat/tensor.hpp"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "the splat CPU backend needs AVX2, FMA and F16C (x86-64-v3)"
#endif

namespace splat::cpu {

// 2^x for x <= 0 (softmax arguments). |rel err| < 2e-7; x < -126 gives exactly 0 (so masked
// entries, set to -inf, contribute nothing); NaN in gives NaN out.
inline __m256 exp2_ps(__m256 x) {
  // vmaxps/vminps return the second operand when either is NaN: keep x second so NaN survives.
  const __m256 xc = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), x));
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(xc, n);  // [-0.5, 0.5]
  // Taylor series of e^(f ln 2) to degree 7 (truncation ~6e-9 at |f| = 0.5).
  __m256 p = _mm256_set1_ps(1.5252733804059841e-05f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381606e-04f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 r = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ);  // false for NaN
  return _mm256_andnot_ps(tiny, r);
}

// Lanes l with bit l of `bits` set become all-ones.
inline __m256 lane_mask(uint32_t bits) {
  const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i b = _mm256_and_si256(_mm256_set1_epi32(int(bits)), sel);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, sel));
}

inline float bf16_bits_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// n elements of dtype t at src (element index `at`) -> float dst, vectorised for f16/bf16.
inline void load_row(const void* src, DType t, size_t at, int64_t n, float* dst) {
  if (t == DType::F32) {
    std::memcpy(dst, static_cast<const float*>(src) + at, size_t(n) * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src) + at;
  int64_t c = 0;
  if (t == DType::F16) {
    for (; c + 8 <= n; c += 8)
      _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c))));
    for (; c < n; ++c) dst[c] = _cvtsh_ss(s[c]);
  } else {
    for (; c + 8 <= n; c += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c)));
      _mm256_storeu_ps(dst + c, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; c < n; ++c) dst[c] = bf16_bits_to_float(s[c]);
  }
}

// float src -> n elements of dtype t at dst (element index `at`), round to nearest even.
inline void store_row(const float* src, DType t, void* dst, size_t at, int64_t n) {
  if (t == DType::F32) {
    std::memcpy(static_cast<float*>(dst) + at, src, size_t(n) * 4);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst) + at;
  int64_t c = 0;
  if (t == DType::F16) {
    for (; c + 8 <= n; c += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + c),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + c), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    for (; c + 8 <= n; c += 8) {  // as float_to_bf16: round to nearest even, NaN stays a quiet NaN
      const __m256 f = _mm256_loadu_ps(src + c);
      const __m256i x = _mm256_castps_si256(f);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
      const __m256i rounded =
          _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
      const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
      const __m256i r = _mm256_blendv_epi8(rounded, quiet, _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + c), _mm256_castsi256_si128(packed));
    }
  }
  for (; c < n; ++c) d[c] = t == DType::F16 ? float_to_half(src[c]) : float_to_bf16(src[c]);
}

}  // namespace splat::cpu
