#!/usr/bin/env python3
"""Prints which top-level modules of the layerlink library use which (from `crate::` paths and
`use crate::{...}` groups in src/), and exits 1 if the graph has a cycle. `--dot` prints Graphviz.

A module is a file or folder directly under src/ (`src/resolve/cache.rs` belongs to `resolve`).
Test code (after `#[cfg(test)]`) is ignored: tests may reach across layers."""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SKIP = {"main.rs", "cli", "bin"}
REEXPORTS = {"Config": "config", "Engine": "engine"}  # `pub use` at the crate root  # the binary's own modules may use anything in the library


def module_of(rel):
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def uses(text):
    text = text.split("#[cfg(test)]")[0]
    text = re.sub(r"//[^\n]*", "", text)
    found = set(re.findall(r"crate::([a-z_]+)", text))
    # use crate::{a, b::c, d::{e}}: the names right after the top-level brace
    for group in re.findall(r"use crate::\{(.*?)\};", text, re.S):
        depth, name, names = 0, "", []
        for ch in group:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                names.append(name.strip()); name = ""; continue
            if depth == 0:
                name += ch
        names.append(name.strip())
        found |= {n.split("::")[0].strip() for n in names if n}
    # re-exports at the crate root
    for name, module in REEXPORTS.items():
        if re.search(r"\b(crate::)?%s\b" % name, text) and ("crate::" + name in text or name in found):
            found.add(module)
    return found


def main():
    modules = {module_of(n) for n in os.listdir(SRC) if n not in SKIP and n != "lib.rs"}
    graph = {m: set() for m in modules}
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), SRC)
            if rel.split(os.sep)[0] in SKIP or rel == "lib.rs":
                continue
            m = module_of(rel)
            for used in uses(open(os.path.join(root, f)).read()):
                if used in modules and used != m:
                    graph[m].add(used)
    if "--dot" in sys.argv:
        print("digraph layerlink {")
        for m in sorted(graph):
            for u in sorted(graph[m]):
                print(f'  "{m}" -> "{u}";')
        print("}")
    else:
        for m in sorted(graph):
            print(f"{m:12} -> {', '.join(sorted(graph[m])) or '-'}")
    # cycles: depth-first search
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1; stack.append(m)
        for u in sorted(graph[m]):
            if state.get(u) == 1:
                cycles.append(stack[stack.index(u):] + [u])
            elif u not in state:
                visit(u)
        stack.pop(); state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    for c in cycles:
        print("cycle: " + " -> ".join(c), file=sys.stderr)
    sys.exit(1 if cycles else 0)


main()
