#!/usr/bin/env python3
"""An OpenAI-compatible endpoint that answers the orchestrator's agent with a fixed list of
changes to the trainer, one per experiment, in order: a night of given changes, recorded by the
orchestrator as any night (the early-stopping corpus's `edits60`, see its README; the no-op
changes of `noise.sh`).

Usage: scripted_agent.py EDITS.json [PORT [FIRST]]   then   OPENAI_BASE_URL=http://127.0.0.1:PORT/v1
(FIRST: the index of the first change to hand out, to go on after a `--resume`).

EDITS.json: [{"description": "...", "edits": [[old_string, new_string], ...]}, ...]. Each
experiment's first request gets the change's `edit_file` calls, one per turn, then `finish`;
a later turn of the same experiment (a build error to repair) gets `finish` again. A change
whose text is no longer there (an earlier change was kept over it) is skipped for the next.
When the list is spent, requests get an error, which ends the night.
"""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

changes = json.load(open(sys.argv[1]))
port = int(sys.argv[2]) if len(sys.argv) > 2 else 8089
handed = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # changes handed out so far
assigned = {}  # experiment number -> [change, replies sent]


def completion(message):
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
        "model": "scripted-edits",
        "choices": [{"index": 0, "message": {"role": "assistant", **message},
                     "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def call(name, arguments):
    return completion({"content": None, "tool_calls": [{
        "id": f"call-{name}", "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)}}]})


def reply(request):
    if not request.get("tools"):
        return 200, completion({"content": "ok"})
    text = "\n".join(str(m.get("content") or "") for m in request.get("messages", []))
    found = re.search(r"# Experiment #(\d+)", text)
    if not found:
        return 400, {"error": {"message": "no `# Experiment #N` in the brief"}}
    n = int(found.group(1))
    last = request["messages"][-1]
    stale = last.get("role") == "tool" and "old_string was not found" in str(last.get("content"))
    if n not in assigned or stale:
        global handed
        if handed == len(changes):
            return 400, {"error": {"message": f"the {len(changes)} scripted changes are spent"}}
        assigned[n] = [changes[handed], 0]
        handed += 1
    change, sent = assigned[n]
    assigned[n][1] += 1
    if sent < len(change["edits"]):
        old, new = change["edits"][sent]
        return 200, call("edit_file", {"path": "crates/train/src/main.rs",
                                       "old_string": old, "new_string": new})
    return 200, call("finish", {"description": change["description"]})


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, body = reply(request)
        self.send(status, body)

    def do_GET(self):
        self.send(200, {"data": [{"id": "scripted-edits"}]})

    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
