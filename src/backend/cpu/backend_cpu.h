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

// Softmax of each of `rows` rows of `len` values in place (both attention kernels and Backend::softmax).
void softmax_rows(float* att, int64_t rows, int64_t len);

}  // namespace mx8::backend::cpu_impl
