// GGUF and Hugging Face tensor sources behind one naming scheme (GGUF's).
#include "model/model_source.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"
#include "mx8/io/safetensors.h"

namespace mx8::model {

const SourceTensor& ModelSource::require(const std::string& name) const {
  const SourceTensor* t = find(name);
  if (!t) throw Error("model " + describe() + ": missing tensor '" + name + "'");
  return *t;
}

namespace {

class GgufSource final : public ModelSource {
 public:
  explicit GgufSource(const std::string& path) : gguf_(GgufModelFiles::open(path)) {
    config_ = config_from_gguf(gguf_);
    for (const io::GgufFile& file : gguf_.files)
      for (const io::GgufTensor& t : file.tensors()) {
        SourceTensor s;
        s.name = t.name;
        switch (t.type) {
          case io::GgmlType::kF32:
            s.type = SourceTensor::Type::f32;
            break;
          case io::GgmlType::kF16:
            s.type = SourceTensor::Type::f16;
            break;
          case io::GgmlType::kBF16:
            s.type = SourceTensor::Type::bf16;
            break;
          default:
            s.type = SourceTensor::Type::ggml_blocks;
            s.ggml_type = t.type;
            break;
        }
        for (uint64_t d : t.shape()) s.shape.push_back(int64_t(d));
        s.data = t.data;
        tensors_[t.name] = s;
      }
  }
  const LlamaConfig& config() const override { return config_; }
  const SourceTensor* find(const std::string& name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  std::string describe() const override { return gguf_.meta().path(); }
  std::vector<float> rope_freq_divisors() const override {
    const SourceTensor* t = find("rope_freqs.weight");
    return t ? source_to_f32(*t) : std::vector<float>{};
  }

 private:
  GgufModelFiles gguf_;
  LlamaConfig config_;
  std::map<std::string, SourceTensor> tensors_;
};

// GGUF name -> Hugging Face name (Llama-family transformers modules).
std::string hf_name(const std::string& g) {
  static const std::map<std::string, std::string> top = {{"token_embd.weight", "model.embed_tokens.weight"},
                                                         {"output_norm.weight", "model.norm.weight"},
                                                         {"output.weight", "lm_head.weight"}};
  if (auto it = top.find(g); it != top.end()) return it->second;
  static const std::regex blk(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(g, m, blk)) return g;
  static const std::map<std::string, std::string> part = {
      {"attn_norm", "input_layernorm"},    {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},      {"attn_output", "self_attn.o_proj"},
      {"attn_q_norm", "self_attn.q_norm"}, {"attn_k_norm", "self_attn.k_norm"},
      {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"}};
  auto it = part.find(m[2].str());
  if (it == part.end()) return g;
  return "model.layers." + m[1].str() + "." + it->second + "." + m[3].str();
}

class HfSource final : public ModelSource {
 public:
  explicit HfSource(const std::string& folder)
      : folder_(folder), hf_(io::HfConfig::load(folder)), st_(io::SafetensorsModel::open(folder)) {
    config_ = config_from_hf(hf_, folder);
  }
  const LlamaConfig& config() const override { return config_; }
  std::string describe() const override { return folder_; }

  const SourceTensor* find(const std::string& name) const override {
    if (auto it = cache_.find(name); it != cache_.end()) return &it->second;
    std::string hn = hf_name(name);
    const io::Tensor* t = st_.find(hn);
    // A base model saved on its own (transformers' Qwen3Model, LlamaModel: sentence-transformers
    // embedding models such as Qwen3-Embedding) names its tensors without the "model." prefix.
    if (!t && hn.starts_with("model.") && (t = st_.find(hn.substr(6)))) hn.erase(0, 6);
    if (!t) return nullptr;
    SourceTensor s;
    s.name = hn;
    s.data = t->data;
    s.shape = t->shape();
    switch (t->dtype()) {
      case io::DType::F32:
        s.type = SourceTensor::Type::f32;
        break;
      case io::DType::F16:
        s.type = SourceTensor::Type::f16;
        break;
      case io::DType::BF16:
        s.type = SourceTensor::Type::bf16;
        break;
      case io::DType::F8_E4M3:
        attach_scales(hn, s);
        break;
      default:
        throw Error("model " + folder_ + ": tensor '" + hn + "' has dtype " +
                    std::string(io::dtype_name(t->dtype())) +
                    ", which mx8 does not load (F32, F16, BF16, F8_E4M3 with scales)");
    }
    return &cache_.emplace(name, std::move(s)).first->second;
  }

 private:
  void attach_scales(const std::string& hn, SourceTensor& s) const {
    s.type = SourceTensor::Type::e4m3;
    if (s.shape.size() != 2) throw Error("model " + folder_ + ": FP8 tensor '" + hn + "' is not a matrix");
    std::string base = hn.substr(0, hn.size() - std::string("weight").size());
    const io::Tensor* sc = nullptr;
    for (const char* suffix : {"weight_scale_inv", "weight_scale"})
      if ((sc = st_.find(base + suffix))) break;
    if (!sc)
      throw Error("model " + folder_ + ": FP8 tensor '" + hn + "' has no weight_scale_inv / weight_scale");
    if (sc->dtype() == io::DType::F32)
      s.scales_ue8m0 = false;
    else if (sc->dtype() == io::DType::F8_E8M0 || sc->dtype() == io::DType::U8)
      s.scales_ue8m0 = true;
    else
      throw Error("model " + folder_ + ": scale tensor '" + sc->name() + "' has dtype " +
                  std::string(io::dtype_name(sc->dtype())) + " (F32 or F8_E8M0 expected)");
    const int64_t n = s.shape[0], k = s.shape[1];
    int64_t gr = sc->shape().size() == 2 ? sc->shape()[0] : -1,
            gc = sc->shape().size() == 2 ? sc->shape()[1] : -1;
    // The block shape is whichever standard one the grid's ceil-divided shape matches.
    const int64_t candidates[4][2] = {{128, 128}, {1, 32}, {32, 32}, {1, 128}};
    bool found = false;
    for (auto& c : candidates)
      if ((n + c[0] - 1) / c[0] == gr && (k + c[1] - 1) / c[1] == gc) {
        s.scale_block_rows = c[0];
        s.scale_block_cols = c[1];
        found = true;
        break;
      }
    if (!found)
      throw Error("model " + folder_ + ": scale grid of '" + hn + "' [" + std::to_string(gr) + ", " +
                  std::to_string(gc) + "] matches no block shape (128x128, 1x32, 32x32, 1x128) of a [" +
                  std::to_string(n) + ", " + std::to_string(k) + "] weight");
    s.scales = sc->data;
  }

  std::string folder_;
  io::HfConfig hf_;
  io::SafetensorsModel st_;
  LlamaConfig config_;
  mutable std::map<std::string, SourceTensor> cache_;
};

}  // namespace

std::unique_ptr<ModelSource> open_model_source(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) throw Error("model path " + path + " does not exist");
  if (fs::is_directory(path)) {
    if (!fs::exists(fs::path(path) / "config.json"))
      throw Error("model folder " + path + " has no config.json (a Hugging Face folder is expected)");
    return std::make_unique<HfSource>(path);
  }
  return std::make_unique<GgufSource>(path);
}

int64_t source_row_length(const SourceTensor& t) {
  return t.shape.size() == 2 ? t.shape[1] : t.numel();
}

void source_rows_to_f32(const SourceTensor& t, int64_t r0, int64_t r1, float* out) {
  const int64_t k = source_row_length(t);
  const uint64_t count = uint64_t((r1 - r0) * k);
  switch (t.type) {
    case SourceTensor::Type::f32:
      if (count) std::memcpy(out, t.data + r0 * k * 4, count * 4);
      return;
    case SourceTensor::Type::f16:
      io::ggml_dequantize(io::GgmlType::kF16, t.data + r0 * k * 2, out, count);
      return;
    case SourceTensor::Type::bf16:
      io::ggml_dequantize(io::GgmlType::kBF16, t.data + r0 * k * 2, out, count);
      return;
    case SourceTensor::Type::ggml_blocks: {
      const int64_t per_block = int64_t(io::ggml_block_elems(t.ggml_type));
      if (k % per_block != 0)
        throw Error("tensor '" + t.name + "': rows of " + std::to_string(k) + " values are not whole " +
                    io::ggml_type_name(t.ggml_type) + " blocks of " + std::to_string(per_block));
      const int64_t row_bytes = k / per_block * int64_t(io::ggml_block_bytes(t.ggml_type));
      io::ggml_dequantize(t.ggml_type, t.data + r0 * row_bytes, out, count);
      return;
    }
    case SourceTensor::Type::e4m3: {
      const int64_t gc = (k + t.scale_block_cols - 1) / t.scale_block_cols;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < k; ++c) {
          const int64_t idx = (r / t.scale_block_rows) * gc + c / t.scale_block_cols;
          float s;
          if (t.scales_ue8m0)
            s = format::ue8m0_to_f32(t.scales[idx]);
          else
            std::memcpy(&s, t.scales + idx * 4, 4);
          *out++ = format::e4m3_to_f32(t.data[r * k + c]) * s;
        }
      return;
    }
  }
}

std::vector<float> source_to_f32(const SourceTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const int64_t k = source_row_length(t);
  source_rows_to_f32(t, 0, k ? t.numel() / k : 0, out.data());
  return out;
}

}  // namespace mx8::model
