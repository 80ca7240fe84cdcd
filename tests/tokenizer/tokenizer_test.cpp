// Tokenizer behaviour beyond the llama.cpp cases: ids for the extra strings from an independent
// oracle (@lenml/tokenizers, tests/data/tokenizers/oracle_cases.json; lenml_llama2 is a
// SentencePiece-as-BPE tokenizer.json with byte fallback), round trips, streaming
// decode, special tokens, BOS handling, the SentencePiece algorithm on a hand-made vocabulary,
// and errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/runtime/tokenizer.h"
#include "tokenizer/tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

namespace fs = std::filesystem;

// Tokenizers load once per test program (the JSON files take a while to parse).
const Tokenizer* hf(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) {
    fs::path dir = test::hf_tokenizer_folder(name);
    if (dir.empty()) return nullptr;
    slot = load_tokenizer(dir);
  }
  return slot.get();
}
const Tokenizer* gguf(const std::string& stem) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[stem];
  if (!slot) {
    fs::path p = test::vocab_case_dir() / ("ggml-vocab-" + stem + ".gguf");
    if (!fs::exists(p)) return nullptr;
    slot = load_tokenizer(p);
  }
  return slot.get();
}

TEST(Tokenizer, OracleCases) {
  auto j = nlohmann::json::parse(test::read_text(test::tokenizer_data_dir() / "oracle_cases.json"));
  size_t n = 0;
  for (auto& c : j["cases"]) {
    const Tokenizer* tok = hf(c["tokenizer"]);
    if (!tok) GTEST_SKIP() << c["tokenizer"] << " tokenizer.json not available";
    std::string text = c["text"];
    std::vector<TokenId> want = c["ids"].get<std::vector<TokenId>>();
    auto ids = tok->encode(text, {.add_special = false});
    EXPECT_EQ(ids, want) << c["tokenizer"] << ": " << text;
    ++n;
  }
  EXPECT_EQ(n, 118u);
}

// Decoding gives the text back. Qwen normalizes to NFC first, so its round trip gives the NFC form.
TEST(Tokenizer, RoundTrips) {
  auto j = nlohmann::json::parse(test::read_text(test::tokenizer_data_dir() / "oracle_cases.json"));
  for (auto& c : j["cases"]) {
    const Tokenizer* tok = hf(c["tokenizer"]);
    if (!tok) GTEST_SKIP();
    std::string text = c["text"];
    std::vector<TokenId> ids = c["ids"].get<std::vector<TokenId>>();
    std::string back = tok->decode(ids);
    if (c["tokenizer"] == "qwen3" && back != text) {
      EXPECT_EQ(tok->encode(back, {.add_special = false}), ids) << "NFC form re-encodes the same: " << text;
    } else {
      EXPECT_EQ(back, text) << c["tokenizer"];
    }
  }
  // SentencePiece: the prefix space is removed again; byte-fallback characters come back.
  if (const Tokenizer* spm = gguf("llama-spm")) {
    for (std::string text :
         {"Hello world", " two  spaces", "emoji 🦙 and \xE1\x9E\x80\xE1\x9E\xB6", "\n\ttabs"}) {
      auto ids = spm->encode(text);
      EXPECT_EQ(ids.front(), spm->bos_id());
      EXPECT_EQ(spm->decode(ids, {.skip_special = true}), text);
    }
  }
}

TEST(Tokenizer, StreamingDecodeEqualsDecode) {
  std::vector<std::pair<const Tokenizer*, std::string>> subjects;
  for (const char* n : {"llama3", "qwen3", "deepseek_v3", "lenml_llama2"})
    if (const Tokenizer* t = hf(n)) subjects.emplace_back(t, n);
  for (const char* s : {"llama-spm", "gpt-2"})
    if (const Tokenizer* t = gguf(s)) subjects.emplace_back(t, s);
  if (subjects.empty()) GTEST_SKIP() << "no tokenizers available";
  const std::string text =
      "Emoji 👩‍👩‍👧‍👦🦙 split over byte tokens, 日本語, ক্ষ, and ½ "
      "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7.";
  for (auto& [tok, name] : subjects) {
    auto ids = tok->encode(text, {.add_special = false});
    StreamDecoder stream(*tok);
    std::string streamed;
    for (TokenId id : ids) {
      std::string piece = stream.push(id);
      // Every piece is whole characters: the text never shows a replacement character.
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << name;
      streamed += piece;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, tok->decode(ids)) << name;
    EXPECT_EQ(streamed, text) << name;
  }
}

TEST(Tokenizer, StreamingHoldsIncompleteCharacters) {
  const Tokenizer* tok = hf("llama3");
  if (!tok) GTEST_SKIP();
  // 🦙 is one token here: stream it, then the single-byte cases.
  auto ids = tok->encode("🦙", {.add_special = false});
  ASSERT_GE(ids.size(), 1u);
  StreamDecoder s(*tok);
  std::string out;
  for (TokenId id : ids) out += s.push(id);
  EXPECT_EQ(out + s.flush(), "🦙");
  // A lone continuation byte can never complete: it becomes U+FFFD, at once and at flush alike.
  TokenId lone = tok->encode("\xA6", {.add_special = false}).at(0);
  EXPECT_EQ(tok->decode(std::vector<TokenId>{lone}), "\xEF\xBF\xBD");
  StreamDecoder s2(*tok);
  EXPECT_EQ(s2.push(lone), "\xEF\xBF\xBD");
  // A lead byte waits for its continuation, and is replaced if the text ends first.
  TokenId lead = tok->encode("\xF0", {.add_special = false}).at(0);
  StreamDecoder s3(*tok);
  EXPECT_EQ(s3.push(lead), "");
  EXPECT_EQ(s3.flush(), "\xEF\xBF\xBD");
}

// A character is shown by the push that completes it, not held for the next one: 日 in stories260K's
// vocabulary is three byte tokens, and the third push returns it whole.
TEST(Tokenizer, StreamDecoderShowsACharacterAsSoonAsItIsComplete) {
  const auto tok = load_tokenizer(fs::path(MX8_SOURCE_DIR) / "models" / "stories260K.gguf");
  const std::vector<TokenId> ids = tok->encode("\xE6\x97\xA5", {.add_special = false});
  ASSERT_GE(ids.size(), 3u);
  StreamDecoder s(*tok);
  std::string before;
  for (size_t i = 0; i + 1 < ids.size(); ++i) before += s.push(ids[i]);
  EXPECT_EQ(before, "");
  EXPECT_EQ(s.push(ids.back()), "\xE6\x97\xA5");
  EXPECT_EQ(s.flush(), "");
  // A lead byte followed by a byte that cannot continue it is decided at once: U+FFFD, then the byte.
  const auto lead = tok->find_token("<0xE6>"), x = tok->find_token("<0x78>");
  ASSERT_TRUE(lead && x);
  StreamDecoder s2(*tok);
  EXPECT_EQ(s2.push(*lead), "");
  EXPECT_EQ(s2.push(*x), "\xEF\xBF\xBDx");
  EXPECT_EQ(s2.flush(), "");
}

// SentencePiece drops the leading space of a text's first token; a decoder told that its text
// continues earlier text keeps it, so that the prompt's text and the continuation's add up to the
// decoding of both (the completions endpoint, `mx8 run --no-echo`). The bundled stories260K vocabulary.
TEST(Tokenizer, StreamDecoderContinuingATextKeepsTheLeadingSpace) {
  const auto tok = load_tokenizer(fs::path(MX8_SOURCE_DIR) / "models" / "stories260K.gguf");
  const std::vector<TokenId> prompt = tok->encode("Tom"),
                             rest = tok->encode("and Lily", {.add_special = false});
  ASSERT_EQ(tok->token_bytes(rest.front(), false).front(), ' ');
  // BOS alone leaves a text at its start; "Tom" after it does not.
  EXPECT_FALSE(tok->leaves_start(std::vector<TokenId>{prompt.front()}, {.skip_special = true}));
  EXPECT_TRUE(tok->leaves_start(prompt, {.skip_special = true}));
  // A text token leaves the start even when it shows nothing there (a lone space is dropped at the start).
  const auto space = tok->find_token("\xE2\x96\x81");
  ASSERT_TRUE(space);
  EXPECT_TRUE(tok->leaves_start(std::vector<TokenId>{*space}, {.skip_special = true}));
  StreamDecoder fresh(*tok), continuing(*tok, {}, /*at_start=*/false);
  std::string a, b;
  for (TokenId id : rest) a += fresh.push(id), b += continuing.push(id);
  EXPECT_EQ(a + fresh.flush(), "and Lily");
  EXPECT_EQ(b + continuing.flush(), " and Lily");
  std::vector<TokenId> all = prompt;
  all.insert(all.end(), rest.begin(), rest.end());
  EXPECT_EQ(tok->decode(all), tok->decode(prompt) + " and Lily");
}

TEST(Tokenizer, SpecialTokens) {
  const Tokenizer* qwen = hf("qwen3");
  if (!qwen) GTEST_SKIP();
  std::string chat = "<|im_start|>user\nhi<|im_end|>";
  auto ids = qwen->encode(chat, {.add_special = false});
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(ids.back(), 151645);
  EXPECT_TRUE(qwen->is_special(151644));
  EXPECT_EQ(qwen->decode(ids), chat);
  EXPECT_EQ(qwen->decode(ids, {.skip_special = true}), "user\nhi");
  auto plain = qwen->encode(chat, {.add_special = false, .parse_special = false});
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 151644), 0);
  EXPECT_EQ(qwen->decode(plain), chat);
  // Non-special added tokens (</think>) still match without parse_special.
  auto think = qwen->encode("a</think>b", {.add_special = false, .parse_special = false});
  EXPECT_NE(std::find(think.begin(), think.end(), 151668), think.end());
  EXPECT_TRUE(qwen->is_stop(151645));  // <|im_end|>
  EXPECT_TRUE(qwen->is_stop(151643));  // <|endoftext|>
  EXPECT_FALSE(qwen->adds_bos());

  if (const Tokenizer* llama3 = hf("llama3")) {
    EXPECT_EQ(llama3->bos_id(), 128000);
    EXPECT_TRUE(llama3->is_stop(128009));  // <|eot_id|>
    EXPECT_TRUE(llama3->is_stop(128001));  // <|end_of_text|>
    EXPECT_EQ(llama3->vocab_size(), 128256u);
    EXPECT_EQ(llama3->token_text(9906), "Hello");
    EXPECT_EQ(llama3->find_token("<|eot_id|>"), 128009);
  }
  if (const Tokenizer* ds = hf("deepseek_v3")) {
    // tokenizer_config.json: add_bos_token true.
    EXPECT_TRUE(ds->adds_bos());
    auto with = ds->encode("Hi");
    EXPECT_EQ(with.front(), 0);
    EXPECT_EQ(std::vector<TokenId>(with.begin() + 1, with.end()), ds->encode("Hi", {.add_special = false}));
  }
  if (const Tokenizer* spm = gguf("llama-spm")) {
    EXPECT_EQ(spm->encode("Hello"), (std::vector<TokenId>{1, 15043}));
    EXPECT_EQ(spm->encode("<s>Hi</s>", {.add_special = false}), (std::vector<TokenId>{1, 6324, 2}));
    EXPECT_EQ(spm->vocab_size(), 32000u);
    EXPECT_TRUE(spm->is_stop(2));
    EXPECT_STREQ(spm->kind(), "spm");
  }
}

// The SentencePiece algorithm on a vocabulary small enough to check by hand.
TEST(Tokenizer, SpmMergesByScoreWithByteFallback) {
  SpmVocab v;
  v.tokens = {"<unk>",
              "<s>",
              "</s>",
              "\xE2\x96\x81",
              "a",
              "b",
              "c",
              "ab",
              "bc",
              "\xE2\x96\x81"
              "a",
              "abc"};
  v.scores = {0, 0, 0, -1, -1, -1, -1, -5, -2, -3, -4};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    v.tokens.push_back(name);
    v.scores.push_back(0);
  }
  auto tok = make_spm_tokenizer(v);
  auto id = [&](const char* t) { return *tok->find_token(t); };
  // "▁abc": bigrams ▁a (-3), ab (-5), bc (-2): bc merges first, then ▁a; "▁a"+"bc" is no entry.
  EXPECT_EQ(tok->encode("abc", {.add_special = false}), (std::vector<TokenId>{id("\xE2\x96\x81"
                                                                                 "a"),
                                                                              id("bc")}));
  // Without "bc" winning first ("ab" then "c"): "cab" -> ▁ c ab.
  EXPECT_EQ(tok->encode("cab", {.add_special = false}),
            (std::vector<TokenId>{id("\xE2\x96\x81"), id("c"), id("ab")}));
  // 'é' is not in the vocabulary: its two UTF-8 bytes fall back to <0xC3> <0xA9>.
  EXPECT_EQ(tok->encode("é", {.add_special = false}),
            (std::vector<TokenId>{id("\xE2\x96\x81"), id("<0xC3>"), id("<0xA9>")}));
  // As Hugging Face's Strip decoder: the prefix space goes only when it starts the text.
  EXPECT_EQ(tok->decode(tok->encode("cab é")), "<s> cab é");
  EXPECT_EQ(tok->decode(tok->encode("cab é"), {.skip_special = true}), "cab é");
  // Text that spells a control token is text unless parse_special: a user cannot type an end of text.
  for (TokenId t : tok->encode("<s>ab</s>", {.add_special = false, .parse_special = false}))
    EXPECT_TRUE(t != 1 && t != 2) << t;
  EXPECT_EQ(tok->encode("<s>", {.add_special = false}), (std::vector<TokenId>{1}));
  // The lowest byte token is a byte too: <0x00> decodes to a NUL character.
  EXPECT_EQ(tok->decode(std::vector<TokenId>{id("<0x00>")}), std::string(1, '\0'));
  // Ids: 0 is a token (here <unk>), the vocabulary's size is not.
  EXPECT_EQ(tok->token_text(0), "<unk>");
  EXPECT_THROW(tok->token_text(TokenId(tok->vocab_size())), mx8::Error);
  EXPECT_THROW(tok->decode(std::vector<TokenId>{TokenId(tok->vocab_size())}), mx8::Error);
  // Ties in score merge leftmost first: "aaa" with only "aa" -> ▁ aa a.
  SpmVocab w;
  w.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "aa"};
  w.scores = {0, 0, 0, 0, 0, -1};
  auto t2 = make_spm_tokenizer(w);
  EXPECT_EQ(t2->encode("aaa", {.add_special = false}), (std::vector<TokenId>{3, 5, 4}));
}

TEST(Tokenizer, LoadErrorsNameTheProblem) {
  auto expect_error = [](const fs::path& p, const std::string& needle) {
    try {
      load_tokenizer(p);
      ADD_FAILURE() << "no error for " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("/nonexistent/tokenizer.json", "no such file");
  fs::path tmp = fs::temp_directory_path() / ("mx8_tok_err_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  expect_error(tmp, "no tokenizer.json or .gguf");
  std::ofstream(tmp / "tokenizer.json") << "{not json";
  expect_error(tmp, "not valid JSON");
  std::ofstream(tmp / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  expect_error(tmp, "model type 'Unigram'");
  std::ofstream(tmp / "tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "WhitespaceSplit"}})";
  expect_error(tmp, "pre_tokenizer 'WhitespaceSplit'");
  std::ofstream(tmp / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
      "pre_tokenizer": {"type": "ByteLevel"}})";
  expect_error(tmp, "merge 'a b'");
  std::ofstream(tmp / "x.gguf") << "NOTGGUF";
  fs::remove(tmp / "tokenizer.json");
  expect_error(tmp / "x.gguf", "not a GGUF file");
  // A folder's one GGUF file gives the vocabulary, whatever else the folder holds; two are ambiguous.
  const fs::path stories = fs::path(MX8_SOURCE_DIR) / "models" / "stories260K.gguf";
  fs::remove(tmp / "x.gguf");
  fs::copy_file(stories, tmp / "model.gguf");
  std::ofstream(tmp / "config.json") << "{}";
  fs::create_directories(tmp / "sub.gguf");  // a folder, not a file
  EXPECT_EQ(load_tokenizer(tmp)->vocab_size(), 512u);
  fs::copy_file(stories, tmp / "other.gguf");
  expect_error(tmp, "several .gguf files and no tokenizer.json");
  // A tokenizer.json named as a file, read with the tokenizer_config.json beside it.
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::ofstream(tmp / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
      "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
      "added_tokens": [{"id": 3, "content": "<eos>", "special": true}]})";
  std::ofstream(tmp / "tokenizer_config.json") << R"({"eos_token": "<eos>"})";
  const auto from_file = load_tokenizer(tmp / "tokenizer.json");
  EXPECT_EQ(from_file->encode("ab", {.add_special = false}), std::vector<TokenId>{2});
  EXPECT_EQ(from_file->eos_id(), 3);
  fs::remove_all(tmp);
  const Tokenizer* spm = gguf("llama-spm");
  if (spm) {
    EXPECT_THROW(spm->decode(std::vector<TokenId>{32000}), Error);
  }
}

}  // namespace
}  // namespace mx8::runtime

namespace mx8::runtime {
namespace {

// Random text: decode(encode(text)) gives the text back (valid UTF-8), or its U+FFFD-replaced form
// (arbitrary bytes, byte-level tokenizers), and streaming agrees with decode.
TEST(Tokenizer, RandomRoundTrips) {
  std::vector<std::pair<const Tokenizer*, std::string>> subjects;
  for (const char* n : {"llama3", "deepseek_v3", "lenml_llama2"})
    if (const Tokenizer* t = hf(n)) subjects.emplace_back(t, n);
  if (const Tokenizer* t = gguf("llama-spm")) subjects.emplace_back(t, "llama-spm");
  if (const Tokenizer* t = gguf("gpt-2")) subjects.emplace_back(t, "gpt-2");
  if (subjects.empty()) GTEST_SKIP();
  const uint32_t pool[] = {' ',    ' ',    'a',  'Z',    '7',    '\n',   '\t',   '\'',    's',
                           '.',    '!',    0xE9, 0x301,  0x4E2D, 0x3042, 0xAC00, 0x1F999, 0x200D,
                           0xFE0F, 0x2581, 0xA0, 0x3000, 0x661,  '<',    '|',    '>'};
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return seed;
  };
  for (int iter = 0; iter < 200; ++iter) {
    std::string text;
    for (int k = 0, n = 1 + next() % 40; k < n; ++k) {
      uint32_t cp = pool[next() % std::size(pool)];
      std::string s;
      if (cp < 0x80)
        s = std::string(1, static_cast<char>(cp));
      else if (cp < 0x800)
        s = {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
      else if (cp < 0x10000)
        s = {char(0xE0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
      else
        s = {char(0xF0 | (cp >> 18)), char(0x80 | ((cp >> 12) & 0x3F)), char(0x80 | ((cp >> 6) & 0x3F)),
             char(0x80 | (cp & 0x3F))};
      text += s;
    }
    for (auto& [tok, name] : subjects) {
      auto ids = tok->encode(text, {.add_special = false, .parse_special = false});
      std::string back = tok->decode(ids);
      // SentencePiece writes spaces as U+2581, so a U+2581 in the text comes back as a space.
      std::string want = text;
      if (name == "llama-spm" || name == "lenml_llama2")
        for (size_t k; (k = want.find("\xE2\x96\x81")) != std::string::npos;) want.replace(k, 3, " ");
      EXPECT_EQ(back, want) << name << " iteration " << iter;
      StreamDecoder s(*tok);
      std::string streamed;
      for (TokenId id : ids) streamed += s.push(id);
      EXPECT_EQ(streamed + s.flush(), back) << name;
    }
  }
  // Arbitrary bytes through byte-level BPE: every byte survives, invalid sequences show as U+FFFD.
  for (auto& [tok, name] : subjects) {
    if (name == "llama-spm" || name == "lenml_llama2") continue;
    for (int iter = 0; iter < 50; ++iter) {
      std::string bytes;
      for (int k = 0, n = 1 + next() % 30; k < n; ++k) bytes += static_cast<char>(next() & 0xFF);
      auto ids = tok->encode(bytes, {.add_special = false, .parse_special = false});
      std::string raw;
      for (TokenId id : ids) raw += tok->token_bytes(id, false);
      EXPECT_EQ(raw, bytes) << name;
      StreamDecoder s(*tok);
      std::string streamed;
      for (TokenId id : ids) streamed += s.push(id);
      EXPECT_EQ(streamed + s.flush(), tok->decode(ids)) << name;
    }
  }
}

}  // namespace
}  // namespace mx8::runtime
