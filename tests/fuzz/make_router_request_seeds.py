#!/usr/bin/env python3
"""Writes the seeds of router_request_fuzz into DIR: real requests as a client sends them, in
protobuf wire format (encoded here so that no protobuf package is needed), after the fuzzer's
selector byte (0: GenerateRequest, 1: TokenizeRequest). Usage: make_router_request_seeds.py DIR"""
import json
import os
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, value):
    """A field of a message: int (varint), float (fixed32), str/bytes (length-delimited)."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, float):
        return varint(number << 3 | 5) + struct.pack("<f", value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(role, content="", reasoning="", calls=()):
    body = field(1, role) + field(2, content)
    if reasoning:
        body += field(3, reasoning)
    for name, arguments in calls:
        body += field(4, field(1, name) + field(2, arguments))
    return body


def chat(messages, tools=(), generation_prompt=True):
    body = b"".join(field(1, m) for m in messages)
    body += field(2, generation_prompt)
    for tool in tools:
        body += field(3, tool)
    return body


def generate(prompt_field, prompt, max_tokens=16, request_id="", sampling=b"", stop=()):
    body = field(1, request_id) if request_id else b""
    body += field(prompt_field, prompt)
    if sampling:
        body += field(5, sampling)
    stopping = field(1, max_tokens) + b"".join(field(2, s) for s in stop)
    return b"\0" + body + field(6, stopping)


def tokenize(input_field, value):
    return b"\1" + field(input_field, value)


WEATHER = json.dumps({"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}})
DEEP = "[" * 100000 + "]" * 100000
CONVERSATION = chat([
    message("system", "You are a helpful assistant."),
    message("user", "What is the weather in Paris?"),
    message("assistant", "", "The user wants the weather.", [("get_weather", '{"city": "Paris"}')]),
    message("tool", '{"temperature": 21}'),
    message("user", "And in <think>Rome</think>?"),
], [WEATHER])

SEEDS = {
    "generate_text": generate(2, "Hello, world! Tell me a story.", request_id="req-1",
                              sampling=field(1, 0.7) + field(3, 0.9), stop=("\n\n",)),
    "generate_token_ids": generate(3, field(1, bytes([5, 17, 300 & 0x7F | 0x80, 2]))),
    "generate_chat_tools": generate(4, CONVERSATION),
    "generate_chat_deep_tools": generate(4, chat([message("user", "hi")], [DEEP])),
    "generate_chat_deep_arguments": generate(4, chat([
        message("user", "hi"),
        message("assistant", "", calls=[("f", '{"a": ' + DEEP + "}")])])),
    "generate_forged_request_id": generate(
        2, "hi", request_id="x\nts=0 level=error comp=router event=FORGED"),
    "tokenize_text": tokenize(1, "The quick brown fox jumps over the lazy dog. 12345"),
    "tokenize_chat_tools": tokenize(2, CONVERSATION),
    "tokenize_chat_deep_tools": tokenize(2, chat([message("user", "hi")], [DEEP])),
    "tokenize_root_role": tokenize(2, chat([message("root", "hi")])),
}

if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
