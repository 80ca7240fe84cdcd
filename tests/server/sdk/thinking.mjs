// A thinking model's reasoning through the official OpenAI and Anthropic client libraries.
// Usage: MX8_SERVER_URL=http://127.0.0.1:PORT node thinking.mjs
// The server (tests/server/thinking_test.cpp) answers every request with the same scripted reply:
// "<think>\nI add 2 and 3.\n</think>\n\nIt is 5." The reasoning must come apart from the answer: as
// reasoning_content for OpenAI clients, as a thinking block for Anthropic's (whole and through the
// stream helper), and a conversation holding the thinking block must be taken back. Exit status 1 on
// any failure.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.MX8_SERVER_URL;
if (!base) throw new Error('MX8_SERVER_URL is not set');
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'none', maxRetries: 0 });
const model = 'stories260K';
const reasoning = 'I add 2 and 3.';
const answer = 'It is 5.';

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok ? '' : ` ${detail}`}`);
  if (!ok) failures++;
}

const messages = [{ role: 'user', content: 'What is 2+3?' }];
const plain = await openai.chat.completions.create({ model, messages, max_tokens: 256, temperature: 0 });
check(plain.choices[0].message.content === answer, 'chat: the answer', JSON.stringify(plain.choices[0]));
check(plain.choices[0].message.reasoning_content === reasoning, 'chat: reasoning_content');

let streamedReasoning = '';
let streamedText = '';
const stream = await openai.chat.completions.create({ model, messages, max_tokens: 256, temperature: 0, stream: true });
for await (const chunk of stream) {
  const delta = chunk.choices[0]?.delta ?? {};
  streamedReasoning += delta.reasoning_content ?? '';
  streamedText += delta.content ?? '';
}
check(streamedReasoning === reasoning && streamedText === answer, 'chat stream: reasoning and answer apart',
  JSON.stringify([streamedReasoning, streamedText]));

const request = { model, max_tokens: 2048, temperature: 0, messages, thinking: { type: 'enabled', budget_tokens: 1024 } };
const msg = await anthropic.messages.create(request);
check(msg.content.length === 2 && msg.content[0].type === 'thinking' && msg.content[0].thinking === reasoning,
  'messages: the thinking block', JSON.stringify(msg.content));
check(msg.content[1]?.type === 'text' && msg.content[1].text === answer, 'messages: the text block');

let thinkingEvents = '';
const ms = anthropic.messages.stream(request);
ms.on('thinking', (delta) => { thinkingEvents += delta; });
const final = await ms.finalMessage();
check(thinkingEvents === reasoning, 'messages stream: thinking events', JSON.stringify(thinkingEvents));
check(final.content[0]?.type === 'thinking' && final.content[0].thinking === reasoning &&
      final.content[1]?.text === answer, 'messages stream: the final message', JSON.stringify(final.content));

const again = await anthropic.messages.create({
  ...request,
  messages: [...messages, { role: 'assistant', content: msg.content }, { role: 'user', content: 'And 3+4?' }],
});
check(again.content[0]?.type === 'thinking', 'messages: a conversation holding a thinking block');

// OpenAI Responses: a reasoning item before the message, whole and from the stream's events.
const resp = await openai.responses.create({ model, input: 'What is 2+3?', max_output_tokens: 256, temperature: 0 });
check(resp.output[0]?.type === 'reasoning' && resp.output[0].content?.[0]?.text === reasoning &&
  resp.output_text === answer, 'responses: the reasoning item and the answer', JSON.stringify(resp.output));
let reasoningDeltas = '';
const rs = openai.responses.stream({ model, input: 'What is 2+3?', max_output_tokens: 256, temperature: 0 });
rs.on('response.reasoning_text.delta', (e) => { reasoningDeltas += e.delta; });
const rfinal = await rs.finalResponse();
check(reasoningDeltas === reasoning && rfinal.output_text === answer, 'responses stream: reasoning, then the answer',
  JSON.stringify([reasoningDeltas, rfinal.output]));

if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
