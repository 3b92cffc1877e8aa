"""A mock LLM for tests: an OpenAI-style chat completions API answering canned responses.

    python3 mock_llm.py --responses /etc/mock-llm/responses.json [--port 8080]

POST /v1/chat/completions  {"model": str, "messages": [{"role", "content"}, ...]}
    -> 200 {"id", "object": "chat.completion", "created", "model", "choices": [...], "usage"}
       with the content of the first rule whose "contains" occurs (case-insensitively) in
       the user messages, else "default"; a rule with "status" answers that status and an
       OpenAI-style error instead. 400 for a malformed request.
GET /health -> 200 {"status": "ok", "rules": N}

The responses file (JSON): {"default": str, "rules": [{"contains": str, "content": str} |
{"contains": str, "status": int, "error": str}]}. It is read once at start; a missing or
malformed file stops the program with exit code 2. Standard library only.
"""

import argparse
import itertools
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLES = ("system", "user", "assistant", "tool")
MAX_BODY = 1 << 20


def load_responses(path):
    """The canned responses of `path`, checked; raises ValueError naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("default"), str):
        raise ValueError(f'{path}: expected an object with a string "default"')
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise ValueError(f'{path}: "rules" must be a list')
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or not isinstance(r.get("contains"), str) or not r["contains"]:
            raise ValueError(f'{path}: rules[{i}] needs a non-empty string "contains"')
        if "status" in r:
            if not isinstance(r["status"], int) or not 400 <= r["status"] <= 599:
                raise ValueError(f'{path}: rules[{i}].status must be an HTTP error status (400-599)')
        elif not isinstance(r.get("content"), str):
            raise ValueError(f'{path}: rules[{i}] needs a string "content" (or a "status")')
    return {"default": data["default"], "rules": rules}


def request_problems(body):
    """What is wrong with a chat completions request (empty when nothing is)."""
    if not isinstance(body, dict):
        return ["the request body must be a JSON object"]
    problems = []
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        problems.append('"model" must be a non-empty string')
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append('"messages" must be a non-empty list')
        return problems
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            problems.append(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        elif not isinstance(m.get("content"), str):
            problems.append(f"messages[{i}].content must be a string")
    return problems


def choose(responses, messages):
    """The rule (or default) answering `messages`: (status, text)."""
    said = "\n".join(m["content"] for m in messages if m["role"] == "user").lower()
    for r in responses["rules"]:
        if r["contains"].lower() in said:
            if "status" in r:
                return r["status"], r.get("error", "mock LLM error")
            return 200, r["content"]
    return 200, responses["default"]


def completion(model, text, messages, n):
    """An OpenAI-style chat completion answering `text`."""
    prompt = sum(len(m["content"].split()) for m in messages)
    answer = len(text.split())
    return {
        "id": f"chatcmpl-mock-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer},
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "mock-llm/1"
    responses = None
    counter = itertools.count(1)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"mock-llm: {self.address_string()} {fmt % args}\n")

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": kind}})

    def do_GET(self):
        if self.path == "/health":
            self.send_json(200, {"status": "ok", "rules": len(self.responses["rules"])})
        else:
            self.error(404, f"no route {self.path}", "not_found")

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            self.error(404, f"no route {self.path}", "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.error(413, f"the request body is larger than {MAX_BODY} bytes")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self.error(400, f"the request body is not valid JSON: {e}")
            return
        problems = request_problems(body)
        if problems:
            self.error(400, "; ".join(problems))
            return
        status, text = choose(self.responses, body["messages"])
        if status != 200:
            self.error(status, text, "mock_error")
            return
        self.send_json(200, completion(body["model"], text, body["messages"], next(self.counter)))


def main(argv):
    p = argparse.ArgumentParser(prog="mock_llm.py", description="A mock OpenAI-style LLM.")
    p.add_argument("--responses", default=os.environ.get("MOCK_LLM_RESPONSES"),
                   help="JSON file of canned responses (default: $MOCK_LLM_RESPONSES)")
    p.add_argument("--port", type=int, default=int(os.environ.get("LISTEN_PORT", "8080")))
    args = p.parse_args(argv)
    if not args.responses:
        print("mock-llm: give --responses PATH (or MOCK_LLM_RESPONSES)", file=sys.stderr)
        return 2
    try:
        Handler.responses = load_responses(args.responses)
    except ValueError as e:
        print(f"mock-llm: {e}", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    server.daemon_threads = True
    # PID 1 in a container gets no default SIGTERM action: stop on it explicitly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"mock-llm: {len(Handler.responses['rules'])} rules from {args.responses}; "
          f"listening on :{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
