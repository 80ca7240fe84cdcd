// The CUDA implementation of the backend interface (include/mx8/backend/backend.h).
//
// Owned by the cudabackend engineer; kernels engineer's GEMM/GEMV are called from here.
//
// This first version has working memory management (alloc/free/upload/download/synchronize);
// every op throws mx8::Error naming the op until its kernel lands.
#include <cuda_runtime.h>

#include <string>

#include "mx8/backend/backend.h"
#include "mx8/error.h"

namespace mx8::backend {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(std::string("cuda backend: ") + what + ": " + cudaGetErrorName(e) + " (" +
                cudaGetErrorString(e) + ")");
}

[[noreturn]] void not_yet(const char* op) {
  throw Error(std::string("cuda backend: op '") + op + "' is not implemented yet");
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) {
    check(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    info_.name = "cuda";
    info_.description = std::string("cuda: ") + prop.name;
    info_.host_memory = false;
  }
  ~CudaBackend() override { cudaStreamDestroy(stream_); }

  const BackendInfo& info() const override { return info_; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 64);
    if (e != cudaSuccess)
      throw Error("cuda backend: out of memory allocating " + std::to_string(bytes) + " bytes (" +
                  cudaGetErrorString(e) + ")");
    return p;
  }
  void free(void* p) override {
    if (p) cudaFree(p);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
    check(cudaStreamSynchronize(stream_), "upload");
  }
  void download(void* dst, const void* src, size_t bytes) override {
    check(cudaStreamSynchronize(stream_), "download");
    if (!bytes) return;
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download");
    check(cudaStreamSynchronize(stream_), "download");
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "synchronize"); }

  bool supports_weight(WeightFormat, ScaleType) const override { return false; }
  bool supports_kv(KvFormat) const override { return false; }
  std::string activation_quantization(WeightFormat) const override { return "none"; }

  void matmul(const WeightView&, const float*, int64_t, float*, const float*) override { not_yet("matmul"); }
  void embedding(const WeightView&, const int32_t*, int64_t, float*) override { not_yet("embedding"); }
  void rmsnorm(const float*, const float*, int64_t, int64_t, float, float*) override { not_yet("rmsnorm"); }
  void rope(float*, const int32_t*, int64_t, int64_t, const RopeArgs&) override { not_yet("rope"); }
  void add(float*, const float*, int64_t) override { not_yet("add"); }
  void silu_mul(const float*, const float*, float*, int64_t) override { not_yet("silu_mul"); }
  void softmax(float*, int64_t, int64_t) override { not_yet("softmax"); }
  std::unique_ptr<KvCache> create_kv_cache(const KvCacheDesc&) override { not_yet("create_kv_cache"); }
  void kv_write(KvCache&, int, const float*, const float*, const int32_t*, int64_t) override {
    not_yet("kv_write");
  }
  void attention(KvCache&, const AttentionArgs&) override { not_yet("attention"); }

 private:
  BackendInfo info_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

}  // namespace mx8::backend
