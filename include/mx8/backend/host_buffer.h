// HostBuffer: a grow-only array in a backend's host memory (Backend::alloc_host), for what a step
// downloads every time (the logits): page-locked on a GPU, so the copy runs at bus speed.
#pragma once

#include <cstddef>

#include "mx8/backend/backend.h"

namespace mx8::backend {

template <typename T>
class HostBuffer {
 public:
  explicit HostBuffer(Backend& b) : b_(b) {}
  ~HostBuffer() { b_.free_host(p_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  // Room for n values; the contents are not kept when it grows.
  T* reserve(size_t n) {
    if (n > capacity_) {
      void* fresh = b_.alloc_host(n * sizeof(T));  // throws before anything is released
      b_.free_host(p_);
      p_ = static_cast<T*>(fresh);
      capacity_ = n;
    }
    return p_;
  }
  T* data() const { return p_; }
  size_t capacity() const { return capacity_; }

 private:
  Backend& b_;
  T* p_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace mx8::backend
