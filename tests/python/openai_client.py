#!/usr/bin/env python3
"""The official `openai` Python client against a running `kiln serve`.

Chat and completions, streaming and not, greedy: the streamed text must equal the whole
answer, and (when given) the expected single-sequence continuation. Also: the model list,
usage in the last stream chunk, and 4xx errors raised as the client's exception types.
Run by engine/tests/serve.rs; exits non-zero on the first failed check.
"""

import argparse
import sys

import openai


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--expect-completion")
    p.add_argument("--expect-chat")
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="kiln", max_retries=0, timeout=300)
    model = args.model
    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            sys.exit(f"FAILED: {what}")
        checks += 1

    # Models.
    ids = [m.id for m in client.models.list()]
    check(model in ids, f"{model} in {ids}")

    # Completions, whole and streamed.
    prompt = "The capital of France is"
    r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
    text = r.choices[0].text
    check(r.object == "text_completion", f"object {r.object}")
    check(len(text) > 0, "completion text is not empty")
    check(r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)
    check(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")
    if args.expect_completion is not None:
        check(text == args.expect_completion, f"completion {text!r} == {args.expect_completion!r}")
    stream = client.completions.create(
        model=model, prompt=prompt, max_tokens=16, temperature=0, stream=True
    )
    pieces, finish = [], None
    for chunk in stream:
        for c in chunk.choices:
            pieces.append(c.text or "")
            finish = c.finish_reason or finish
    check("".join(pieces) == text, f"streamed completion {''.join(pieces)!r} == {text!r}")
    check(finish == r.choices[0].finish_reason, f"stream finish {finish}")

    # Chat, whole and streamed (with usage in the last chunk).
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
    answer = r.choices[0].message.content
    check(r.object == "chat.completion", f"object {r.object}")
    check(r.choices[0].message.role == "assistant", "assistant role")
    check(len(answer) > 0, "chat answer is not empty")
    if args.expect_chat is not None:
        check(answer == args.expect_chat, f"chat {answer!r} == {args.expect_chat!r}")
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, roles = [], None, set()
    for chunk in stream:
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.add(c.delta.role)
            pieces.append(c.delta.content or "")
    check("".join(pieces) == answer, f"streamed chat {''.join(pieces)!r} == {answer!r}")
    check(roles == {"assistant"}, f"roles {roles}")
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, f"usage {usage}")

    # Errors come back as the client's exception types.
    try:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
        check(False, "an unknown model is refused")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"status {e.status_code}")
    try:
        client.chat.completions.create(model=model, messages=messages, temperature=7)
        check(False, "a bad temperature is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "temperature" in str(e), str(e))

    print(f"openai {openai.__version__}: {checks} checks passed")


if __name__ == "__main__":
    main()
