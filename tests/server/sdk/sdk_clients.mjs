// mx8 serve driven by the official OpenAI and Anthropic client libraries: what their users run.
// Usage: MX8_SERVER_URL=http://127.0.0.1:PORT node sdk_clients.mjs
// The server runs stories260K with plain_template.jinja. Greedy requests, so the plain, streamed and
// cross-API answers to the same conversation must be the same text. Exit status 1 on any failure.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { jsonSchemaOutputFormat } from '@anthropic-ai/sdk/helpers/json-schema';

const base = process.env.MX8_SERVER_URL;
if (!base) throw new Error('MX8_SERVER_URL is not set');
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'none', maxRetries: 0 });
const model = 'stories260K';

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok ? '' : ` ${detail}`}`);
  if (!ok) failures++;
}

async function refused(what, call, Type, status) {
  try {
    await call();
    check(false, what, 'was accepted');
  } catch (e) {
    check(e instanceof Type && e.status === status, what, `${e.constructor.name} ${e.status} ${e.message}`);
  }
}

// OpenAI chat completions: plain, streamed chunk by chunk, and through the SDK's stream helper.
const system = 'Tell a story.';
const messages = [{ role: 'system', content: system }, { role: 'user', content: 'A cat' }];
const plain = await openai.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0 });
const text = plain.choices[0].message.content;
check(plain.object === 'chat.completion' && plain.model === model, 'chat: object and model');
check(typeof text === 'string' && text.length > 0, 'chat: text', JSON.stringify(plain));
check(plain.choices[0].finish_reason === 'length', 'chat: finish_reason length');
check(plain.usage.completion_tokens === 30, 'chat: usage.completion_tokens', JSON.stringify(plain.usage));

let streamed = '';
let finish = null;
let usage = null;
const stream = await openai.chat.completions.create({
  model, messages, max_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length) {
    streamed += chunk.choices[0].delta.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  if (chunk.usage) usage = chunk.usage;
}
check(streamed === text, 'chat stream: same text', JSON.stringify([streamed, text]));
check(finish === 'length', 'chat stream: finish_reason');
check(usage?.total_tokens === plain.usage.total_tokens, 'chat stream: usage chunk', JSON.stringify(usage));

const helper = await openai.chat.completions
  .stream({ model, messages, max_tokens: 30, temperature: 0 })
  .finalChatCompletion();
check(helper.choices[0].message.content === text, 'chat stream helper: final message');

// Log-probabilities: one entry per token, greedy tokens first among their alternatives, the bytes
// spelling the reply.
const withLogprobs = await openai.chat.completions.create({
  model, messages, max_tokens: 30, temperature: 0, logprobs: true, top_logprobs: 2,
});
const entries = withLogprobs.choices[0].logprobs?.content ?? [];
check(entries.length === 30 && entries.map((e) => e.token).join('') === text, 'chat: logprobs spell the reply',
  JSON.stringify(withLogprobs.choices[0].logprobs));
check(entries.every((e) => e.top_logprobs.length === 2 && e.top_logprobs[0].logprob === e.logprob && e.logprob <= 0),
  'chat: logprobs of greedy tokens are the largest');

// logit_bias as the SDK sends it: token 300 raised by 10 changes the greedy reply, and a token past the
// 512-token vocabulary is a BadRequestError.
const biased = await openai.chat.completions.create({
  model, messages, max_tokens: 30, temperature: 0, logit_bias: { 300: 10 },
});
check(biased.choices[0].message.content !== text, 'chat: logit_bias changes the greedy reply',
  JSON.stringify([biased.choices[0].message.content, text]));
await refused('chat: logit_bias past the vocabulary is a BadRequestError',
  () => openai.chat.completions.create({ model, messages, logit_bias: { 512: 1 } }), OpenAI.BadRequestError, 400);

// Legacy completions and the model list.
const completion = await openai.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
check(completion.choices[0].text.length > 0 && completion.usage.completion_tokens === 12, 'completions');
const models = await openai.models.list();
check(models.data.length === 1 && models.data[0].id === model, 'models.list');

await refused('chat: temperature 5 is a BadRequestError',
  () => openai.chat.completions.create({ model, messages, temperature: 5 }), OpenAI.BadRequestError, 400);
await refused('chat: n = 0 is a BadRequestError',
  () => openai.chat.completions.create({ model, messages, n: 0 }), OpenAI.BadRequestError, 400);

// n choices, sampled with a seed: choice i is the sample of seed + i, so choice 0 is the n = 1 answer;
// streamed, the SDK's helper assembles the same choices from their indexed chunks.
const sampled = { model, messages, max_tokens: 20, temperature: 1, seed: 7 };
const one = await openai.chat.completions.create(sampled);
const three = await openai.chat.completions.create({ ...sampled, n: 3 });
const texts = three.choices.map((c) => c.message.content);
check(three.choices.length === 3 && three.choices.every((c, i) => c.index === i), 'chat n = 3: three choices in order',
  JSON.stringify(three.choices));
check(texts[0] === one.choices[0].message.content, 'chat n = 3: choice 0 is the n = 1 sample', JSON.stringify(texts));
check(new Set(texts).size > 1, 'chat n = 3: the choices are different samples', JSON.stringify(texts));
check(three.usage.prompt_tokens === one.usage.prompt_tokens &&
  three.usage.completion_tokens === three.choices.length * 20, 'chat n = 3: usage counts the prompt once',
  JSON.stringify(three.usage));
const threeStreamed = await openai.chat.completions.stream({ ...sampled, n: 3 }).finalChatCompletion();
check(JSON.stringify(threeStreamed.choices.map((c) => c.message.content)) === JSON.stringify(texts),
  'chat n = 3 stream: the same choices', JSON.stringify(threeStreamed.choices));
const prompts = { model, prompt: ['Once upon a time', 'The dog'], max_tokens: 8, temperature: 1, seed: 3, n: 2 };
const four = await openai.completions.create(prompts);
const pieces = ['', '', '', ''];
for await (const chunk of await openai.completions.create({ ...prompts, stream: true }))
  for (const c of chunk.choices) pieces[c.index] += c.text;
check(four.choices.length === 4 && JSON.stringify(pieces) === JSON.stringify(four.choices.map((c) => c.text)),
  'completions: two prompts x n = 2, streamed as returned', JSON.stringify([pieces, four.choices]));

// Anthropic messages: the same conversation gives the same text.
const request = { model, max_tokens: 30, temperature: 0, system, messages: [{ role: 'user', content: 'A cat' }] };
const msg = await anthropic.messages.create(request);
check(msg.type === 'message' && msg.role === 'assistant', 'messages: type and role');
check(msg.content.length === 1 && msg.content[0].text === text, 'messages: same text as OpenAI chat',
  JSON.stringify([msg.content, text]));
check(msg.stop_reason === 'max_tokens' && msg.usage.output_tokens === 30, 'messages: stop_reason, usage');

let deltas = '';
const ms = anthropic.messages.stream(request);
ms.on('text', (t) => { deltas += t; });
const final = await ms.finalMessage();
check(deltas === text && final.content[0].text === text, 'messages stream: text events and final message');
check(final.stop_reason === 'max_tokens' && final.usage.output_tokens === 30, 'messages stream: stop_reason, usage',
  JSON.stringify(final));

const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 4);
const stopped = await anthropic.messages.create({ ...request, stop_sequences: [stop] });
check(stopped.stop_reason === 'stop_sequence' && stopped.stop_sequence === stop, 'messages: stop_sequence');
check(stopped.content[0].text === text.slice(0, text.indexOf(stop)), 'messages: text ends before the stop');

await refused('messages: temperature 2 is a BadRequestError',
  () => anthropic.messages.create({ ...request, temperature: 2 }), Anthropic.BadRequestError, 400);

// Structured output through each library's parse helper: the reply is JSON of the schema, which the
// library itself parses (OpenAI's `parsed`, Anthropic's `parsed_output`; OpenAI's stream helper parses
// only schemas made with zod, so the streamed reply is parsed here). The same schema and greedy
// conversation through both APIs give the same object.
const pet = {
  type: 'object',
  properties: {
    mood: { type: 'string', enum: ['happy', 'sad'] },
    age: { type: 'integer' },
    kind: { type: 'string', enum: ['cat', 'dog', 'bird'] },
  },
  required: ['mood', 'age', 'kind'],
  additionalProperties: false,
};
const asked = { model, messages, max_tokens: 100, temperature: 0 };
const parsed = await openai.chat.completions.parse({
  ...asked, response_format: { type: 'json_schema', json_schema: { name: 'pet', schema: pet, strict: true } },
});
const object = parsed.choices[0].message.parsed;
check(parsed.choices[0].finish_reason === 'stop' && ['happy', 'sad'].includes(object?.mood) &&
  Number.isInteger(object?.age) && ['cat', 'dog', 'bird'].includes(object?.kind) && Object.keys(object).length === 3,
  'chat parse: json_schema reply parsed by the library', JSON.stringify(parsed.choices[0]));
const parsedStream = await openai.chat.completions.stream({
  ...asked, response_format: { type: 'json_schema', json_schema: { name: 'pet', schema: pet } },
}).finalChatCompletion();
check(JSON.stringify(JSON.parse(parsedStream.choices[0].message.content)) === JSON.stringify(object),
  'chat stream: the same object', JSON.stringify(parsedStream.choices[0].message));
// Patterns, formats and ranges, held by mx8 and checked here by JavaScript's own engines: V8's RegExp
// (the ECMAScript engine JSON Schema's patterns are written for) and Date.
const booking = {
  type: 'object',
  properties: {
    code: { type: 'string', pattern: '^[A-Z]{3}-\\d{2}$' },
    when: { type: 'string', format: 'date-time' },
    id: { type: 'string', format: 'uuid' },
    stars: { type: 'integer', minimum: 1, maximum: 5 },
    share: { type: 'number', exclusiveMinimum: 0, maximum: 0.5 },
  },
  required: ['code', 'when', 'id', 'stars', 'share'],
  additionalProperties: false,
};
const bookingReply = await openai.chat.completions.parse({
  ...asked, max_tokens: 200,
  response_format: { type: 'json_schema', json_schema: { name: 'booking', schema: booking, strict: true } },
});
const b = bookingReply.choices[0].message.parsed;
check(bookingReply.choices[0].finish_reason === 'stop' && new RegExp(booking.properties.code.pattern).test(b?.code) &&
  /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(b?.when) && !isNaN(Date.parse(b?.when)) &&
  /^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(b?.id) &&
  Number.isInteger(b?.stars) && b.stars >= 1 && b.stars <= 5 && b.share > 0 && b.share <= 0.5,
  'chat parse: pattern, date-time, uuid and ranges hold', JSON.stringify(bookingReply.choices[0]));
const anyObject = await openai.chat.completions.create({ ...asked, response_format: { type: 'json_object' } });
const anyText = anyObject.choices[0].message.content;
// stories260K writes keys of story text and does not close this object in 100 tokens: the reply opens
// one (a story never starts with a brace), and is one where it ends.
check(anyText.trimStart().startsWith('{') &&
  (anyObject.choices[0].finish_reason === 'length' || typeof JSON.parse(anyText) === 'object'),
  'chat: json_object reply opens an object', anyText);
await refused('chat: a schema keyword mx8 cannot hold is a BadRequestError',
  () => openai.chat.completions.create({
    ...asked, response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'array', uniqueItems: true } } },
  }), OpenAI.BadRequestError, 400);

// OpenAI Responses: the same conversation (instructions are the system turn) gives the same text, whole
// and through the stream helper; the parse helper gives the same object as chat's.
const resp = await openai.responses.create({ model, instructions: system, input: 'A cat', max_output_tokens: 30, temperature: 0 });
check(resp.object === 'response' && resp.output_text === text && resp.status === 'incomplete' &&
  resp.incomplete_details?.reason === 'max_output_tokens' && resp.usage.output_tokens === 30,
  'responses: the chat text, incomplete at max_output_tokens', JSON.stringify(resp));
const counted = await openai.responses.inputTokens.count({ model, instructions: system, input: 'A cat' });
check(counted.object === 'response.input_tokens' && counted.input_tokens === resp.usage.input_tokens,
  'responses input_tokens: the prompt the response counted', JSON.stringify([counted, resp.usage]));
let respDeltas = '';
const respStream = openai.responses.stream({ model, instructions: system, input: 'A cat', max_output_tokens: 30, temperature: 0 });
respStream.on('response.output_text.delta', (e) => { respDeltas += e.delta; });
const respFinal = await respStream.finalResponse();
check(respDeltas === text && respFinal.output_text === text, 'responses stream helper: the same text',
  JSON.stringify([respDeltas, respFinal.output_text]));
const respParsed = await openai.responses.parse({
  model, instructions: system, input: [{ role: 'user', content: 'A cat' }], max_output_tokens: 100, temperature: 0,
  text: { format: { type: 'json_schema', name: 'pet', schema: pet, strict: true } },
});
check(JSON.stringify(respParsed.output_parsed) === JSON.stringify(object), 'responses parse: the same object as chat',
  JSON.stringify(respParsed.output));
await refused('responses: previous_response_id is a BadRequestError (nothing is stored)',
  () => openai.responses.create({ model, input: 'A cat', previous_response_id: 'resp_1' }), OpenAI.BadRequestError, 400);

const structured = await anthropic.messages.parse({
  ...request, max_tokens: 100, output_config: { format: jsonSchemaOutputFormat(pet) },
});
check(structured.stop_reason === 'end_turn' && JSON.stringify(structured.parsed_output) === JSON.stringify(object),
  'messages parse: the same object as OpenAI chat', JSON.stringify([structured.content, object]));

if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
