#!/usr/bin/env python3
"""Tool calls in a model's own syntax through the official `openai` client against a running
`kiln serve` whose model has Qwen 2.5's chat template (Hermes-style `<tool_call>` blocks):
a synthesized random-weight model, so only the grammar makes its answers calls.

- tool_choice required (one call: parallel_tool_calls false) and named, whole and streamed:
  finish_reason "tool_calls", arguments valid against the tool's parameters (jsonschema);
- an agent loop's next request (the assistant's tool_calls with content null, then the
  tool messages) is accepted; a tool message without tool_call_id is a 400 naming it;
- auto: a plain answer or calls, never a broken call.
Run by cli/tests/serve_structured.rs; exits non-zero on the first failed check.
"""

import argparse
import json
import sys

import jsonschema
import openai

PARAMS = {
    "get_weather": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "add": {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": -100, "maximum": 100},
                       "b": {"type": "integer", "minimum": -100, "maximum": 100}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
}
TOOLS = [{"type": "function", "function": {"name": n, "description": f"the {n} tool", "parameters": p}}
         for n, p in PARAMS.items()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="kiln", max_retries=0, timeout=300)
    model = args.model
    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            sys.exit(f"FAILED: {what}")
        checks += 1

    def valid_calls(calls, what):
        check(calls, f"{what}: calls")
        for call in calls:
            check(call.type == "function" and call.id, f"{what}: {call}")
            check(call.function.name in PARAMS, f"{what}: {call.function.name}")
            jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])

    q = [{"role": "user", "content": "What is the weather in Paris?"}]
    last = None
    for choice in ["required", {"type": "function", "function": {"name": "add"}}]:
        r = client.chat.completions.create(
            model=model, messages=q, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
            max_tokens=96, temperature=0,
        )
        c = r.choices[0]
        check(c.finish_reason == "tool_calls", f"{choice}: finish {c.finish_reason}: {c.message}")
        check(c.message.content is None and len(c.message.tool_calls) == 1, f"{choice}: {c.message}")
        valid_calls(c.message.tool_calls, choice)
        call = c.message.tool_calls[0]
        if isinstance(choice, dict):
            check(call.function.name == "add", f"named: {call.function.name}")
        print(f"tool_choice {choice}: {call.function.name}({call.function.arguments})")
        last = c.message
        # Streamed: the same call as delta.tool_calls.
        stream = client.chat.completions.create(
            model=model, messages=q, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
            max_tokens=96, temperature=0, stream=True,
        )
        name, arguments, finish = None, "", None
        for chunk in stream:
            for ch in chunk.choices:
                for d in ch.delta.tool_calls or []:
                    name = d.function.name or name
                    arguments += d.function.arguments or ""
                finish = ch.finish_reason or finish
        check((name, arguments, finish) == (call.function.name, call.function.arguments, "tool_calls"),
              f"streamed call {name}({arguments}) {finish}")

    # The agent loop's next request: the calls (content null) and their results.
    follow = q + [
        {"role": "assistant", "content": None,
         "tool_calls": [c.model_dump(include={"id", "type", "function"}) for c in last.tool_calls]},
    ] + [{"role": "tool", "tool_call_id": c.id, "content": "42"} for c in last.tool_calls]
    r = client.chat.completions.create(
        model=model, messages=follow, tools=TOOLS, tool_choice="auto", max_tokens=48, temperature=0,
    )
    c = r.choices[0]
    check(c.finish_reason in ("stop", "length", "tool_calls"), f"follow-up: {c}")
    if c.finish_reason == "tool_calls":
        valid_calls(c.message.tool_calls, "follow-up")
    print(f"follow-up: {c.finish_reason} {c.message.content!r} {c.message.tool_calls}")
    # ... without tools, and with a tool message that names no call: a 400.
    r = client.chat.completions.create(model=model, messages=follow, max_tokens=4, temperature=0)
    check(r.choices[0].finish_reason in ("stop", "length"), f"follow-up without tools: {r}")
    try:
        client.chat.completions.create(
            model=model, messages=follow + [{"role": "tool", "content": "7"}], max_tokens=4, temperature=0
        )
        check(False, "a tool message without tool_call_id is refused")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        body = body.get("error", body)
        check(body.get("param") == f"messages[{len(follow)}].tool_call_id", f"param: {body}")

    # auto: text or calls, never a call that does not parse.
    for seed in range(3):
        r = client.chat.completions.create(
            model=model, messages=q, tools=TOOLS, tool_choice="auto", max_tokens=48, temperature=1.0, seed=seed,
        )
        c = r.choices[0]
        if c.finish_reason == "tool_calls":
            valid_calls(c.message.tool_calls, f"auto seed {seed}")
        else:
            check(c.message.tool_calls is None, f"auto seed {seed}: {c}")
            check(c.finish_reason == "length" or not (c.message.content or "").lstrip().startswith("<tool_call>"),
                  f"auto seed {seed}: a finished answer that is a broken call: {c.message.content!r}")
        print(f"auto seed {seed}: {c.finish_reason}")

    print(f"openai {openai.__version__}: {checks} native tool-call checks passed")


if __name__ == "__main__":
    main()
