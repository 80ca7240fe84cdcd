// ggml's tensor types: names, block sizes, and decoders from a block's bytes to f32.
//
// Every decoder computes what ggml's own does. Each product is exact in f32 (an 11-bit f16 mantissa
// times small integers whose product stays within 13 bits), so the order of the multiplications does
// not matter, and a fused multiply-add gives the same bits as ggml's multiply and add: the add (of
// Q4_1's and Q5_1's m, the K-quants' minimum) is the only rounding. tests/io/gguf_ggml_reference_test.cpp
// holds every decoder to ggml's library on quantizer output and on random bytes.
#include <cstring>
#include <string>

#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/io/gguf.h"

namespace mx8::io {

namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return format::f16_to_f32(h);
}

// Legacy 32-value blocks: nibble j of byte j is value j, its high nibble value j + 16.
void decode_q4_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float((qs[j] & 0xF) - 8) * d;
    y[j + 16] = float((qs[j] >> 4) - 8) * d;
  }
}

void decode_q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0xF) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

// Q5: bit j of the 32-bit word after the scales is value j's fifth bit.
void decode_q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0xF) | int((qh >> j) & 1) << 4;
    const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = float(lo - 16) * d;
    y[j + 16] = float(hi - 16) * d;
  }
}

void decode_q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0xF) | int((qh >> j) & 1) << 4;
    const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = float(lo) * d + m;
    y[j + 16] = float(hi) * d + m;
  }
}

void decode_q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = d * float(int8_t(b[2 + j]));
}

// K-quants: 256 values. Q2_K and Q3_K pack four 2-bit fields a byte: sub-block s (16 values) of
// the 256 reads bytes 32 * (s / 8) + 16 * (s % 2) .. + 15 of the 64 at bit 2 * ((s % 8) / 2).
int k_quant_byte(int s, int l) {
  return 32 * (s / 8) + 16 * (s % 2) + l;
}
int k_quant_shift(int s) {
  return 2 * ((s % 8) / 2);
}

void decode_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  for (int s = 0; s < 16; ++s) {
    const float dl = d * float(scales[s] & 0xF), ml = dmin * float(scales[s] >> 4);
    for (int l = 0; l < 16; ++l)
      y[16 * s + l] = dl * float((qs[k_quant_byte(s, l)] >> k_quant_shift(s)) & 3) - ml;
  }
}

void decode_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* packed = b + 96;  // 16 six-bit scales: low nibbles in bytes 0..7, high pairs in 8..11
  const float d = f16_at(b + 108);
  for (int s = 0; s < 16; ++s) {
    const int low = s < 8 ? packed[s] & 0xF : packed[s - 8] >> 4;
    const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
    const float dl = d * float((low | high << 4) - 32);
    // The third bit of value l of sub-block s: bit 4 * (s / 8) + (s % 8) / 2 of hmask[16 * (s % 2) + l].
    const int bit = 4 * (s / 8) + (s % 8) / 2;
    for (int l = 0; l < 16; ++l) {
      const int q = (qs[k_quant_byte(s, l)] >> k_quant_shift(s)) & 3;
      const int h = (hmask[16 * (s % 2) + l] >> bit) & 1;
      y[16 * s + l] = dl * float(q - (h ? 0 : 4));
    }
  }
}

// Q4_K and Q5_K: eight sub-blocks of 32, each with a 6-bit scale and a 6-bit min packed into 12 bytes.
void k4_scale_min(const uint8_t* p, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = p[j] & 63;
    *m = p[j + 4] & 63;
  } else {
    *sc = (p[j + 4] & 0xF) | (p[j - 4] >> 6) << 4;
    *m = (p[j + 4] >> 4) | (p[j] >> 6) << 4;
  }
}

// Q4_K is Q5_K without the fifth bits (qh == nullptr). Chunk c of 64 values: the low nibbles of
// qs[32c .. 32c + 31] are sub-block 2c, the high nibbles 2c + 1; qh bit 2c / 2c + 1 adds 16.
void decode_k4(const uint8_t* b, const uint8_t* qh, const uint8_t* qs, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* packed = b + 4;
  for (int c = 0; c < 4; ++c) {
    for (int half = 0; half < 2; ++half) {
      int sc, m;
      k4_scale_min(packed, 2 * c + half, &sc, &m);
      const float dl = d * float(sc), ml = dmin * float(m);
      for (int l = 0; l < 32; ++l) {
        int q = (qs[32 * c + l] >> (4 * half)) & 0xF;
        if (qh) q += ((qh[l] >> (2 * c + half)) & 1) << 4;
        y[64 * c + 32 * half + l] = dl * float(q) - ml;
      }
    }
  }
}

void decode_q4_k(const uint8_t* b, float* y) {
  decode_k4(b, nullptr, b + 16, y);
}
void decode_q5_k(const uint8_t* b, float* y) {
  decode_k4(b, b + 16, b + 48, y);
}

// Q6_K: half h (128 values) takes ql[64h ..], qh[32h ..] and scales[8h ..]; value l + 32 i of the
// half (i = 0..3) is a nibble of ql (low for i = 0, 1; high for 2, 3; byte l or l + 32) with two bits
// of qh[l] (bits 2i, 2i + 1) above it, minus 32, under scale 2i + l / 16.
void decode_q6_k(const uint8_t* b, float* y) {
  const float d = f16_at(b + 208);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    for (int i = 0; i < 4; ++i)
      for (int half = 0; half < 2; ++half) {
        const float dl = d * float(int8_t(b[192 + 8 * h + 2 * i + half]));
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int nibble = (ql[l + 32 * (i % 2)] >> (4 * (i / 2))) & 0xF;
          const int q = (nibble | ((qh[l] >> (2 * i)) & 3) << 4) - 32;
          y[128 * h + 32 * i + l] = dl * float(q);
        }
      }
  }
}

// IQ4_NL's 16 non-uniform levels (ggml's kvalues_iq4nl), shared by IQ4_XS.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

void decode_iq4_nl(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kIq4Levels[qs[j] & 0xF]);
    y[j + 16] = d * float(kIq4Levels[qs[j] >> 4]);
  }
}

void decode_iq4_xs(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint16_t scales_h;
  std::memcpy(&scales_h, b + 2, 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int s = 0; s < 8; ++s) {
    const int ls = ((scales_l[s / 2] >> (4 * (s % 2))) & 0xF) | ((scales_h >> (2 * s)) & 3) << 4;
    const float dl = d * float(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[32 * s + j] = dl * float(kIq4Levels[qs[16 * s + j] & 0xF]);
      y[32 * s + j + 16] = dl * float(kIq4Levels[qs[16 * s + j] >> 4]);
    }
  }
}

// ggml's MXFP4 levels are E2M1 doubled, so the scale is 2^(e - 128) instead of 2^(e - 127): e = 0
// and 1 give f32 subnormal scales, e = 255 gives 2^127 (12 * 2^127 overflows to Inf, as in ggml).
constexpr int8_t kMxfp4Levels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void decode_mxfp4(const uint8_t* b, float* y) {
  const float scale = format::f32_pow2(b[0] - 128);
  for (int j = 0; j < 16; ++j) {
    y[j] = float(kMxfp4Levels[b[1 + j] & 0xF]) * scale;
    y[j + 16] = float(kMxfp4Levels[b[1 + j] >> 4]) * scale;
  }
}

using BlockDecoder = void (*)(const uint8_t*, float*);

// A decoder run on a copy of its block: the bytes are then a local array that the stores to y
// cannot alias, so the compiler keeps them in registers and vectorizes (Q6_K: 15x faster).
template <size_t Bytes, BlockDecoder Decode>
void on_copy(const uint8_t* b, float* y) {
  uint8_t copy[Bytes];
  std::memcpy(copy, b, Bytes);
  Decode(copy, y);
}

struct TypeInfo {
  GgmlType type;
  const char* name;
  size_t block_elems, block_bytes;
  BlockDecoder decode;  // null for the plain types (decoded element by element)
};

// A block type's entry: its size in values and bytes, and its decoder run on a copy of the block.
template <size_t Elems, size_t Bytes, BlockDecoder Decode>
constexpr TypeInfo block_type(GgmlType type, const char* name) {
  return {type, name, Elems, Bytes, on_copy<Bytes, Decode>};
}

constexpr TypeInfo kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, nullptr},
    {GgmlType::kF16, "F16", 1, 2, nullptr},
    {GgmlType::kBF16, "BF16", 1, 2, nullptr},
    block_type<32, 18, decode_q4_0>(GgmlType::kQ4_0, "Q4_0"),
    block_type<32, 20, decode_q4_1>(GgmlType::kQ4_1, "Q4_1"),
    block_type<32, 22, decode_q5_0>(GgmlType::kQ5_0, "Q5_0"),
    block_type<32, 24, decode_q5_1>(GgmlType::kQ5_1, "Q5_1"),
    block_type<32, 34, decode_q8_0>(GgmlType::kQ8_0, "Q8_0"),
    block_type<256, 84, decode_q2_k>(GgmlType::kQ2_K, "Q2_K"),
    block_type<256, 110, decode_q3_k>(GgmlType::kQ3_K, "Q3_K"),
    block_type<256, 144, decode_q4_k>(GgmlType::kQ4_K, "Q4_K"),
    block_type<256, 176, decode_q5_k>(GgmlType::kQ5_K, "Q5_K"),
    block_type<256, 210, decode_q6_k>(GgmlType::kQ6_K, "Q6_K"),
    block_type<32, 18, decode_iq4_nl>(GgmlType::kIQ4_NL, "IQ4_NL"),
    block_type<256, 136, decode_iq4_xs>(GgmlType::kIQ4_XS, "IQ4_XS"),
    block_type<32, 17, decode_mxfp4>(GgmlType::kMXFP4, "MXFP4"),
};

const TypeInfo* find_type(uint32_t t) {
  for (const TypeInfo& info : kTypes)
    if (uint32_t(info.type) == t) return &info;
  return nullptr;
}

const TypeInfo& info_of(GgmlType t) {
  const TypeInfo* info = find_type(uint32_t(t));
  if (!info) throw Error("ggml type " + std::to_string(uint32_t(t)) + " is not one mx8 decodes");
  return *info;
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  const TypeInfo* info = find_type(uint32_t(t));
  return info ? info->name : "unknown";
}

bool ggml_type_supported(uint32_t t) {
  return find_type(t) != nullptr;
}

std::string ggml_type_label(uint32_t t) {
  if (const TypeInfo* info = find_type(t)) return info->name;
  // The types ggml defines that mx8 does not decode, by number, so an error can name them.
  static const std::pair<uint32_t, const char*> kOthers[] = {
      {9, "Q8_1"},   {15, "Q8_K"},  {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"},
      {19, "IQ1_S"}, {21, "IQ3_S"}, {22, "IQ2_S"},   {24, "I8"},     {25, "I16"},
      {26, "I32"},   {27, "I64"},   {28, "F64"},     {29, "IQ1_M"},  {34, "TQ1_0"},
      {35, "TQ2_0"}, {40, "NVFP4"}, {41, "Q1_0"},    {42, "Q2_0"}};
  for (const auto& [number, name] : kOthers)
    if (number == t) return std::string(name) + " (" + std::to_string(t) + ")";
  return std::to_string(t);
}

size_t ggml_block_elems(GgmlType t) {
  return info_of(t).block_elems;
}

size_t ggml_block_bytes(GgmlType t) {
  return info_of(t).block_bytes;
}

void ggml_dequantize(GgmlType t, const uint8_t* src, float* dst, uint64_t n) {
  const TypeInfo& info = info_of(t);
  if (n % info.block_elems != 0)
    throw Error(std::string("ggml_dequantize: ") + std::to_string(n) + " elements is not a whole number of " +
                info.name + " blocks");
  switch (t) {
    case GgmlType::kF32:
      if (n) std::memcpy(dst, src, n * 4);  // an empty result's data() may be null, which memcpy may not take
      return;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (uint64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, src + 2 * k, 2);
        dst[k] = t == GgmlType::kF16 ? format::f16_to_f32(h) : format::bf16_to_f32(h);
      }
      return;
    default:
      for (uint64_t b = 0; b < n / info.block_elems; ++b)
        info.decode(src + b * info.block_bytes, dst + b * info.block_elems);
  }
}

std::vector<float> gguf_tensor_to_f32(const GgufTensor& t) {
  std::vector<float> out(t.n_elements);
  ggml_dequantize(t.type, t.data, out.data(), t.n_elements);
  return out;
}

}  // namespace mx8::io
