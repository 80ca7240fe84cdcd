// tokenizer.json features on small hand-made files, with expectations worked out by hand: the
// post-processor forms real models use (Llama-3.1's Sequence[ByteLevel, TemplateProcessing]),
// tokenizer_config.json overrides, Split behaviours, Digits, ByteLevel add_prefix_space/use_regex,
// added tokens with lstrip/rstrip, ignore_merges, and the SentencePiece-style Metaspace form.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/runtime/tokenizer.h"
#include "runtime/tokenizer/byte_level.h"

namespace mx8::runtime {
namespace {

using nlohmann::json;

// A byte-level vocabulary: ids 0..255 are the bytes' characters, then the merges' results in order.
json byte_level_model(const std::vector<std::pair<std::string, std::string>>& merges,
                      bool ignore_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::byte_to_string(static_cast<uint8_t>(b))] = b;
  json m = json::array();
  int next = 256;
  for (auto& [a, b] : merges) {
    std::string ma = byte_level::encode(a), mb = byte_level::encode(b);
    m.push_back(ma + " " + mb);
    if (!vocab.contains(ma + mb)) vocab[ma + mb] = next++;
  }
  return {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}, {"ignore_merges", ignore_merges}};
}

json split(const std::string& regex, const std::string& behavior = "Isolated") {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", behavior}, {"invert", false}};
}
const json kByteLevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};

std::unique_ptr<Tokenizer> make(json tj, json cfg = nullptr) {
  return tokenizer_from_hf_json(tj.dump(), cfg.is_null() ? "" : cfg.dump(), "test tokenizer.json");
}
std::vector<TokenId> ids(const Tokenizer& t, const std::string& s, bool special = false) {
  return t.encode(s, {.add_special = special});
}
using V = std::vector<TokenId>;

TEST(HfJson, MergesByRankAndBothMergeForms) {
  // "ab" (256) ranks before "bc" (257): "abc" -> ab c. Array-form merges read the same.
  json tj = {{"model", byte_level_model({{"a", "b"}, {"b", "c"}, {"ab", "c"}})},
             {"pre_tokenizer", kByteLevel}};
  auto t = make(tj);
  EXPECT_EQ(ids(*t, "abc"), (V{258}));  // ab, then ab+c
  EXPECT_EQ(ids(*t, "bcb"), (V{257, 'b'}));
  json arr = tj;
  arr["model"]["merges"] = json::array({{"a", "b"}, {"b", "c"}, {"ab", "c"}});
  EXPECT_EQ(ids(*make(arr), "abc"), (V{258}));
}

TEST(HfJson, IgnoreMergesTakesWholeVocabularyPieces) {
  // "abc" is an entry, but its merges would never build it ("ab c" is missing): with ignore_merges
  // the whole piece is one token, without it BPE gives ab c.
  json model = byte_level_model({{"a", "b"}, {"x", "y"}}, true);
  model["vocab"]["abc"] = 300;
  json tj = {{"model", model}, {"pre_tokenizer", kByteLevel}};
  EXPECT_EQ(ids(*make(tj), "abc"), (V{300}));
  tj["model"]["ignore_merges"] = false;
  EXPECT_EQ(ids(*make(tj), "abc"), (V{256, 'c'}));
}

TEST(HfJson, PostProcessorsAndConfig) {
  json tj = {{"model", byte_level_model({})},
             {"added_tokens", json::array({{{"id", 1000}, {"content", "<|bos|>"}, {"special", true}},
                                           {{"id", 1001}, {"content", "<|eos|>"}, {"special", true}}})},
             {"pre_tokenizer", kByteLevel},
             {"post_processor",
              {{"type", "Sequence"},
               {"processors",
                json::array({{{"type", "ByteLevel"}},
                             {{"type", "TemplateProcessing"},
                              {"single", json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                              {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {1000}}}}}}}})}}}};
  auto t = make(tj);
  EXPECT_EQ(ids(*t, "hi", true), (V{1000, 'h', 'i'}));
  EXPECT_EQ(t->bos_id(), 1000);
  EXPECT_TRUE(t->adds_bos());
  // tokenizer_config.json's add_bos_token/add_eos_token override the template.
  auto t2 = make(tj, {{"bos_token", "<|bos|>"},
                      {"eos_token", {{"content", "<|eos|>"}}},
                      {"add_bos_token", false},
                      {"add_eos_token", true}});
  EXPECT_EQ(ids(*t2, "hi", true), (V{'h', 'i', 1001}));
  EXPECT_EQ(t2->eos_id(), 1001);
  EXPECT_TRUE(t2->is_stop(1001));
  EXPECT_EQ(t2->vocab_size(), 1002u);
}

// Found by fuzz/tokenizer_json_fuzz.cpp: a post-processor whose BOS id lies past the vocabulary
// loaded, and encode() then emitted an id that the model's embedding table does not have. Ids that
// would size the tables past any real vocabulary are refused too, instead of allocating 2^31 strings,
// and so are ids that are not JSON integers.
TEST(HfJson, IdsOutsideTheVocabularyAreRefused) {
  auto post_with_bos = [](int id) {
    return json{{"type", "TemplateProcessing"},
                {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {id}}}}}}};
  };
  auto expect_error = [](const json& tj, const std::string& needle) {
    try {
      make(tj);
      ADD_FAILURE() << "loaded: " << tj.dump().substr(0, 120);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  json tj = {
      {"model", byte_level_model({})}, {"pre_tokenizer", kByteLevel}, {"post_processor", post_with_bos(255)}};
  EXPECT_EQ(ids(*make(tj), "a", true), (V{255, 'a'}));  // the last id of the 256 is fine
  tj["post_processor"] = post_with_bos(256);
  expect_error(tj, "token id 256 is outside the vocabulary of 256");
  tj["post_processor"] = nullptr;
  tj["added_tokens"] = json::array({{{"id", 2147483647}, {"content", "<big>"}, {"special", true}}});
  expect_error(tj, "added token '<big>' has id 2147483647, not an integer in [0, 16777216)");
  tj["added_tokens"][0]["id"] = 2.12e68;  // get<int>() of this was undefined behaviour
  expect_error(tj, "added token '<big>' has id 2.12e+68, not an integer");
  tj["added_tokens"] = json::array();
  tj["model"]["vocab"]["far"] = 1 << 30;
  expect_error(tj, "vocab entry 'far' has id 1073741824, not an integer");
}

// A tokenizer.json nested 100000 deep loads no further than the parser: copies and walks of JSON
// recurse per level (docs/FUZZING.md).
TEST(HfJson, NestingPast256LevelsIsRefused) {
  const std::string deep = R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "x": )" +
                           std::string(100000, '[') + std::string(100000, ']') + "}";
  try {
    tokenizer_from_hf_json(deep, "", "deep tokenizer.json");
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deep tokenizer.json: JSON nested deeper than 256 levels"),
              std::string::npos)
        << e.what();
  }
}

TEST(HfJson, SplitBehaviours) {
  auto pieces = [](const std::string& behavior, const std::string& text) {
    json tj = {{"model", byte_level_model({})},
               {"pre_tokenizer",
                {{"type", "Sequence"}, {"pretokenizers", json::array({split("-", behavior), kByteLevel})}}}};
    auto t = make(tj);
    // With no merges every id is its byte, so the ids spell out what the pre-tokenizer kept.
    std::string out;
    for (TokenId id : ids(*t, text)) out += static_cast<char>(id);
    return out;
  };
  EXPECT_EQ(pieces("Isolated", "a-b-c"), "a-b-c");
  EXPECT_EQ(pieces("Removed", "a-b-c"), "abc");
  EXPECT_EQ(pieces("Removed", "--"), "");
  // A delimiter at the end has no next (or, at the start, no previous) piece to join: it stays.
  EXPECT_EQ(pieces("MergedWithNext", "a-b-"), "a-b-");
  EXPECT_EQ(pieces("MergedWithPrevious", "-a-b"), "-a-b");
}

// A String pattern is literal text: its regex characters match only themselves.
TEST(HfJson, SplitOnALiteralString) {
  json literal = {
      {"type", "Split"}, {"pattern", {{"String", "a.b"}}}, {"behavior", "Removed"}, {"invert", false}};
  json tj = {
      {"model", byte_level_model({})},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", json::array({literal, kByteLevel})}}}};
  std::string out;
  for (TokenId id : ids(*make(tj), "xa.bxaXb")) out += static_cast<char>(id);
  EXPECT_EQ(out, "xxaXb");
}

TEST(HfJson, SplitBoundariesLimitMerges) {
  // "a b" merges to one token only when no split falls between a and b.
  json model = byte_level_model({{"a", "b"}});
  auto with = [&](json pre) { return ids(*make({{"model", model}, {"pre_tokenizer", pre}}), "ab"); };
  EXPECT_EQ(with(kByteLevel), (V{256}));
  EXPECT_EQ(with({{"type", "Sequence"}, {"pretokenizers", json::array({split("b"), kByteLevel})}}),
            (V{'a', 'b'}));
  EXPECT_EQ(with({{"type", "Sequence"},
                  {"pretokenizers", json::array({split("b", "MergedWithPrevious"), kByteLevel})}}),
            (V{256}));
  EXPECT_EQ(with({{"type", "Sequence"},
                  {"pretokenizers", json::array({split("a", "MergedWithNext"), kByteLevel})}}),
            (V{256}));
  // Digits: "a1" cannot merge across the digit boundary; "12" only with individual_digits false.
  json m2 = byte_level_model({{"1", "2"}, {"a", "1"}});
  auto digits = [&](bool individual, const std::string& s) {
    json pre = {{"type", "Sequence"},
                {"pretokenizers",
                 json::array({{{"type", "Digits"}, {"individual_digits", individual}}, kByteLevel})}};
    return ids(*make({{"model", m2}, {"pre_tokenizer", pre}}), s);
  };
  EXPECT_EQ(digits(false, "a12"), (V{'a', 256}));
  EXPECT_EQ(digits(true, "a12"), (V{'a', '1', '2'}));
}

TEST(HfJson, ByteLevelPrefixSpaceAndGpt2Regex) {
  // GPT-2 style: ByteLevel alone with use_regex splits " world" from "hello"; add_prefix_space
  // puts a space before the text.
  json model = byte_level_model({{" ", "w"}, {"h", "e"}});
  json pre = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  auto t = make({{"model", model}, {"pre_tokenizer", pre}});
  EXPECT_EQ(ids(*t, "he w"), (V{' ', 257, 256}));
  pre["add_prefix_space"] = false;
  EXPECT_EQ(ids(*make({{"model", model}, {"pre_tokenizer", pre}}), "he w"), (V{257, 256}));
}

TEST(HfJson, AddedTokensStripAndLongestMatch) {
  json tj = {
      {"model", byte_level_model({})},
      {"pre_tokenizer", kByteLevel},
      {"added_tokens",
       json::array({{{"id", 500}, {"content", "<m>"}, {"special", false}, {"lstrip", true}, {"rstrip", true}},
                    {{"id", 501}, {"content", "<m>x"}, {"special", true}}})}};
  auto t = make(tj);
  // lstrip/rstrip swallow the spaces around <m>; the longer "<m>x" wins where it matches.
  EXPECT_EQ(ids(*t, "a  <m>  b"), (V{'a', 500, 'b'}));
  EXPECT_EQ(ids(*t, "<m>x"), (V{501}));
  EXPECT_EQ(ids(*t, "a <m>x b"), (V{'a', ' ', 501, ' ', 'b'}));  // no strip unless the token asks
  EXPECT_EQ(t->encode("<m>x", {.add_special = false, .parse_special = false}), (V{500, 'x'}));
}

TEST(HfJson, MetaspaceSentencePieceForm) {
  // Characters, not bytes: "▁h" and "i" are entries, 'é' is not and falls back to <0xC3><0xA9>.
  const std::string sp = "\xE2\x96\x81";
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2},   {sp, 3},
                {"h", 4},     {"i", 5},   {sp + "h", 6}, {sp + "hi", 7}};
  int id = 8;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = id++;
  }
  json tj = {{"model",
              {{"type", "BPE"},
               {"vocab", vocab},
               {"merges", {sp + " h", sp + "h i"}},
               {"byte_fallback", true},
               {"unk_token", "<unk>"}}},
             {"pre_tokenizer",
              {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"}, {"split", false}}},
             {"decoder", {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"}}},
             {"added_tokens", json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}}})}};
  auto t = make(tj);
  EXPECT_EQ(ids(*t, "hi hi"), (V{7, 7}));
  EXPECT_EQ(ids(*t, "é"), (V{3, 8 + 0xC3, 8 + 0xA9}));
  EXPECT_EQ(t->decode(ids(*t, "hi é")), "hi é");
  // prepend_scheme "first": no prefix after a special token in the middle of the text.
  EXPECT_EQ(ids(*t, "hi<s>hi"), (V{7, 1, 4, 5}));
  // Without byte fallback a character outside the vocabulary is the unk token.
  json no_fallback = tj;
  no_fallback["model"]["byte_fallback"] = false;
  EXPECT_EQ(ids(*make(no_fallback), "hi é"), (V{7, 3, 0}));
  // split: true cuts before each "▁" (Mistral's and Llama-2's converted files): every piece is kept.
  tj["pre_tokenizer"]["split"] = true;
  EXPECT_EQ(ids(*make(tj), "hi hi hi"), (V{7, 7, 7}));
}

}  // namespace
}  // namespace mx8::runtime
