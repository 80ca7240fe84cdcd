// A backend that forwards every op to another one: the base of test backends that change one op.
#pragma once

#include "mx8/backend/backend.h"

namespace mx8::testing {

class ForwardingBackend : public backend::Backend {
 public:
  explicit ForwardingBackend(backend::Backend& inner) : b_(inner) {}

  const backend::BackendInfo& info() const override { return b_.info(); }
  void* alloc(size_t bytes) override { return b_.alloc(bytes); }
  void free(void* p) override { b_.free(p); }
  void* alloc_host(size_t bytes) override { return b_.alloc_host(bytes); }
  void free_host(void* p) override { b_.free_host(p); }
  void upload(void* dst, const void* src, size_t bytes) override { b_.upload(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { b_.download(dst, src, bytes); }
  void synchronize() override { b_.synchronize(); }
  size_t available_memory() const override { return b_.available_memory(); }
  bool supports_weight(backend::WeightFormat f, backend::ScaleType st) const override {
    return b_.supports_weight(f, st);
  }
  bool supports_kv(backend::KvFormat f) const override { return b_.supports_kv(f); }
  std::string activation_quantization(backend::WeightFormat f) const override {
    return b_.activation_quantization(f);
  }
  void matmul(const backend::WeightView& w, const float* x, int64_t m, float* y, const float* bias) override {
    b_.matmul(w, x, m, y, bias);
  }
  void embedding(const backend::WeightView& t, const int32_t* ids, int64_t n, float* out) override {
    b_.embedding(t, ids, n, out);
  }
  void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y) override {
    b_.rmsnorm(x, w, rows, dim, eps, y);
  }
  void rope(float* x, const int32_t* pos, int64_t n, int64_t heads, const backend::RopeArgs& r) override {
    b_.rope(x, pos, n, heads, r);
  }
  void add(float* y, const float* x, int64_t n) override { b_.add(y, x, n); }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override { b_.silu_mul(g, u, out, n); }
  void softmax(float* x, int64_t rows, int64_t cols) override { b_.softmax(x, rows, cols); }
  void argmax(const float* x, int64_t rows, int64_t cols, int32_t* out) override {
    b_.argmax(x, rows, cols, out);
  }
  void top_k(const float* x, int64_t rows, int64_t cols, int k, const float* t, float* v,
             int32_t* ids) override {
    b_.top_k(x, rows, cols, k, t, v, ids);
  }
  void penalize(float* x, int64_t rows, int64_t cols, const backend::PenaltyArgs& p) override {
    b_.penalize(x, rows, cols, p);
  }
  void log_sum_exp(const float* x, int64_t rows, int64_t cols, const int32_t* tokens, double* lse,
                   float* picked) override {
    b_.log_sum_exp(x, rows, cols, tokens, lse, picked);
  }
  void gather(const float* x, int64_t rows, int64_t cols, const int32_t* ids, int k, float* out) override {
    b_.gather(x, rows, cols, ids, k, out);
  }
  std::unique_ptr<backend::KvCache> create_kv_cache(const backend::KvCacheDesc& d) override {
    return b_.create_kv_cache(d);
  }
  void kv_write(backend::KvCache& c, int layer, const float* k, const float* v, const int32_t* slots,
                int64_t n) override {
    b_.kv_write(c, layer, k, v, slots, n);
  }
  void attention(backend::KvCache& c, const backend::AttentionArgs& a) override { b_.attention(c, a); }

 protected:
  backend::Backend& b_;
};

}  // namespace mx8::testing
