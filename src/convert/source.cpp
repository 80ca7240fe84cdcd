// Opening conversion inputs and reading their tensors as f32 rows.
#include "convert/source.h"

#include <cstring>
#include <filesystem>
#include <set>

#include "mx8/backend/cpu/quantize.h"
#include "mx8/convert/gguf_to_hf.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/io/hf_config.h"

namespace mx8::convert {

namespace fs = std::filesystem;
using io::DType;

int64_t Source::rows() const {
  int64_t r = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) r *= shape[i];
  return r;
}
int64_t Source::cols() const {
  return shape.empty() ? 1 : shape.back();
}

bool Source::is_float() const {
  if (kind != Kind::raw) return true;
  switch (dtype) {
    case DType::F64:
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::F8_E4M3:
    case DType::F8_E5M2:
      return true;
    default:
      return false;
  }
}

std::string Source::describe() const {
  if (kind == Kind::gguf) return std::string("GGUF ") + io::ggml_type_name(gguf->type);
  if (kind == Kind::raw) return std::string(io::dtype_name(dtype));
  std::string s = std::string(io::dtype_name(dtype)) + "+" + std::string(io::dtype_name(scale_dtype)) + " ";
  return s + format::blocking_name(qspec.blocking);
}

int64_t Source::row_alignment() const {
  if (kind == Kind::quantized && qspec.blocking.kind == format::Granularity::block)
    return qspec.blocking.block_rows;
  return 1;
}

bool Source::copyable(DType* out) const {
  if (kind == Kind::raw) {
    *out = dtype;
    return true;
  }
  if (kind == Kind::gguf) {
    switch (gguf->type) {
      case io::GgmlType::kF32:
        *out = DType::F32;
        return true;
      case io::GgmlType::kF16:
        *out = DType::F16;
        return true;
      case io::GgmlType::kBF16:
        *out = DType::BF16;
        return true;
      default:
        return false;
    }
  }
  return false;
}

uint64_t Source::row_bytes() const {
  if (kind == Kind::gguf) return cols() / io::ggml_block_elems(gguf->type) * io::ggml_block_bytes(gguf->type);
  return static_cast<uint64_t>(cols()) * io::dtype_size(dtype);
}

namespace {

// HF row r of a permuted tensor comes from GGUF row hf_to_meta(r).
int64_t hf_to_meta_row(int64_t row, int64_t head_dim) {
  const int64_t half = head_dim / 2, head = row / head_dim, r = row % head_dim;
  return head * head_dim + 2 * (r % half) + r / half;
}

int64_t gguf_src_row(const Source& s, int64_t r) {
  return s.permute_heads > 0 ? hf_to_meta_row(r, s.rows() / s.permute_heads) : r;
}

void decode_raw(DType d, const uint8_t* src, float* dst, int64_t n) {
  switch (d) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = d == DType::BF16 ? format::bf16_to_f32(h) : format::f16_to_f32(h);
      }
      return;
    case DType::F8_E4M3:
      for (int64_t i = 0; i < n; ++i) dst[i] = format::e4m3_to_f32(src[i]);
      return;
    case DType::F8_E5M2:
      for (int64_t i = 0; i < n; ++i) dst[i] = format::e5m2_to_f32(src[i]);
      return;
    default:
      throw Error("cannot read a " + std::string(io::dtype_name(d)) + " tensor as real numbers");
  }
}

}  // namespace

void Source::read_rows_f32(int64_t r0, int64_t r1, float* dst) const {
  const int64_t c = cols();
  switch (kind) {
    case Kind::raw:
      decode_raw(dtype, data + static_cast<uint64_t>(r0) * c * io::dtype_size(dtype), dst, (r1 - r0) * c);
      return;
    case Kind::quantized: {
      const size_t code_row = format::code_row_bytes(qspec.element, c);
      const auto grid = format::scale_grid(qspec.blocking, rows(), c);
      const size_t scale_elem = qspec.storage == format::ScaleStorage::f32 ? 4 : 1;
      const int64_t grid_row0 = r0 / grid.block_rows;
      cpu::dequantize(data + r0 * code_row, scales + grid_row0 * grid.cols * scale_elem, r1 - r0, c, qspec,
                      dst, nullptr);
      return;
    }
    case Kind::gguf: {
      const uint64_t rb = row_bytes();
      for (int64_t r = r0; r < r1; ++r)
        io::ggml_dequantize(gguf->type, data + gguf_src_row(*this, r) * rb, dst + (r - r0) * c, c);
      return;
    }
  }
}

const void* Source::direct_rows(int64_t r0, format::SourceType* type) const {
  if (kind != Kind::raw) return nullptr;
  const uint8_t* p = data + static_cast<uint64_t>(r0) * cols() * io::dtype_size(dtype);
  const size_t align = io::dtype_size(dtype);
  if (reinterpret_cast<uintptr_t>(p) % align) return nullptr;
  switch (dtype) {
    case DType::F32:
      *type = format::SourceType::f32;
      return p;
    case DType::BF16:
      *type = format::SourceType::bf16;
      return p;
    case DType::F16:
      *type = format::SourceType::f16;
      return p;
    default:
      return nullptr;
  }
}

void Source::copy_rows(int64_t r0, int64_t r1, uint8_t* dst) const {
  const uint64_t rb = row_bytes();
  if (kind == Kind::gguf && permute_heads > 0) {
    for (int64_t r = r0; r < r1; ++r)
      std::memcpy(dst + (r - r0) * rb, data + gguf_src_row(*this, r) * rb, rb);
    return;
  }
  std::memcpy(dst, data + r0 * rb, (r1 - r0) * rb);
}

int64_t Source::count_nonpow2_scales(int64_t* total) const {
  *total = 0;
  if (kind != Kind::quantized) return 0;
  if (scale_dtype != DType::F32) {
    *total = static_cast<int64_t>(scale_nbytes);
    return 0;  // UE8M0 bytes are powers of two by construction
  }
  int64_t bad = 0;
  const int64_t n = static_cast<int64_t>(scale_nbytes / 4);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, scales + 4 * i, 4);
    const uint32_t exp = (b >> 23) & 0xFF;
    if ((b & 0x7FFFFF) != 0 || exp == 0 || exp == 0xFF) ++bad;  // mantissa bits, zero/subnormal, Inf/NaN
  }
  *total = n;
  return bad;
}

void Source::release() const {
  if (!mapping) return;
  mapping->dont_need(static_cast<size_t>(data - mapping->data()), nbytes);
  if (scales) mapping->dont_need(static_cast<size_t>(scales - mapping->data()), scale_nbytes);
}

void Source::release_rows(int64_t r0, int64_t r1) const {
  if (!mapping || kind == Kind::gguf) return;
  const uint64_t row = kind == Kind::raw ? row_bytes() : format::code_row_bytes(qspec.element, cols());
  mapping->dont_need(static_cast<size_t>(data - mapping->data()) + r0 * row, (r1 - r0) * row);
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Recognises "X.weight" codes with their scales; fills the quantized fields and returns true.
bool recognise_quantized(const io::SafetensorsModel& m, const io::Tensor& t,
                         const std::vector<int64_t>& cfg_block, Source& s) {
  if (t.shape().size() != 2) return false;
  const int64_t rows = t.shape()[0], cols = t.shape()[1];
  const std::string what = m.folder() + ": tensor \"" + t.name() + "\"";
  // DeepSeek fine-grained FP8: F8_E4M3 + weight_scale_inv per BxB block (F32, or UE8M0 bytes).
  if (t.dtype() == DType::F8_E4M3) {
    if (const io::Tensor* sc = m.find(t.name() + "_scale_inv")) {
      if (sc->shape().size() != 2 || (sc->dtype() != DType::F32 && sc->dtype() != DType::F8_E8M0))
        throw Error(what + ": its weight_scale_inv is not a 2-D F32 or F8_E8M0 grid");
      std::vector<int64_t> candidates =
          cfg_block.size() == 2 ? std::vector<int64_t>{cfg_block[0]} : std::vector<int64_t>{128, 32, 64, 256};
      for (int64_t b : candidates) {
        if (format::ceil_div(rows, b) == sc->shape()[0] && format::ceil_div(cols, b) == sc->shape()[1]) {
          s.kind = Source::Kind::quantized;
          s.qspec = {format::ElementFormat::e4m3,
                     sc->dtype() == DType::F32 ? format::ScaleRule::fp32 : format::ScaleRule::ceil,
                     format::Blocking::block(b),
                     sc->dtype() == DType::F32 ? format::ScaleStorage::f32 : format::ScaleStorage::ue8m0,
                     true,
                     0.f};
          s.scale_name = sc->name();
          s.scale_dtype = sc->dtype();
          s.scales = sc->data;
          s.scale_nbytes = sc->nbytes();
          return true;
        }
      }
      throw Error(what + ": weight_scale_inv grid [" + std::to_string(sc->shape()[0]) + ", " +
                  std::to_string(sc->shape()[1]) + "] does not fit a block size for [" +
                  std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
  }
  // MX (this project's mxfp8 / mxfp4 layouts): codes + "X.weight_scale" F8_E8M0 [rows, ceil(cols/32)].
  const io::Tensor* sc = m.find(t.name() + "_scale");
  if (!sc || sc->dtype() != DType::F8_E8M0 || sc->shape().size() != 2 || sc->shape()[0] != rows) return false;
  int64_t logical_cols = 0;
  format::ElementFormat el{};
  if (t.dtype() == DType::F8_E4M3) {
    logical_cols = cols;
    el = format::ElementFormat::e4m3;
  } else if (t.dtype() == DType::U8) {
    logical_cols = 2 * cols;
    el = format::ElementFormat::e2m1;
  } else {
    return false;
  }
  if (sc->shape()[1] != format::ceil_div(logical_cols, 32))
    throw Error(what + ": its weight_scale grid does not match 32-element blocks");
  s.kind = Source::Kind::quantized;
  s.shape = {rows, logical_cols};
  s.qspec = {el, format::ScaleRule::ceil, format::Blocking::tile(32), format::ScaleStorage::ue8m0, true, 0.f};
  s.scale_name = sc->name();
  s.scale_dtype = sc->dtype();
  s.scales = sc->data;
  s.scale_nbytes = sc->nbytes();
  return true;
}

Input open_safetensors(const std::string& path) {
  Input in;
  in.path = path;
  in.model = std::make_unique<io::SafetensorsModel>(io::SafetensorsModel::open(path));
  in.folder = in.model->folder();
  std::vector<int64_t> cfg_block;
  std::error_code ec;
  if (fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec)) {
    auto cfg = io::HfConfig::load(path);
    if (cfg.quantization) {
      // Only the layouts recognise_quantized reads; the converter refuses others (inspect lists them).
      const std::string& method = cfg.quantization->quant_method;
      if (method != "fp8" && method != "mx8") in.foreign_quant_method = method;
      cfg_block = cfg.quantization->weight_block_size;  // validated by HfConfig: two sizes in range
      // DeepSeek's blocks are square; recognise_quantized reads one size for both dimensions.
      if (method == "fp8" && cfg_block.size() == 2 && cfg_block[0] != cfg_block[1])
        throw Error((fs::path(path) / "config.json").string() + ": quantization_config.weight_block_size [" +
                    std::to_string(cfg_block[0]) + ", " + std::to_string(cfg_block[1]) +
                    "] is not square (mx8 reads square scale blocks only)");
    }
  }
  std::set<std::string> consumed;
  std::vector<Source> sources;
  for (const auto& [name, t] : in.model->tensors()) {
    Source s;
    s.name = name;
    s.shape = t->shape();
    s.dtype = t->dtype();
    s.data = t->data;
    s.nbytes = t->nbytes();
    s.mapping = &in.model->shards()[in.model->shard_of(name)].mapping();
    if (ends_with(name, ".weight") && recognise_quantized(*in.model, *t, cfg_block, s))
      consumed.insert(s.scale_name);
    sources.push_back(std::move(s));
  }
  for (auto& s : sources)
    if (!consumed.count(s.name)) in.tensors.push_back(std::move(s));
  return in;
}

Input open_gguf(const std::string& path) {
  Input in;
  in.path = path;
  in.is_gguf = true;
  in.gguf = std::make_unique<io::GgufFile>(io::GgufFile::open(path));
  const auto& f = *in.gguf;
  // A split model's other files hold tensors this one does not: converting one file would drop them.
  if (const int64_t parts = f.get_int("split.count", 1); parts > 1)
    throw Error(
        "GGUF file " + path + " is one of a " + std::to_string(parts) +
        "-file split model, which mx8 convert and inspect do not read (mx8 run and serve do; or merge "
        "it first with llama.cpp's gguf-split --merge)");
  gguf_llama_hf_config(f);  // rejects architectures we cannot map, before any work
  for (const auto& t : f.tensors()) {
    auto hf = gguf_llama_to_hf_name(t.name);
    if (!hf) continue;  // e.g. rope_freqs: recomputed from config by HF
    Source s;
    s.kind = Source::Kind::gguf;
    s.name = *hf;
    for (uint64_t d : t.shape()) s.shape.push_back(static_cast<int64_t>(d));
    s.gguf = &t;
    s.data = t.data;
    s.nbytes = t.n_bytes;
    s.dtype = DType::F32;
    if (!s.copyable(&s.dtype)) s.dtype = DType::F32;
    // Only the Q/K matrices are permuted (llama has no Q/K biases; a 1-D bias would need its
    // elements, not rows, permuted).
    s.permute_heads = s.shape.size() == 2 ? gguf_permute_heads(f, t.name, s.shape[0]) : 0;
    in.tensors.push_back(std::move(s));
  }
  return in;
}

}  // namespace

Input open_input(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    // GGUF is recognised by its magic, not its name.
    FILE* f = std::fopen(path.c_str(), "rb");
    char magic[4] = {};
    if (f) {
      size_t got = std::fread(magic, 1, 4, f);
      std::fclose(f);
      if (got == 4 && std::memcmp(magic, "GGUF", 4) == 0) return open_gguf(path);
    }
  }
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or folder");
  return open_safetensors(path);
}

}  // namespace mx8::convert
