// The CPU implementation of the backend interface (private to the library; users call
// mx8::backend::make_cpu_backend). Memory is host memory; ops run to completion on the calling
// thread plus the backend's thread pool.
#pragma once

#include <memory>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/thread_pool.h"

namespace mx8::backend::cpu_impl {

class CpuKvCache final : public KvCache {
 public:
  explicit CpuKvCache(const KvCacheDesc& d);
  ~CpuKvCache() override;
  // Start of page `page` of layer `layer`, K (kv = 0) or V (kv = 1).
  uint8_t* page(int layer, int kv, int64_t page) const {
    return base_ + ((size_t(layer) * 2 + size_t(kv)) * size_t(desc_.n_pages) + size_t(page)) * page_bytes_;
  }
  size_t page_bytes() const { return page_bytes_; }

 private:
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  size_t page_bytes_ = 0;
};

// Scalar matmul for every weight format (the reference the fast kernels are checked against, and
// the path used where no fast kernel exists). f32 accumulation in k order per 128-wide block.
void matmul_scalar(const WeightView& w, const float* x, int64_t m, float* y, mx8::cpu::ThreadPool* pool);
// One row of a weight as f32 (embedding lookups).
void weight_row_to_f32(const WeightView& w, int64_t row, float* out);
void validate_weight(const WeightView& w, const char* op);

void kv_write_cpu(CpuKvCache& cache, int layer, const float* k, const float* v, const int32_t* slots,
                  int64_t n_tokens, mx8::cpu::ThreadPool* pool);
void attention_cpu(CpuKvCache& cache, const AttentionArgs& a, mx8::cpu::ThreadPool* pool);

// The 256-entry E4M3 decode table (NaN codes decode to NaN).
const float* e4m3_table();

// One attention job: the `group` query heads that share kv head `kvh`, for one token, over `len`
// cached positions. K/V of position p live in page table[p / page_size] of the layer's K / V pool
// (pages of page_bytes, contiguous), at [kv head][slot][head_dim] elements (head-major), then for
// fp8 the UE8M0 scales [kv head][slot][ceil(hd / 128)].
struct GroupAttention {
  const float* q = nullptr;  // [group][hd]
  float* out = nullptr;      // [group][hd]
  float* att = nullptr;      // scratch [group][len - first]
  int group = 1, hd = 0, len = 0, page_size = 0, n_kv = 0, kvh = 0;
  int first = 0;  // positions [first, len) are attended (a sliding window starts past 0)
  float scale = 1;
  KvFormat fmt = KvFormat::f32;
  const uint8_t* k_pool = nullptr;
  const uint8_t* v_pool = nullptr;
  size_t page_bytes = 0;
  const int32_t* table = nullptr;

  // Where (slot, kvh) lives in a page of the pools: its hd elements of `elem_bytes` each, and for fp8
  // its ceil(hd / 128) UE8M0 scales (after every head's elements).
  const uint8_t* head_elements(const uint8_t* page, int slot, int elem_bytes) const {
    return page + (size_t(kvh) * page_size + slot) * hd * elem_bytes;
  }
  const uint8_t* head_scales(const uint8_t* page, int slot) const {
    return page + size_t(page_size) * n_kv * hd + (size_t(kvh) * page_size + slot) * ((hd + 127) / 128);
  }
};
// Scalar (the definition; plain sequential sums for hd < 64, llama2.c's order), AVX2+FMA (hd a
// multiple of 8 and >= 64; 8-lane FMA sums) and NEON (the same heads; 4-lane sums). attend_group
// picks by head size and the active ISA.
void attend_group_scalar(const GroupAttention& j);
void attend_group_avx2(const GroupAttention& j);
#if defined(__aarch64__)
void attend_group_neon(const GroupAttention& j);
#endif
void attend_group(const GroupAttention& j);
// Softmax of each of `rows` rows of `len` values in place (both attention kernels and Backend::softmax).
void softmax_rows(float* att, int64_t rows, int64_t len);

}  // namespace mx8::backend::cpu_impl
