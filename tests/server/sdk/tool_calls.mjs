// Tool use through the official OpenAI and Anthropic client libraries.
// Usage: MX8_SERVER_URL=http://127.0.0.1:PORT node tool_calls.mjs
// The server (tests/server/tool_use_test.cpp) answers every request with the same scripted reply:
// "Let me add." and a call of add({"a": 2, "b": 3}) in the Hermes syntax (but for a strict tool, below).
// The libraries must read the calls whole, from their streams, and take back a conversation that holds
// the call and its result.
// Exit status 1 on any failure.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { isDeepStrictEqual } from 'node:util';

const base = process.env.MX8_SERVER_URL;
if (!base) throw new Error('MX8_SERVER_URL is not set');
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'none', maxRetries: 0 });
const model = 'stories260K';
const args = { a: 2, b: 3 };

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok ? '' : ` ${detail}`}`);
  if (!ok) failures++;
}

// OpenAI: the call in the message, from the stream helper, and the conversation sent back.
const schema = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } } };
const tools = [{ type: 'function', function: { name: 'add', description: 'a + b', parameters: schema } }];
const messages = [{ role: 'user', content: 'What is 2+3?' }];
const request = { model, messages, tools, max_tokens: 256, temperature: 0 };
const plain = await openai.chat.completions.create(request);
const message = plain.choices[0].message;
const call = message.tool_calls?.[0];
check(plain.choices[0].finish_reason === 'tool_calls', 'chat: finish_reason tool_calls', JSON.stringify(plain));
check(message.content === 'Let me add.', 'chat: the text before the call', JSON.stringify(message.content));
check(call?.type === 'function' && call.function.name === 'add' && call.id.startsWith('call_'), 'chat: the call');
check(isDeepStrictEqual(JSON.parse(call?.function.arguments ?? 'null'), args), 'chat: its arguments');

const final = await openai.chat.completions.stream(request).finalChatCompletion();
const streamedCall = final.choices[0].message.tool_calls?.[0];
check(final.choices[0].finish_reason === 'tool_calls', 'chat stream helper: finish_reason');
check(streamedCall?.function.name === 'add' &&
      isDeepStrictEqual(JSON.parse(streamedCall.function.arguments), args), 'chat stream helper: the call',
      JSON.stringify(final.choices[0].message));

const followUp = await openai.chat.completions.create({
  ...request,
  messages: [...messages, message, { role: 'tool', tool_call_id: call.id, content: '5' }],
});
check(followUp.choices[0].message.tool_calls?.length === 1, 'chat: a conversation with a call and its result');

// Anthropic: tool_use blocks, the stream's final message (input from input_json_delta), the round trip.
const atools = [{ name: 'add', description: 'a + b', input_schema: schema }];
const arequest = { model, max_tokens: 256, temperature: 0, tools: atools, messages };
const msg = await anthropic.messages.create(arequest);
const use = msg.content.find((b) => b.type === 'tool_use');
check(msg.stop_reason === 'tool_use', 'messages: stop_reason tool_use', JSON.stringify(msg));
check(msg.content[0].type === 'text' && msg.content[0].text === 'Let me add.', 'messages: the text block');
check(use?.name === 'add' && use.id.startsWith('toolu_') && isDeepStrictEqual(use.input, args),
      'messages: the tool_use block', JSON.stringify(use));

let inputJson = '';
const ms = anthropic.messages.stream(arequest);
ms.on('inputJson', (partial) => { inputJson += partial; });
const afinal = await ms.finalMessage();
const streamedUse = afinal.content.find((b) => b.type === 'tool_use');
check(afinal.stop_reason === 'tool_use' && isDeepStrictEqual(streamedUse?.input, args),
      'messages stream: the final message', JSON.stringify(afinal));
check(isDeepStrictEqual(JSON.parse(inputJson || 'null'), args), 'messages stream: inputJson events');

const around = await anthropic.messages.create({
  ...arequest,
  messages: [...messages, { role: 'assistant', content: msg.content },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '5' }] }],
});
check(around.stop_reason === 'tool_use', 'messages: a conversation with a tool_use and its tool_result');

// A strict tool: its call is held to its schema (drawn under the constraint, so the model's own
// tokens, not the script), and the libraries read the arguments: OpenAI's parse helper parses a strict
// tool's arguments itself (parsed_arguments).
const strictSchema = { ...schema, required: ['a', 'b'], additionalProperties: false };
const integers = (v) => Number.isInteger(v?.a) && Number.isInteger(v?.b) && Object.keys(v).length === 2;
const held = await openai.chat.completions.parse({
  model, messages, max_tokens: 100, temperature: 0, parallel_tool_calls: false,
  tools: [{ type: 'function', function: { name: 'add', parameters: strictSchema, strict: true } }],
  tool_choice: { type: 'function', function: { name: 'add' } },
});
const heldCall = held.choices[0].message.tool_calls?.[0];
check(held.choices[0].finish_reason === 'tool_calls' && heldCall?.function.name === 'add' &&
  integers(heldCall.function.parsed_arguments), 'chat parse: a strict call, its arguments parsed by the library',
  JSON.stringify(held.choices[0]));
const heldUse = await anthropic.messages.create({
  model, messages, max_tokens: 100, temperature: 0,
  tools: [{ name: 'add', input_schema: strictSchema, strict: true }],
  tool_choice: { type: 'tool', name: 'add', disable_parallel_tool_use: true },
});
check(heldUse.stop_reason === 'tool_use' && integers(heldUse.content.find((b) => b.type === 'tool_use')?.input),
  'messages: a strict tool_use', JSON.stringify(heldUse));

// OpenAI Responses: function_call items, from the stream helper too, and a conversation sent back as
// items (the call and its function_call_output); a strict tool's arguments parsed by the parse helper.
const rtools = [{ type: 'function', name: 'add', description: 'a + b', parameters: schema, strict: false }];
const rrequest = { model, input: 'What is 2+3?', tools: rtools, max_output_tokens: 256, temperature: 0 };
const resp = await openai.responses.create(rrequest);
const fc = resp.output.find((i) => i.type === 'function_call');
check(resp.output_text === 'Let me add.' && fc?.name === 'add' && fc.call_id.startsWith('call_') &&
  isDeepStrictEqual(JSON.parse(fc.arguments), args), 'responses: the text and the function_call item',
  JSON.stringify(resp.output));
const rfinal = await openai.responses.stream(rrequest).finalResponse();
const rfc = rfinal.output.find((i) => i.type === 'function_call');
check(rfc?.name === 'add' && isDeepStrictEqual(JSON.parse(rfc.arguments), args), 'responses stream helper: the call',
  JSON.stringify(rfinal.output));
const rround = await openai.responses.create({
  ...rrequest,
  input: [{ role: 'user', content: 'What is 2+3?' }, ...resp.output,
    { type: 'function_call_output', call_id: fc.call_id, output: '5' }],
});
check(rround.output.some((i) => i.type === 'function_call'), 'responses: a conversation with a call and its output');
const rheld = await openai.responses.parse({
  model, input: 'What is 2+3?', max_output_tokens: 100, temperature: 0, parallel_tool_calls: false,
  tools: [{ type: 'function', name: 'add', parameters: strictSchema, strict: true }],
  tool_choice: { type: 'function', name: 'add' },
});
const rheldCall = rheld.output.find((i) => i.type === 'function_call');
check(integers(rheldCall?.parsed_arguments), 'responses parse: a strict call, its arguments parsed by the library',
  JSON.stringify(rheld.output));

if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
