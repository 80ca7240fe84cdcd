#!/usr/bin/env python3
"""Renders chat-template fixtures for mx8's Jinja interpreter with the real Jinja2.

The environment is set up as Hugging Face transformers sets it up for apply_chat_template
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, a tojson filter that
keeps non-ASCII text, raise_exception, strftime_now), so the fixtures are what transformers
renders. Templates: Llama-3, Qwen3 and DeepSeek-V3 (their tokenizer_config.json, committed under
tests/data/tokenizers/), Llama-2, Mistral, Llama-3.1, Gemma and tool-calling Mistral (v3 and v11)
style templates, and a template written for this test that exercises the interpreter's features one
by one.

Usage: python3 scripts/render_chat_fixtures.py > tests/data/chat/fixtures.json
(apt-get install -y python3-jinja2 provides Jinja2.)
"""
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def token(v):
    if isinstance(v, dict):
        return v.get("content", "")
    return v or ""


def hf_template(name):
    cfg = json.load(open(os.path.join(ROOT, "tests/data/tokenizers", name, "tokenizer_config.json"), encoding="utf-8"))
    return {"source": cfg["chat_template"], "bos_token": token(cfg.get("bos_token")),
            "eos_token": token(cfg.get("eos_token"))}


# Llama-2-chat and Mistral-instruct style templates, in the shape those models ship them.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

# In the style of Llama-3.1's template (system prompt with dates, tools in the system or first user
# message, JSON tool calls, ipython results), written for this test from its structure.
LLAMA31_STYLE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# In the style of the tool-calling Mistral templates of the v3 tokenizer (Mistral-7B-Instruct-v0.3,
# Mistral-Nemo, Mistral-Large-2): tools before the last user turn, calls as one JSON array after
# [TOOL_CALLS], tool call ids of exactly nine characters. Written for this test from their structure.
MISTRAL_V3_STYLE = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set ns = namespace(last_user=-1) %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}
{%- endfor %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if tools is defined and tools is not none and loop.index0 == ns.last_user %}
            {{- '[AVAILABLE_TOOLS] ' + tools | tojson + '[/AVAILABLE_TOOLS]' }}
        {%- endif %}
        {%- if loop.index0 == ns.last_user and system_message is defined %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- '[TOOL_CALLS] [' }}
        {%- for call in message.tool_calls %}
            {%- if call.id is not defined or call.id | length != 9 %}
                {{- raise_exception('tool call ids must be nine characters') }}
            {%- endif %}
            {%- set text = call.function | tojson %}
            {{- text[:-1] + ', "id": "' + call.id + '"}' }}
            {{- ', ' if not loop.last else ']' + eos_token }}
        {%- endfor %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] | trim + eos_token }}
    {%- elif message['role'] == 'tool' %}
        {%- if message.tool_call_id is not defined or message.tool_call_id | length != 9 %}
            {{- raise_exception('tool call ids must be nine characters') }}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + message['content'] | string + ', "call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception('only system, user, assistant and tool turns') }}
    {%- endif %}
{%- endfor %}
"""

# In the style of the Mistral templates of the v11 tokenizer (Mistral-Small-3.2, Magistral, Devstral):
# a system prompt block, and each call as [TOOL_CALLS]NAME[ARGS]ARGUMENTS. Written for this test.
MISTRAL_V11_STYLE = r"""{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {{- '[SYSTEM_PROMPT]' + messages[0]['content'] + '[/SYSTEM_PROMPT]' }}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set ns = namespace(last_user=-1) %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}
{%- endfor %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if tools is defined and tools and loop.index0 == ns.last_user %}
            {{- '[AVAILABLE_TOOLS]' + tools | tojson + '[/AVAILABLE_TOOLS]' }}
        {%- endif %}
        {{- '[INST]' + message['content'] + '[/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {%- if message['content'] %}{{- message['content'] }}{%- endif %}
        {%- if message.tool_calls is defined and message.tool_calls %}
            {%- for call in message.tool_calls %}
                {%- set arguments = call.function.arguments %}
                {{- '[TOOL_CALLS]' + call.function.name + '[ARGS]' }}
                {{- arguments if arguments is string else arguments | tojson }}
            {%- endfor %}
        {%- endif %}
        {{- eos_token }}
    {%- elif message['role'] == 'tool' %}
        {{- '[TOOL_RESULTS]' + message['content'] | string + '[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception('only system, user, assistant and tool turns') }}
    {%- endif %}
{%- endfor %}
"""

# In the style of Gemma's template (no system role, "model" for the assistant), written for this test.
GEMMA_STYLE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

# Exercises the interpreter's constructs; written for this test.
FEATURES = r"""{#- a comment -#}
{%- set ns = namespace(count=0, roles=[]) -%}
{% macro tag(name, body='none') -%}
<{{ name }}>{{ body }}</{{ name }}>
{%- endmacro %}
{% for m in messages if m.role != 'tool' %}
  {% set ns.count = ns.count + 1 %}
  {{ loop.index }}/{{ loop.length }} {{ loop.revindex0 }} {{ 'first' if loop.first else ('last' if loop.last else 'mid') }}
  {{- ' ' ~ m['role']|upper ~ ':' }} {{ m.content|trim|replace('\n', '\\n') }} ({{ m.content|length }})
  {% if m.content.startswith('Hi') or m.content.endswith('?') %}greeting-or-question{% elif 'code' in m.content %}code{% else %}other{% endif %}

  {% if loop.previtem is defined %}prev={{ loop.previtem.role }}{% endif %}
{% else %}
no messages
{% endfor %}
count={{ ns.count }} {{ messages|length - 1 }} {{ (messages|length) // 2 }} {{ 7 % 3 }} {{ -7 // 2 }} {{ 2 ** 8 }} {{ 10 / 4 }} {{ 1.5 * 2 }} {{ 0.1 + 0.2 }}
{{ messages[-1].content[:5] }}|{{ messages[0].content[::-1] }}|{{ messages[0].content[1:4] }}|{{ 'a,b,,c'.split(',') }}|{{ '  x y  '.split() }}
{{ messages|map(attribute='role')|join(', ') }} | {{ messages|selectattr('role', 'equalto', 'user')|list|length }} | {{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='role')|list }}
{{ none }} {{ true }} {{ [1, 'two', none, false, 2.5] }} {{ {'k': 'v', 'n': 1} }} {{ ('a', 1) }} {{ undefined_thing }}|{{ undefined_thing|default('dflt') }}|{{ ''|default('empty', true) }}
{{ {'a': [1, 2, {'b': 'ünï'}], 'c': none, 'd': true, 'e': 1.25}|tojson }}
{{ {'a': [1, 2], 'b': {}}|tojson(indent=2) }}
{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}

{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}

{% set block %}captured {{ messages|length }}{% endset %}[{{ block }}] {{ tag('b', 'bold') }} {{ tag('i') }}
{{ 'Hello World'.lower() }} {{ 'hello world'.title() }} {{ 'x'|capitalize }} {{ '  pad  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '--a'.lstrip('-') }}|{{ 'a\n\n'.rstrip('\n') }}|
{{ messages[0] is mapping }} {{ messages[0].content is string }} {{ 3 is number }} {{ messages[0].missing is defined }} {{ none is none }} {{ 'b' in ['a', 'b'] }} {{ 'z' not in 'abc' }}
{{ "double \"quoted\" and 'single'" }} {{ 'tab\there' }} {{ [3, 1, 2]|reverse|list }} {{ 'abc'|reverse }} {{ '42'|int + 1 }} {{ 3|string ~ '!' }} {{ -5|abs }} {{ [1, 2] + [3] }} {{ 'ab' * 3 }}
    {%+ if true %}kept-indent{% endif %}
  {%- if true %} stripped-left{% endif %}
{% raw %}{{ not rendered }}{% endraw %}
{{ '%s has %d items' % ('list', 3) }} {{ messages[0].get('role') }} {{ messages[0].get('nope', 'fallback') }} {{ messages[0].keys()|list }}
{%- if add_generation_prompt %}

GEN{% endif %}
"""

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hi there! What is 2+2?"}
A1 = {"role": "assistant", "content": "2+2 is 4."}
U2 = {"role": "user", "content": "  And some code?\nShow me.  "}
A2 = {"role": "assistant", "content": "Sure:\n```python\nprint('hi')\n```"}
U_UNI = {"role": "user", "content": "Ünïcödé 🦙 \"quotes\" 'single' <tags> & 日本語\ttab"}

CONVERSATIONS = {
    "user": [U1],
    "system_user": [SYSTEM, U1],
    "multi_turn": [SYSTEM, U1, A1, U2],
    "ends_with_assistant": [U1, A1, U2, A2],
    "unicode": [U_UNI],
    "user_assistant_no_system": [U1, A1],
}

QWEN_EXTRA = {
    "thinking": ([U1, {"role": "assistant", "content": "<think>\nLet me add.\n</think>\n\n2+2 is 4."}, U2], {}),
    "reasoning_field": ([U1, {"role": "assistant", "content": "4.", "reasoning_content": "Add them."}], {}),
    "no_thinking": ([U1], {"enable_thinking": False}),
    "tools": ([SYSTEM, U1, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
        {"role": "tool", "content": "4"}, {"role": "tool", "content": "four"}],
        {"tools": [{"type": "function", "function": {"name": "add", "description": "Add two numbers",
                    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}]}),
}
DEEPSEEK_EXTRA = {
    "tools": ([SYSTEM, U1, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 2}"}},
        {"type": "function", "function": {"name": "mul", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
        {"role": "tool", "content": "4"}, {"role": "tool", "content": "6"},
        {"role": "assistant", "content": "4 and 6."}, U2], {}),
    "two_system": ([SYSTEM, {"role": "system", "content": "Be brief."}, U1], {}),
}

ADD_TOOL = {"type": "function", "function": {"name": "add", "description": "Add two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "required": ["a", "b"]}}}
LLAMA31_EXTRA = {
    "tools_in_user": ([SYSTEM, U1, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
        {"role": "tool", "content": {"result": 4}}, {"role": "ipython", "content": "4"}],
        {"tools": [ADD_TOOL], "date_string": "01 Jan 2025"}),
    "tools_in_system": ([SYSTEM, U1], {"tools": [ADD_TOOL], "tools_in_user_message": False}),
    "builtin_tools": ([U1], {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
    "two_tool_calls": ([U1, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "a", "arguments": {}}},
        {"type": "function", "function": {"name": "b", "arguments": {}}}]}], {"tools": [ADD_TOOL]}),
}
MISTRAL_EXTRA = {
    "tools": ([SYSTEM, U1, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a1B2c3D4e", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}},
        {"id": "Z9y8X7w6v", "type": "function", "function": {"name": "mul", "arguments": {"a": 2, "b": 3}}}]},
        {"role": "tool", "tool_call_id": "a1B2c3D4e", "content": "4"},
        {"role": "tool", "tool_call_id": "Z9y8X7w6v", "content": "6"},
        {"role": "assistant", "content": "4 and 6."}, U2], {"tools": [ADD_TOOL]}),
    "long_ids": ([U1, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "4"}], {"tools": [ADD_TOOL]}),
}


def main():
    env = make_env()
    templates = {
        "llama3": hf_template("llama3"),
        "qwen3": hf_template("qwen3"),
        "deepseek_v3": hf_template("deepseek_v3"),
        "llama2": {"source": LLAMA2, "bos_token": "<s>", "eos_token": "</s>"},
        "mistral": {"source": MISTRAL, "bos_token": "<s>", "eos_token": "</s>"},
        "features": {"source": FEATURES, "bos_token": "<s>", "eos_token": "</s>"},
        "llama31_style": {"source": LLAMA31_STYLE, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "gemma_style": {"source": GEMMA_STYLE, "bos_token": "<bos>", "eos_token": "<eos>"},
        "mistral_v3_style": {"source": MISTRAL_V3_STYLE, "bos_token": "<s>", "eos_token": "</s>"},
        "mistral_v11_style": {"source": MISTRAL_V11_STYLE, "bos_token": "<s>", "eos_token": "</s>"},
    }
    cases = []
    for tname, t in templates.items():
        compiled = env.from_string(t["source"])
        convs = [(k, v, {}) for k, v in CONVERSATIONS.items()]
        if tname == "qwen3":
            convs += [(k, v, x) for k, (v, x) in QWEN_EXTRA.items()]
        if tname == "deepseek_v3":
            convs += [(k, v, x) for k, (v, x) in DEEPSEEK_EXTRA.items()]
        if tname == "llama31_style":
            convs += [(k, v, x) for k, (v, x) in LLAMA31_EXTRA.items()]
        if tname.startswith("mistral_"):
            convs += [(k, v, x) for k, (v, x) in MISTRAL_EXTRA.items()]
        for cname, messages, extra in convs:
            for agp in (True, False):
                variables = dict(extra)
                variables["add_generation_prompt"] = agp
                case = {"template": tname, "conversation": cname, "messages": messages, "variables": variables}
                try:
                    case["expected"] = compiled.render(messages=messages, bos_token=t["bos_token"],
                                                       eos_token=t["eos_token"], **variables)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = {"generator": "scripts/render_chat_fixtures.py with Jinja2 %s (transformers' settings)" % jinja2.__version__,
           "templates": templates, "cases": cases}
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
