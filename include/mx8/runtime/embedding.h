// Text embeddings from a decoder model: the final hidden state of a text's last token (last-token
// pooling), the way decoder embedding models are published (Qwen3-Embedding, gte-Qwen2, e5-mistral:
// sentence-transformers folders whose 1_Pooling/config.json says "lasttoken"). The engine computes the
// hidden state (runtime::GenerationParams::embed); this reads the model's recipe and finishes the vector.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

namespace mx8::runtime {

struct EmbeddingRecipe {
  // The vector is scaled to unit length (sentence-transformers' Normalize module; OpenAI's embeddings
  // are too). A folder without modules.json (a chat model) and a GGUF file get true.
  bool normalize = true;
  // Texts put before an input, by name (config_sentence_transformers.json's "prompts": a model's
  // instruction for queries, say), and the one taken when an input names none ("": none).
  std::map<std::string, std::string> prompts;
  std::string default_prompt_name;
  // Where the recipe came from, for messages ("modules.json", or "default: last token, normalized").
  std::string source;

  // `text` after the prompt `name` ("": the default prompt, or none). Throws mx8::Error naming the
  // model's prompts when it has no such one.
  std::string with_prompt(const std::string& text, const std::string& name) const;
};

// Reads `model_path`'s sentence-transformers modules (modules.json, its Pooling module's config.json,
// a Normalize module; the prompts of config_sentence_transformers.json), or a GGUF file's
// `<arch>.pooling_type`. Throws mx8::Error naming what mx8
// cannot do: a pooling other than the last token's (mean, CLS, max: they need every position's
// state), or a module other than the transformer, the pooling and Normalize (a Dense projection).
EmbeddingRecipe read_embedding_recipe(const std::string& model_path);

// The embedding of a text whose last token's final hidden state is `hidden`: its first `dimensions`
// values (0: all; Matryoshka-trained models such as Qwen3-Embedding keep their meaning truncated), then
// scaled to unit length where `normalize` says (after the truncation, so the result is a unit vector).
// A zero vector stays zero. Throws mx8::Error for dimensions outside 0..hidden.size().
std::vector<float> finish_embedding(std::span<const float> hidden, int dimensions, bool normalize);

}  // namespace mx8::runtime
