#!/usr/bin/env python3
"""Structured outputs and tool calls through the official `openai` client against a running
`kiln serve` (greedy, small max_tokens).

- `client.chat.completions.parse(..., response_format=Model)` for 20 Pydantic models
  (nested objects, arrays, enums, bounded numbers, optional fields): every answer parses and
  validates against its JSON schema (jsonschema); a few also streamed.
- Tool calls with two tools (required, named, auto), whole and streamed: the arguments
  validate against the tool's parameters, finish_reason is "tool_calls".
- The agent loop's next request (the call and a tool message) is answered.
- A constrained answer cut by max_tokens says finish_reason "length".
- Malformed or unsupported schemas and tool definitions: each a 400 naming the field, and
  the server keeps serving.
Run by cli/tests/serve_structured.rs; exits non-zero on the first failed check.
"""

import argparse
import json
import sys
from enum import Enum
from typing import Annotated, List, Literal, Optional

import jsonschema
import openai
from pydantic import BaseModel, Field


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Person(BaseModel):
    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=120)


class City(BaseModel):
    city: str = Field(max_length=20)
    country: str = Field(max_length=20)


class Paint(BaseModel):
    color: Color
    glossy: bool


class Tags(BaseModel):
    tags: List[str] = Field(min_length=1, max_length=3)


class Point(BaseModel):
    x: int = Field(ge=-10, le=10)
    y: int = Field(ge=-10, le=10)


class Segment(BaseModel):
    start: Point
    end: Point


class Score(BaseModel):
    score: float = Field(ge=0, le=1)
    passed: bool


class Maybe(BaseModel):
    title: str = Field(max_length=12)
    subtitle: Optional[str] = Field(max_length=12)


class Level(BaseModel):
    level: Literal["low", "medium", "high"]


class Inventory(BaseModel):
    item: str = Field(max_length=12)
    count: int = Field(ge=0, le=1000)
    price: float = Field(ge=0, le=100)


class Address(BaseModel):
    street: str = Field(max_length=20)
    number: int = Field(ge=1, le=9999)


class Company(BaseModel):
    name: str = Field(max_length=16)
    address: Address


class Numbers(BaseModel):
    values: List[Annotated[int, Field(ge=0, le=100)]] = Field(max_length=4)


class Answer(BaseModel):
    answer: Literal["yes", "no"]
    confidence: int = Field(ge=0, le=100)


class Pet(BaseModel):
    kind: Literal["cat", "dog", "bird"]
    name: str = Field(max_length=10)
    age: Optional[int] = Field(ge=0, le=30)


class Family(BaseModel):
    pets: List[Pet] = Field(max_length=2)


class Temperature(BaseModel):
    celsius: float = Field(ge=-50, le=60)
    unit: Literal["C"]


class Book(BaseModel):
    title: str = Field(max_length=20)
    year: int = Field(ge=1000, le=2100)
    genres: List[Color] = Field(max_length=2)


class Flag(BaseModel):
    enabled: bool


class Rect(BaseModel):
    width: int = Field(ge=1, le=100)
    height: int = Field(ge=1, le=100)
    label: Optional[str] = Field(max_length=8)


class Event(BaseModel):
    name: str = Field(max_length=16)
    day: int = Field(ge=1, le=31)
    month: int = Field(ge=1, le=12)


CASES = [
    (Person, "Invent a person: name and age."),
    (City, "Name a city and its country."),
    (Paint, "Pick a paint color."),
    (Tags, "Give up to three tags for a blog post about cooking."),
    (Point, "Give a point on a grid."),
    (Segment, "Give a line segment from one point to another."),
    (Score, "Score the sentence 'the cat sat' between 0 and 1."),
    (Maybe, "Give a title and, if you like, a subtitle for a story."),
    (Level, "How loud is a rock concert?"),
    (Inventory, "Describe one item in a shop."),
    (Company, "Invent a company with its address."),
    (Numbers, "List a few small numbers."),
    (Answer, "Is the sky blue?"),
    (Pet, "Describe a pet."),
    (Family, "Describe the pets of a family."),
    (Temperature, "What is a warm summer temperature?"),
    (Book, "Describe a book."),
    (Flag, "Should the feature be enabled?"),
    (Rect, "Give the size of a rectangle."),
    (Event, "When is New Year's Day?"),
]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def js(name, schema, strict=True):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


# (what to send on top of a plain chat request, the field the error must name)
BAD = [
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name"),
    ({"response_format": js("bad name", {"type": "object"})}, "response_format.json_schema.name"),
    ({"response_format": js("x", "object")}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"type": "objekt"})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"$ref": "#/$defs/Missing"})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"type": "integer", "minimum": 5, "maximum": 1})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"type": "string", "pattern": "(unclosed"})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"type": "array", "minItems": 3, "maxItems": 1})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"type": "object"}, strict="yes")}, "response_format.json_schema.strict"),
    ({"response_format": js("x", {"properties": {"a": {"type": 5}}})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"$ref": "http://example.com/s.json"})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"type": "string", "minLength": 5, "maxLength": 2})}, "response_format.json_schema.schema"),
    ({"response_format": js("x", {"allOf": [{"type": "string"}, {"type": "integer"}]})}, "response_format.json_schema.schema"),
    ({"tools": {"a": 1}}, "tools"),
    ({"tools": [5]}, "tools[0]"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]}, "tools[0].function.parameters"),
    ({"tools": [ADD, {"type": "function", "function": {"name": "g", "parameters": {"type": "objekt"}}}]}, "tools[1].function.parameters"),
    ({"tools": [ADD, ADD]}, "tools[1].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 5}}]}, "tools[0].function.description"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--expect-logprobs", help="kiln run --logprobs 3 of the greedy completion: [[[id, lp], ...], ...]")
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="kiln", max_retries=0, timeout=300)
    model = args.model
    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            sys.exit(f"FAILED: {what}")
        checks += 1

    def ask(prompt):
        return [
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": prompt},
        ]

    # Structured outputs: 20 models, parsed by the client and validated by jsonschema.
    for i, (cls, prompt) in enumerate(CASES):
        try:
            r = client.chat.completions.parse(
                model=model, messages=ask(prompt), response_format=cls, max_tokens=96, temperature=0
            )
        except openai.LengthFinishReasonError as e:
            check(False, f"{cls.__name__}: cut at max_tokens: {e.completion.choices[0].message.content!r}")
        msg = r.choices[0].message
        check(r.choices[0].finish_reason == "stop", f"{cls.__name__}: finish {r.choices[0].finish_reason}: {msg.content!r}")
        check(isinstance(msg.parsed, cls), f"{cls.__name__}: parsed {msg.parsed!r}")
        jsonschema.validate(json.loads(msg.content), cls.model_json_schema())
        print(f"{cls.__name__}: {msg.content}")
        # Streamed, for a few: the same text as the whole answer.
        if i % 5 == 0:
            with client.chat.completions.stream(
                model=model, messages=ask(prompt), response_format=cls, max_tokens=96, temperature=0
            ) as stream:
                final = stream.get_final_completion()
            check(final.choices[0].message.content == msg.content, f"{cls.__name__}: streamed {final.choices[0].message.content!r}")
            check(isinstance(final.choices[0].message.parsed, cls), f"{cls.__name__}: streamed parsed")

    # json_object mode.
    r = client.chat.completions.create(
        model=model, messages=ask("Describe a cat."), response_format={"type": "json_object"},
        max_tokens=64, temperature=0,
    )
    if r.choices[0].finish_reason == "stop":
        check(isinstance(json.loads(r.choices[0].message.content), dict), r.choices[0].message.content)

    # max_tokens cuts a constrained answer: finish_reason "length".
    r = client.chat.completions.create(
        model=model, messages=ask("Invent a person."), response_format=js("Person", Person.model_json_schema()),
        max_tokens=3, temperature=0,
    )
    check(r.choices[0].finish_reason == "length", f"cut answer: finish {r.choices[0].finish_reason}")

    # Tool calls: required, named and auto, whole and streamed.
    q = [{"role": "user", "content": "What is the weather in Paris?"}]
    for choice in ["required", {"type": "function", "function": {"name": "add"}}, "auto"]:
        r = client.chat.completions.create(
            model=model, messages=q, tools=TOOLS, tool_choice=choice, max_tokens=64, temperature=0
        )
        c = r.choices[0]
        if choice == "auto" and not c.message.tool_calls:
            check(c.finish_reason == "stop" and c.message.content, f"auto: a plain answer {c}")
            continue
        check(c.finish_reason == "tool_calls", f"{choice}: finish {c.finish_reason}")
        check(c.message.content is None and len(c.message.tool_calls) == 1, f"{choice}: {c.message}")
        call = c.message.tool_calls[0]
        check(call.type == "function" and call.id, f"call {call}")
        if isinstance(choice, dict):
            check(call.function.name == "add", f"named: {call.function.name}")
        jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
        print(f"tool_choice {choice}: {call.function.name}({call.function.arguments})")
        # Streamed: delta.tool_calls, the same call.
        stream = client.chat.completions.create(
            model=model, messages=q, tools=TOOLS, tool_choice=choice, max_tokens=64, temperature=0, stream=True
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
    # The agent loop's next request, in kiln's format (SmolLM2's template knows no tools):
    # the call (content null) and its result are accepted and answered.
    follow = q + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"},
    ]
    r = client.chat.completions.create(model=model, messages=follow, tools=TOOLS, max_tokens=48, temperature=0)
    check(r.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"follow-up: {r.choices[0]}")
    print(f"follow-up: {r.choices[0].finish_reason} {r.choices[0].message.content!r}")
    # The pydantic helper for tools: parsed arguments.
    r = client.chat.completions.create(
        model=model, messages=q, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64, temperature=0,
    )
    args_ = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
    check(args_["unit"] in ("celsius", "fahrenheit"), f"weather args {args_}")

    # Log-probabilities: completions (compared with kiln run --logprobs), chat, streamed.
    r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    check("".join(lp.tokens) == r.choices[0].text, f"logprob tokens {lp.tokens} spell {r.choices[0].text!r}")
    check(len(lp.token_logprobs) == len(lp.tokens) == len(lp.top_logprobs) == len(lp.text_offset), f"{lp}")
    if args.expect_logprobs:
        expect = json.loads(args.expect_logprobs)
        check(len(expect) == len(lp.token_logprobs), f"{len(expect)} tokens == {len(lp.token_logprobs)}")
        for i, (want, got, top) in enumerate(zip(expect, lp.token_logprobs, lp.top_logprobs)):
            check(abs(want[0][1] - got) < 1e-3, f"token {i}: logprob {got} == kiln run's {want[0][1]}")
            check(len(top) == 3 and all(abs(a - b[1]) < 1e-3 for a, b in zip(sorted(top.values(), reverse=True), want)),
                  f"token {i}: top {top} == kiln run's {want}")
    r = client.chat.completions.create(
        model=model, messages=q, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    check("".join(t.token for t in content) == r.choices[0].message.content, f"chat logprobs {content}")
    check(all(len(t.top_logprobs) == 2 and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6 for t in content),
          "greedy: each token is its distribution's most likely")
    stream = client.chat.completions.create(
        model=model, messages=q, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, stream=True
    )
    streamed = [t for chunk in stream for c in chunk.choices if c.logprobs for t in c.logprobs.content or []]
    check([(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content], "streamed logprobs")
    # ... and under a grammar: the model's log-probabilities (before the mask).
    r = client.chat.completions.create(
        model=model, messages=ask("Is the sky blue?"), max_tokens=32, temperature=0, logprobs=True,
        response_format=js("Answer", Answer.model_json_schema()),
    )
    content = r.choices[0].logprobs.content
    check("".join(t.token for t in content) == r.choices[0].message.content, "constrained logprobs")
    check(all(t.logprob <= 0 for t in content), "log-probabilities are <= 0")

    # Malformed or unsupported: a 400 naming the field, every time.
    for extra, field in BAD:
        try:
            client.chat.completions.create(
                model=model, messages=q, max_tokens=4, temperature=0, extra_body=extra
            )
            check(False, f"{extra} is refused")
        except openai.BadRequestError as e:
            body = e.body if isinstance(e.body, dict) else {}
            body = body.get("error", body)
            check(e.status_code == 400 and body.get("param") == field,
                  f"{extra}: status {e.status_code}, param {body.get('param')!r}, want {field!r}: {e}")
            check(len(body.get("message", "")) > 10, f"{extra}: a clear message: {body}")
    # ... and the server still serves.
    r = client.chat.completions.parse(model=model, messages=ask("Is the sky blue?"), response_format=Answer, max_tokens=32, temperature=0)
    check(isinstance(r.choices[0].message.parsed, Answer), "serving after the bad requests")

    print(f"openai {openai.__version__}: {checks} structured checks passed ({len(CASES)} schemas, {len(BAD)} bad requests)")


if __name__ == "__main__":
    main()
