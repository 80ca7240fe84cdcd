#include "model/weight_convert.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>

#include "mx8/backend/cpu/quantize.h"
#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::model {

namespace {

// Rows per task: one FP8 scale block tall, so that every task quantizes whole blocks.
constexpr int64_t kBandRows = 128;

mx8::cpu::ThreadPool& load_pool() {
  static mx8::cpu::ThreadPool pool(0);
  return pool;
}

format::QuantSpec fp8_spec(bool mx, format::ScaleRule rule) {
  format::QuantSpec spec;
  spec.element = format::ElementFormat::e4m3;
  spec.rule = rule;
  spec.blocking = mx ? format::Blocking::tile(32) : format::Blocking::block(128);
  spec.storage = rule == format::ScaleRule::fp32 ? format::ScaleStorage::f32 : format::ScaleStorage::ue8m0;
  return spec;
}

}  // namespace

void convert_weight(const SourceTensor& t, int64_t n, int64_t k, backend::WeightFormat format,
                    format::ScaleRule rule, void* data, void* scales) {
  using backend::WeightFormat;
  const bool fp8 = format == WeightFormat::fp8_block || format == WeightFormat::mxfp8;
  const format::QuantSpec spec = fp8_spec(format == WeightFormat::mxfp8, rule);
  const int64_t bands = (n + kBandRows - 1) / kBandRows;
  // Pool tasks must not throw (a decoder's error would end the process): the first error is kept
  // and thrown here once every task is done.
  std::exception_ptr error;
  std::mutex error_mutex;
  mx8::cpu::parallel_for(&load_pool(), size_t(bands), 1, [&](size_t b0, size_t b1) {
    // The f32 rows of a band (7 MB at k = 14336), left uninitialized; allocated per call rather than
    // kept per thread, which on a many-core machine would hold that much per core for good.
    std::unique_ptr<float[]> scratch;
    try {
      for (size_t b = b0; b < b1; ++b) {
        const int64_t r0 = int64_t(b) * kBandRows, r1 = std::min(n, r0 + kBandRows);
        if (format == WeightFormat::f32) {
          source_rows_to_f32(t, r0, r1, static_cast<float*>(data) + r0 * k);
          continue;
        }
        if (!scratch) scratch.reset(new float[size_t(kBandRows * k)]);
        source_rows_to_f32(t, r0, r1, scratch.get());
        if (fp8) {
          mx8::cpu::quantize(format::SourceType::f32, scratch.get(), r1 - r0, k, spec,
                             static_cast<uint8_t*>(data) + r0 * k,
                             static_cast<uint8_t*>(scales) + format::scale_bytes(spec, r0, k), nullptr);
        } else {
          uint16_t* out = static_cast<uint16_t*>(data) + r0 * k;
          for (int64_t i = 0; i < (r1 - r0) * k; ++i) out[i] = format::f32_to_bf16_rne(scratch[size_t(i)]);
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace mx8::model
