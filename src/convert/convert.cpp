// The conversion pipeline: plan every output tensor from the input's headers, split them into
// shards, then fill each shard in row chunks (in parallel) at the offsets its header fixes.
#include "mx8/convert/convert.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <optional>

#include "convert/progress.h"
#include "convert/source.h"
#include "mx8/backend/cpu/quantize.h"
#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/convert/gguf_to_hf.h"
#include "mx8/convert/rules.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/quantize_ref.h"
#include "mx8/io/hf_config.h"
#include "mx8/io/safetensors_writer.h"
#include "mx8/util/atomic_file.h"

namespace mx8::convert {

namespace fs = std::filesystem;
using io::DType;

std::optional<Scheme> parse_scheme(std::string_view s) {
  if (s == "ds-fp8") return Scheme::ds_fp8;
  if (s == "mxfp8") return Scheme::mxfp8;
  if (s == "mxfp4") return Scheme::mxfp4;
  if (s == "bf16") return Scheme::bf16;
  return std::nullopt;
}

const char* scheme_name(Scheme s) {
  switch (s) {
    case Scheme::ds_fp8:
      return "ds-fp8";
    case Scheme::mxfp8:
      return "mxfp8";
    case Scheme::mxfp4:
      return "mxfp4";
    case Scheme::bf16:
      return "bf16";
  }
  return "?";
}

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt_signal(int) {
  g_interrupted = true;
}

// SIGINT/SIGTERM set a flag that the workers check between chunks; the error that follows unwinds
// through StagedFolder, which removes the partial output. The previous handlers come back after.
class InterruptGuard {
 public:
  InterruptGuard() {
    struct sigaction sa {};
    sa.sa_handler = on_interrupt_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    g_interrupted = false;  // a request applies to the conversion that saw it, not to the next one
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

void check_interrupt() {
  if (g_interrupted) throw Error("interrupted; the partial output was removed");
}

// VmHWM of /proc/self/status: the peak resident set of this program's own address space.
// (getrusage's ru_maxrss is not used: Linux carries it across exec, so a process started from a
// large parent, e.g. Python, would report the parent's peak.)
uint64_t peak_rss_bytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %lu kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

enum class Op { copy, cast, quantize };

struct Job {
  const Source* src = nullptr;
  Op op = Op::copy;
  io::TensorSpec main;
  std::optional<io::TensorSpec> scale;
  format::QuantSpec spec;  // Op::quantize
  size_t report = 0;       // index into ConvertReport::tensors
  bool measure = false;
};

format::QuantSpec scheme_spec(Scheme scheme, format::ScaleRule rule) {
  format::QuantSpec q;
  q.rule = rule;
  q.saturate = true;
  switch (scheme) {
    case Scheme::ds_fp8:
      // DeepSeek's per_block_cast_to_fp8 clamps amax at 1e-4 so an all-zero block gets a finite,
      // representable scale (2^-22 with ceil) rather than the smallest power of two.
      q.element = format::ElementFormat::e4m3;
      q.blocking = format::Blocking::block(128);
      q.storage = format::ScaleStorage::f32;
      q.amax_floor = 1e-4f;
      break;
    case Scheme::mxfp8:
    case Scheme::mxfp4:
      q.element = scheme == Scheme::mxfp8 ? format::ElementFormat::e4m3 : format::ElementFormat::e2m1;
      q.blocking = format::Blocking::tile(32);
      q.storage = format::ScaleStorage::ue8m0;
      q.amax_floor = 0.f;
      break;
    case Scheme::bf16:
      break;
  }
  return q;
}

// pwrite the whole range, retrying short writes.
void pwrite_all(int fd, const void* data, size_t size, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + path + ": " + std::strerror(errno));
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// One output shard: its header is written up front; tensors are then written at their offsets in
// any order (the converter goes tensor by tensor in input order, while the reference layout orders
// the file by dtype). The file lives inside a StagedFolder, which provides the atomicity.
class ShardFile {
 public:
  ShardFile(std::string path, std::vector<io::TensorSpec> specs) : path_(std::move(path)) {
    io::sort_reference_order(specs);
    const std::string header = io::safetensors_header(specs, {{"format", "pt"}});
    uint64_t offset = 8 + header.size();
    for (const auto& s : specs) {
      offsets_[s.name] = offset;
      offset += s.nbytes();
    }
    size_ = offset;
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot create " + path_ + ": " + std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
    pwrite_all(fd_, len, 8, 0, path_);
    pwrite_all(fd_, header.data(), header.size(), 8, path_);
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
      throw Error("cannot size " + path_ + ": " + std::strerror(errno));
  }
  ~ShardFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  uint64_t offset(const std::string& name) const { return offsets_.at(name); }
  void write(const void* data, size_t size, uint64_t offset) const {
    pwrite_all(fd_, data, size, offset, path_);
  }
  void finish() {
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      fd_ = -1;
      throw Error("cannot write " + path_ + ": " + std::strerror(errno));
    }
    fd_ = -1;
  }
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::map<std::string, uint64_t> offsets_;
  uint64_t size_ = 0;
};

// Runs fn(chunk) for every chunk on the pool; the first exception (or an interrupt) stops the rest
// and is rethrown on the calling thread (a pool task must not throw).
template <class Fn>
void for_chunks(cpu::ThreadPool& pool, int64_t n_chunks, Fn&& fn) {
  std::mutex m;
  std::exception_ptr first;
  std::atomic<bool> failed{false};
  pool.parallel_for(static_cast<size_t>(n_chunks), 1, [&](size_t begin, size_t end) {
    for (size_t c = begin; c < end && !failed; ++c) {
      try {
        check_interrupt();
        fn(static_cast<int64_t>(c));
      } catch (...) {
        std::lock_guard lock(m);
        if (!first) first = std::current_exception();
        failed = true;
      }
    }
  });
  if (first) std::rethrow_exception(first);
}

struct Stats {
  std::mutex m;
  double sum_x2 = 0, sum_e2 = 0, max_abs = 0;
  int64_t nonfinite = 0;
  void add(const float* x, const float* y, int64_t n) {
    double sx = 0, se = 0, mx = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      // A NaN or infinity, in the input or in what became of it, has no error to measure: it is
      // counted instead, so that the tensor is never reported exact (the SQNR covers the rest).
      if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
        ++bad;
        continue;
      }
      const double xi = x[i], e = static_cast<double>(y[i]) - xi;
      sx += xi * xi;
      se += e * e;
      mx = std::max(mx, std::fabs(e));
    }
    std::lock_guard lock(m);
    sum_x2 += sx;
    sum_e2 += se;
    max_abs = std::max(max_abs, mx);
    nonfinite += bad;
  }
  double sqnr_db() const { return sum_e2 == 0 ? INFINITY : 10 * std::log10(sum_x2 / sum_e2); }
  // The tensor's measured error, into its report (where the job measures).
  void report(const Job& job, TensorReport& rep) const {
    if (!job.measure) return;
    rep.measured = true;
    rep.sqnr_db = sqnr_db();
    rep.max_abs_err = max_abs;
    rep.nonfinite = nonfinite;
  }
};

// Rows per chunk: a multiple of `align`, about `target` bytes of f32 per chunk.
int64_t chunk_rows(int64_t rows, int64_t cols, int64_t align, uint64_t target = 4u << 20) {
  int64_t r = static_cast<int64_t>(target / (static_cast<uint64_t>(std::max<int64_t>(cols, 1)) * 4));
  r = std::max<int64_t>(align, r / align * align);
  return std::min(r, std::max<int64_t>(rows, 1));
}

void run_quantize(const Job& job, const ShardFile& shard, cpu::ThreadPool& pool, Progress& progress,
                  TensorReport& rep) {
  const Source& s = *job.src;
  const int64_t R = s.rows(), C = s.cols();
  const auto& q = job.spec;
  const auto grid = format::scale_grid(q.blocking, R, C);
  const int64_t align = std::lcm(s.row_alignment(), grid.block_rows);
  const int64_t step = chunk_rows(R, C, align);
  const int64_t n_chunks = (R + step - 1) / step;
  const size_t code_row = format::code_row_bytes(q.element, C);
  const size_t scale_row = static_cast<size_t>(grid.cols) * (q.storage == format::ScaleStorage::f32 ? 4 : 1);
  const uint64_t main_off = shard.offset(job.main.name), scale_off = shard.offset(job.scale->name);
  const double in_bytes_per_row = static_cast<double>(s.nbytes) / std::max<int64_t>(R, 1);
  Stats stats;
  for_chunks(pool, n_chunks, [&](int64_t c) {
    const int64_t r0 = c * step, r1 = std::min(R, r0 + step), n = r1 - r0;
    thread_local std::vector<float> x, y;
    thread_local std::vector<uint8_t> codes, scales;
    format::SourceType type = format::SourceType::f32;
    const void* src = s.direct_rows(r0, &type);
    if (!src || job.measure) {
      x.resize(static_cast<size_t>(n * C));
      s.read_rows_f32(r0, r1, x.data());
      src = x.data();
      type = format::SourceType::f32;
    }
    codes.resize(format::code_bytes(q, n, C));
    scales.resize(format::scale_bytes(q, n, C));
    cpu::quantize(type, src, n, C, q, codes.data(), scales.data(), nullptr);
    shard.write(codes.data(), codes.size(), main_off + static_cast<uint64_t>(r0) * code_row);
    shard.write(scales.data(), scales.size(),
                scale_off + static_cast<uint64_t>(r0 / grid.block_rows) * scale_row);
    if (job.measure) {
      y.resize(static_cast<size_t>(n * C));
      cpu::dequantize(codes.data(), scales.data(), n, C, q, y.data(), nullptr);
      stats.add(x.data(), y.data(), n * C);
    }
    s.release_rows(r0, r1);
    progress.add(static_cast<uint64_t>(in_bytes_per_row * n));
  });
  stats.report(job, rep);
}

void run_cast(const Job& job, const ShardFile& shard, cpu::ThreadPool& pool, Progress& progress,
              TensorReport& rep) {
  const Source& s = *job.src;
  const int64_t R = s.rows(), C = s.cols();
  const int64_t step = chunk_rows(R, C, s.row_alignment());
  const int64_t n_chunks = R == 0 || C == 0 ? 0 : (R + step - 1) / step;
  const size_t out_size = io::dtype_size(job.main.dtype);
  const uint64_t off = shard.offset(job.main.name);
  const double in_bytes_per_row = static_cast<double>(s.nbytes) / std::max<int64_t>(R, 1);
  Stats stats;
  for_chunks(pool, n_chunks, [&](int64_t c) {
    const int64_t r0 = c * step, r1 = std::min(R, r0 + step), n = r1 - r0;
    thread_local std::vector<float> x, y;
    thread_local std::vector<uint16_t> h;
    x.resize(static_cast<size_t>(n * C));
    s.read_rows_f32(r0, r1, x.data());
    const void* out = x.data();  // F32: the rows as read
    if (job.main.dtype == DType::BF16) {
      // format::f32_to_bf16_rne over a plain uint16_t array, which the compiler vectorizes.
      h.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) h[i] = format::f32_to_bf16_rne(x[i]);
      out = h.data();
    } else if (job.main.dtype != DType::F32) {
      throw Error("internal: cast to " + std::string(io::dtype_name(job.main.dtype)));
    }
    shard.write(out, x.size() * out_size, off + static_cast<uint64_t>(r0) * C * out_size);
    if (job.measure && job.main.dtype == DType::BF16) {  // an F32 cast is exact: no error to add
      y.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) y[i] = format::bf16_to_f32(h[i]);
      stats.add(x.data(), y.data(), n * C);
    }
    s.release_rows(r0, r1);
    progress.add(static_cast<uint64_t>(in_bytes_per_row * n));
  });
  stats.report(job, rep);
}

void run_copy(const Job& job, const ShardFile& shard, cpu::ThreadPool& pool, Progress& progress) {
  const Source& s = *job.src;
  const uint64_t off = shard.offset(job.main.name);
  if (s.kind == Source::Kind::raw || s.permute_heads == 0) {
    // Straight from the mapping, in pieces so progress moves and pages can be dropped behind us.
    const uint64_t piece = 64u << 20;
    const int64_t n = static_cast<int64_t>((s.nbytes + piece - 1) / piece);
    for_chunks(pool, n, [&](int64_t c) {
      const uint64_t b = c * piece, e = std::min<uint64_t>(s.nbytes, b + piece);
      shard.write(s.data + b, e - b, off + b);
      progress.add(e - b);
    });
    return;
  }
  const int64_t R = s.rows();
  const uint64_t rb = s.row_bytes();
  const int64_t step = std::max<int64_t>(1, static_cast<int64_t>((16u << 20) / std::max<uint64_t>(rb, 1)));
  for_chunks(pool, (R + step - 1) / step, [&](int64_t c) {
    const int64_t r0 = c * step, r1 = std::min(R, r0 + step);
    thread_local std::vector<uint8_t> buf;
    buf.resize((r1 - r0) * rb);
    s.copy_rows(r0, r1, buf.data());
    shard.write(buf.data(), buf.size(), off + r0 * rb);
    progress.add(buf.size());
  });
}

// Plans the output of one source tensor.
Job plan_job(const Source& s, const ConvertOptions& opt, const QuantizeRules& rules, TensorReport& rep) {
  Job job;
  job.src = &s;
  job.main.name = s.name;
  job.main.shape = s.shape;
  rep.name = s.name;
  rep.shape = s.shape;
  rep.in_dtype = s.describe();
  rep.in_bytes = s.nbytes + (s.kind == Source::Kind::quantized ? s.scale_nbytes : 0);
  // An FP8 matrix whose scales are not in a layout we recognise (per-channel or per-tensor scales of
  // other tools) would be read as if its scale were 1: refuse rather than convert it wrongly.
  const bool lone_fp8 = s.kind == Source::Kind::raw &&
                        (s.dtype == DType::F8_E4M3 || s.dtype == DType::F8_E5M2) && s.shape.size() == 2;
  if (lone_fp8 &&
      !(opt.scheme != Scheme::bf16 && rules.decide(s.name, s.shape, true) == RuleReason::keep_glob))
    throw Error("tensor \"" + s.name + "\" is " + std::string(io::dtype_name(s.dtype)) +
                " without block scales mx8 recognises (X.weight_scale_inv per block, or X.weight_scale "
                "F8_E8M0 per 32); "
                "its values cannot be known (use --keep to copy it unchanged)");
  DType copy_dtype{};
  const bool copyable = s.copyable(&copy_dtype);
  // Whatever cannot be copied as it is becomes F32 from GGUF (exact for every block type)
  // and BF16 from safetensors quantized codes (exact for power-of-two scales).
  const DType wide = s.kind == Source::Kind::gguf ? DType::F32 : DType::BF16;
  // Already quantized input: DeepSeek/MX codes with scales, or GGUF blocks (Q8_0, K-quants, MXFP4, ...).
  const bool input_quantized = s.kind == Source::Kind::quantized || !copyable;

  if (opt.scheme == Scheme::bf16) {
    rep.reason = "bf16 scheme";
    if (!s.is_float() || (copyable && copy_dtype == DType::BF16)) {
      job.op = Op::copy;
      job.main.dtype = copy_dtype;
    } else {
      job.op = Op::cast;
      job.main.dtype = DType::BF16;
      // E4M3/E2M1 codes times power-of-two scales fit BF16 exactly; only other scales (or --stats)
      // need measuring.
      int64_t scales = 0;
      job.measure = opt.stats || (s.kind == Source::Kind::quantized && s.count_nonpow2_scales(&scales) > 0);
    }
  } else {
    RuleReason reason = rules.decide(s.name, s.shape, s.is_float());
    if (QuantizeRules::quantizes(reason) && opt.scheme == Scheme::mxfp4 && s.cols() % 2 != 0) {
      reason = RuleReason::keep_not_matrix;  // an odd row length has no U8 [out, in/2] shape
      rep.reason = "kept (odd row length: no packed E2M1 shape)";
    }
    if (rep.reason.empty()) rep.reason = rule_reason_text(reason);
    if (QuantizeRules::quantizes(reason)) {
      job.op = Op::quantize;
      job.spec = scheme_spec(opt.scheme, opt.rule);
      job.measure = input_quantized || opt.stats;
      const int64_t R = s.shape[0], C = s.shape[1];
      const auto grid = format::scale_grid(job.spec.blocking, R, C);
      if (opt.scheme == Scheme::ds_fp8) {
        job.main.dtype = DType::F8_E4M3;
        job.scale = io::TensorSpec{s.name + "_scale_inv", DType::F32, {grid.rows, grid.cols}};
      } else {
        job.main.dtype = opt.scheme == Scheme::mxfp8 ? DType::F8_E4M3 : DType::U8;
        if (opt.scheme == Scheme::mxfp4) job.main.shape = {R, C / 2};
        job.scale = io::TensorSpec{s.name + "_scale", DType::F8_E8M0, {grid.rows, grid.cols}};
      }
      format::validate_spec(job.spec, R, C);
    } else if (copyable) {
      job.op = Op::copy;
      job.main.dtype = copy_dtype;
    } else {
      job.op = Op::cast;
      job.main.dtype = wide;
      job.measure = s.kind == Source::Kind::quantized;
    }
  }
  rep.action = job.op == Op::copy   ? "copy"
               : job.op == Op::cast ? (s.kind == Source::Kind::quantized || !copyable ? "dequantize" : "cast")
               : input_quantized    ? "requantize"
                                    : "quantize";
  rep.out_dtype = std::string(io::dtype_name(job.main.dtype));
  if (job.scale)
    rep.out_dtype +=
        "+" + std::string(io::dtype_name(job.scale->dtype)) + " " + format::blocking_name(job.spec.blocking);
  rep.out_bytes = job.main.nbytes() + (job.scale ? job.scale->nbytes() : 0);
  if (s.kind == Source::Kind::quantized) rep.nonpow2_scales = s.count_nonpow2_scales(&rep.input_scales);
  return job;
}

// config.json of the output.
std::optional<nlohmann::json> output_config(const Input& in, const ConvertOptions& opt,
                                            const std::vector<std::string>& kept_linear, bool any_quantized) {
  nlohmann::json c;
  std::error_code ec;
  if (in.is_gguf) {
    c = gguf_llama_hf_config(*in.gguf);
  } else if (fs::is_directory(in.path, ec) && fs::exists(fs::path(in.path) / "config.json", ec)) {
    c = io::read_json_file((fs::path(in.path) / "config.json").string());
    if (!c.is_object()) throw Error(in.path + "/config.json: not a JSON object");
  } else {
    return std::nullopt;
  }
  c.erase("quantization_config");
  // Nothing quantized (e.g. --keep '*'): no quantization_config, or loaders would look for scales.
  switch (any_quantized ? opt.scheme : Scheme::bf16) {
    case Scheme::ds_fp8: {
      nlohmann::json q = {{"quant_method", "fp8"},
                          {"fmt", "e4m3"},
                          {"weight_block_size", {128, 128}},
                          {"activation_scheme", "dynamic"}};
      if (opt.rule != format::ScaleRule::fp32) q["scale_fmt"] = "ue8m0";
      if (!kept_linear.empty()) q["modules_to_not_convert"] = kept_linear;
      c["quantization_config"] = q;
      break;
    }
    case Scheme::mxfp8:
    case Scheme::mxfp4: {
      // mx8's own layout (docs/CONVERT.md); other loaders do not know it.
      nlohmann::json q = {{"quant_method", "mx8"},
                          {"format", opt.scheme == Scheme::mxfp8 ? "mxfp8" : "mxfp4"},
                          {"fmt", opt.scheme == Scheme::mxfp8 ? "e4m3" : "e2m1"},
                          {"scale_fmt", "ue8m0"},
                          {"block_size", 32},
                          {"scale_rule", format::scale_rule_name(opt.rule)}};
      if (!kept_linear.empty()) q["modules_to_not_convert"] = kept_linear;
      c["quantization_config"] = q;
      break;
    }
    case Scheme::bf16:
      if (opt.scheme != Scheme::bf16) break;  // kept as they were
      if (c.contains("torch_dtype")) c["torch_dtype"] = "bfloat16";
      if (c.contains("dtype") || !c.contains("torch_dtype")) c["dtype"] = "bfloat16";
      break;
  }
  return c;
}

// Side files worth carrying along: tokenizer, generation config, chat template, licence, readme.
bool carry_file(const fs::path& p) {
  const std::string name = p.filename().string(), ext = p.extension().string();
  if (name == "config.json" || name == "model.safetensors.index.json") return false;
  static const char* skip[] = {".safetensors", ".bin", ".pt",      ".pth",  ".gguf",
                               ".ckpt",        ".h5",  ".msgpack", ".onnx", ".pkl"};
  for (const char* s : skip)
    if (ext == s) return false;
  return !name.empty() && name[0] != '.';
}

}  // namespace

void request_interrupt() {
  g_interrupted = true;
}

void check_thread_count(int64_t threads) {
  if (threads > kMaxThreads)
    throw Error("--threads " + std::to_string(threads) + ": at most " + std::to_string(kMaxThreads) +
                " (0 uses every core)");
}

ConvertReport convert_checkpoint(const std::string& in_path, const std::string& out_path,
                                 const ConvertOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  InterruptGuard guard;
  check_thread_count(opt.threads);
  if (opt.scheme != Scheme::ds_fp8 && opt.scheme != Scheme::bf16 && opt.rule == format::ScaleRule::fp32)
    throw Error(std::string("--scale-rule fp32 gives scales that are not powers of two; ") +
                scheme_name(opt.scheme) + " stores UE8M0 scales (use ceil or floor)");
  {
    // The output is the input or a folder that holds it: replacing it (--force) would delete the input.
    std::error_code ec;
    const fs::path in_c = fs::weakly_canonical(in_path, ec), out_c = fs::weakly_canonical(out_path, ec);
    const bool holds =
        !ec && std::mismatch(out_c.begin(), out_c.end(), in_c.begin(), in_c.end()).first == out_c.end();
    if (fs::exists(out_path, ec) && (holds || fs::equivalent(in_path, out_path, ec)))
      throw Error("output " + out_path + " contains the input " + in_path +
                  " (or is it): replacing it would delete the input (choose another output path)");
  }
  Input in = open_input(in_path);
  if (!in.foreign_quant_method.empty())
    throw Error(in_path + ": the checkpoint is quantized with quant_method \"" + in.foreign_quant_method +
                "\", which mx8 cannot read (supported: DeepSeek-style fp8 block scales, mx8's mxfp8/mxfp4)");
  ConvertReport report;
  report.input = in_path;
  report.output = out_path;

  QuantizeRules rules{opt.keep, opt.quantize};
  // A glob that names no tensor is a typo more often than not: say so before anything is written.
  for (const auto* globs : {&opt.keep, &opt.quantize})
    for (const std::string& g : *globs) {
      const bool any = std::any_of(in.tensors.begin(), in.tensors.end(),
                                   [&](const auto& s) { return glob_match(g, s.name); });
      if (!any && !in.tensors.empty())
        throw Error(std::string(globs == &opt.keep ? "--keep" : "--quantize") + " '" + g +
                    "' matches no tensor of " + in_path + " (names look like '" + in.tensors.front().name +
                    "'; '*' crosses dots)");
    }
  std::vector<Job> jobs;
  report.tensors.resize(in.tensors.size());
  std::vector<std::string> kept_linear;
  for (size_t i = 0; i < in.tensors.size(); ++i) {
    jobs.push_back(plan_job(in.tensors[i], opt, rules, report.tensors[i]));
    jobs.back().report = i;
    const auto& s = in.tensors[i];
    const RuleReason r = rules.decide(s.name, s.shape, s.is_float());
    if (opt.scheme != Scheme::bf16 && jobs.back().op != Op::quantize && s.shape.size() == 2 &&
        r != RuleReason::keep_embedding && r != RuleReason::keep_not_float &&
        r != RuleReason::keep_not_weight)
      kept_linear.push_back(s.name.substr(0, s.name.size() - std::string(".weight").size()));
  }

  // Shards, in input order, each weight with its scales.
  std::vector<io::TensorSpec> all;
  for (const auto& j : jobs) {
    all.push_back(j.main);
    if (j.scale) all.push_back(*j.scale);
  }
  auto shards = io::plan_shards(all, opt.shard_size);
  std::map<std::string, size_t> shard_of;
  for (size_t s = 0; s < shards.size(); ++s)
    for (const auto& t : shards[s]) shard_of[t.name] = s;

  uint64_t total_in = 0;
  for (const auto& s : in.tensors) total_in += s.nbytes;
  report.in_bytes = 0;
  for (const auto& r : report.tensors) report.in_bytes += r.in_bytes;

  // The pool first: when the system cannot start its threads, nothing has been written yet.
  cpu::ThreadPool pool(opt.threads);
  io::StagedFolder folder(out_path, opt.overwrite);
  Progress progress(opt.progress, total_in, std::string("convert ") + scheme_name(opt.scheme));
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = io::shard_file_name(s, shards.size());
    ShardFile shard(folder.file(file), shards[s]);
    for (const auto& job : jobs) {
      if (shard_of.at(job.main.name) != s) continue;
      check_interrupt();
      TensorReport& rep = report.tensors[job.report];
      try {
        switch (job.op) {
          case Op::copy:
            run_copy(job, shard, pool, progress);
            break;
          case Op::cast:
            run_cast(job, shard, pool, progress, rep);
            break;
          case Op::quantize:
            run_quantize(job, shard, pool, progress, rep);
            break;
        }
      } catch (const Error& e) {
        if (g_interrupted) throw;
        throw Error("tensor \"" + job.main.name + "\": " + e.what());
      }
      job.src->release();
    }
    shard.finish();
    report.out_bytes += shard.size();
  }
  if (shards.size() > 1)
    write_file_atomically(folder.file("model.safetensors.index.json"), io::safetensors_index_json(shards));
  report.shards = static_cast<int>(shards.size());

  const bool any_quantized =
      std::any_of(jobs.begin(), jobs.end(), [](const Job& j) { return j.op == Op::quantize; });
  if (auto cfg = output_config(in, opt, kept_linear, any_quantized))
    write_file_atomically(folder.file("config.json"), cfg->dump(2) + "\n");
  std::error_code ec;
  if (in.is_gguf) {
    // The GGUF's embedded SentencePiece-style vocabulary, as the tokenizer files HF loaders read.
    if (auto tok = gguf_llama_tokenizer(*in.gguf)) {
      write_file_atomically(folder.file("tokenizer.json"), tok->tokenizer_json);
      write_file_atomically(folder.file("tokenizer_config.json"), tok->tokenizer_config_json);
      report.copied_files.push_back("tokenizer.json (from GGUF)");
      report.copied_files.push_back("tokenizer_config.json (from GGUF)");
    }
  }
  if (!in.is_gguf && fs::is_directory(in_path, ec)) {
    for (const auto& e : fs::directory_iterator(in_path)) {
      if (!e.is_regular_file() || !carry_file(e.path())) continue;
      fs::copy_file(e.path(), folder.file(e.path().filename().string()), fs::copy_options::overwrite_existing,
                    ec);
      if (ec) throw Error("cannot copy " + e.path().string() + ": " + ec.message());
      report.copied_files.push_back(e.path().filename().string());
    }
  }
  check_interrupt();
  folder.commit();
  if (!folder.leftover().empty())
    report.warnings.push_back("the replaced " + out_path + " could not be removed; it is left at " +
                              folder.leftover());
  progress.finish();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.peak_rss_bytes = peak_rss_bytes();
  return report;
}

}  // namespace mx8::convert
