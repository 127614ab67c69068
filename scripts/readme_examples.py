#!/usr/bin/env python3
"""Runs the README's examples in the order a reader meets them, against one fresh facade over its
embedded simulator, and checks each answer against what the README shows: a reused chat id or a
changed answer fails CI, not the reader.

    python3 scripts/readme_examples.py target/debug/connect-facade

The blocks run are the fenced `sh` blocks preceded by the marker `<!-- readme-examples: run -->`.
Two forms:
- a script: each command (a paragraph of lines, ending where a comment line or a blank line starts)
  runs in bash; a comment `# { ... }` after a command lists fields its JSON answer must hold (a value
  with `…` is only checked to be there); a command after a comment starting `# Fails` must fail;
- a transcript: `$ command` lines, then what it prints: the status line must match, the headers
  shown must be there, and the JSON body must match field by field (ids, tokens and request ids,
  which differ every run, only by their form).
The README's `localhost:50051` is this run's port, so CI never collides with another server.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_server import ROOT, free_port, wait_port  # noqa: E402

MARKER = "<!-- readme-examples: run -->"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def blocks(readme):
    """The marked blocks' lines, in the README's order."""
    found, lines = [], readme.splitlines()
    for n, line in enumerate(lines):
        if line.strip() == MARKER:
            start = next(i for i in range(n + 1, len(lines)) if lines[i].startswith("```"))
            end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
            found.append((start + 2, lines[start + 1:end]))
    return found


def run(command, port):
    command = command.replace("localhost:50051", f"localhost:{port}")
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)


def fields_hold(expected, answer, where):
    """Every documented field is in the answer with its value (or, for `…` values, only there)."""
    problems = []
    for key, value in expected.items():
        if key not in answer:
            problems.append(f"{where}: no `{key}` in the answer {answer}")
        elif isinstance(value, str) and "…" in value:
            continue
        elif isinstance(value, dict) and isinstance(answer[key], dict):
            problems += fields_hold(value, answer[key], where)
        elif isinstance(value, list) and isinstance(answer[key], list) and len(value) == len(answer[key]):
            for shown, got in zip(value, answer[key]):
                if isinstance(shown, dict) and isinstance(got, dict):
                    problems += fields_hold(shown, got, where)
                elif shown != got:
                    problems.append(f"{where}: `{key}` is {answer[key]}, the README shows {value}")
        elif isinstance(value, str) and UUID.match(value) and isinstance(answer[key], str) and UUID.match(answer[key]):
            continue
        elif value != answer[key]:
            problems.append(f"{where}: `{key}` is {answer[key]!r}, the README shows {value!r}")
    return problems


def script(first_line, lines, port):
    """A script block: its commands, their expected failures and answers."""
    problems, ran = [], 0
    i, fails_next = 0, False
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            fails_next = line.startswith("# Fails")
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("#"):
            i += 1
        command = "\n".join(lines[start:i])
        where = f"README.md:{first_line + start}"
        if command.startswith("cargo "):
            continue  # the build and the tests: CI runs them itself
        answer = run(command, port)
        ran += 1
        if fails_next and answer.returncode == 0:
            problems.append(f"{where}: should fail and succeeded:\n{answer.stdout}")
        if not fails_next and answer.returncode != 0:
            problems.append(f"{where}: failed ({answer.returncode}):\n{answer.stdout}{answer.stderr}")
        if i < len(lines) and lines[i].startswith("# {"):
            expected = json.loads(lines[i][2:])
            try:
                problems += fields_hold(expected, json.loads(answer.stdout), where)
            except json.JSONDecodeError:
                problems.append(f"{where}: not JSON: {answer.stdout!r}")
            i += 1
        fails_next = False
    return problems, ran


def transcript(first_line, lines, port):
    """A transcript block: `$ command` and what it printed."""
    problems, ran = [], 0
    steps, current = [], None
    for n, line in enumerate(lines):
        if line.startswith("$ "):
            current = {"line": first_line + n, "command": [line[2:]], "shown": []}
            steps.append(current)
        elif current and not current["shown"] and line.startswith(" "):
            current["command"].append(line)
        elif current and (line.strip() or current["shown"]):
            current["shown"].append(line)
    for step in steps:
        where = f"README.md:{step['line']}"
        answer = run("\n".join(step["command"]), port)
        ran += 1
        shown = list(step["shown"])
        while shown and not shown[-1].strip():
            shown.pop()
        got = answer.stdout.replace("\r\n", "\n").split("\n")
        if not shown or not got or got[0].strip() != shown[0].strip():
            problems.append(f"{where}: status {got[0] if got else ''!r}, the README shows {shown[0] if shown else ''!r}")
            continue
        headers = {line.split(":", 1)[0].lower() for line in got if ":" in line and not line.startswith("{")}
        for line in shown[1:]:
            if ":" in line and not line.startswith("{") and line.split(":", 1)[0].lower() not in headers:
                problems.append(f"{where}: no header {line.split(':', 1)[0]} in the answer")
        body_shown = next((line for line in shown if line.startswith("{")), None)
        body_got = next((line for line in got if line.startswith("{")), None)
        if body_shown:
            try:
                problems += fields_hold(json.loads(body_shown), json.loads(body_got or ""), where)
            except json.JSONDecodeError:
                problems.append(f"{where}: not JSON: {body_got!r}")
    return problems, ran


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/connect-facade"
    readme = open(os.path.join(ROOT, "README.md")).read()
    marked = blocks(readme)
    if not marked:
        sys.exit("no marked example blocks in README.md")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONNECT_FACADE_"))}
    server = subprocess.Popen([binary, "serve", "--simulator", "--listen", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    problems, ran = [], 0
    try:
        wait_port(port)
        time.sleep(0.2)
        for first_line, lines in marked:
            is_transcript = any(line.startswith("$ ") for line in lines)
            found, count = (transcript if is_transcript else script)(first_line, lines, port)
            problems += found
            ran += count
    finally:
        server.terminate()
        server.wait(timeout=30)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        sys.exit(1)
    print(f"README examples: {ran} commands in {len(marked)} blocks ran in order and answered as shown")


if __name__ == "__main__":
    main()
