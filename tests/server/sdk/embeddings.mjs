// /v1/embeddings read by the official OpenAI client library: its default asks for base64 and decodes
// the float32 bytes itself; "float" gets the numbers as JSON. Both must give the vectors the test passes
// in MX8_EXPECTED (a JSON file: {"texts": [...], "embeddings": [[...], ...]}), which the server test
// took from sentence-transformers. Usage: MX8_SERVER_URL=... MX8_EXPECTED=... node embeddings.mjs
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const base = process.env.MX8_SERVER_URL;
const expected = JSON.parse(readFileSync(process.env.MX8_EXPECTED, 'utf8'));
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 });

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok ? '' : ` ${detail}`}`);
  if (!ok) failures++;
}
// 2e-6 per value: the server test's tolerance against sentence-transformers (its comment says why).
const close = (a, b) => a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) <= 2e-6);

for (const encoding_format of [undefined, 'float']) {
  const r = await openai.embeddings.create({ model: 'qwen3_embedding', input: expected.texts, encoding_format });
  const name = encoding_format ?? 'default (base64)';
  check(r.object === 'list' && r.data.length === expected.texts.length, `${name}: a list of ${expected.texts.length}`);
  r.data.forEach((d, i) => {
    check(d.index === i && close(d.embedding, expected.embeddings[i]), `${name}: vector ${i}`,
          JSON.stringify(d.embedding.slice(0, 4)));
  });
  check(r.usage.prompt_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens, `${name}: usage`);
}

const cut = await openai.embeddings.create({ model: 'qwen3_embedding', input: expected.texts[0], dimensions: 16 });
const v = cut.data[0].embedding;
const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
check(v.length === 16 && Math.abs(norm - 1) < 1e-6, 'dimensions 16: a unit vector of 16', `${v.length} ${norm}`);

try {
  await openai.embeddings.create({ model: 'qwen3_embedding', input: '' });
  check(false, 'an empty input is refused', 'was accepted');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.param === 'input', 'an empty input is refused', e.message);
}

if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
