#!/usr/bin/env python3
"""Draws kache's code map from the source: the module graph and the size limits.

    python3 scripts/code-map.py graph [DIR]   # `use` edges between modules under DIR
                                             # (default node/src/cluster), and any cycles
    python3 scripts/code-map.py sizes        # files over 500 lines, non-test functions
                                             # over 80 lines, in every crate

Exits 1 when `graph` finds an import cycle or `sizes` finds something over a limit, so
it can guard the layout in scripts/test.sh. It reads Rust as text: a `use` line names a
module, and a function ends at the first closing brace at its own indentation (rustfmt's
layout), which is what this code base is formatted with.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["api", "node", "operator", "tools", "tests"]
FILE_LIMIT = 500
FN_LIMIT = 80

USE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+)")
FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?fn\s+(\w+)")


def rust_files(top):
    for base, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("target", ".git")]
        for name in sorted(files):
            if name.endswith(".rs"):
                yield os.path.join(base, name)


def module_of(path, src_root, crate):
    rel = os.path.relpath(path, src_root)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return "::".join([crate] + rel)


def imported_modules(line, here, crate):
    """The modules a `use` line imports from, resolved to `crate::a::b`."""
    match = USE.match(line)
    if not match:
        return []
    path = match.group(1).strip()
    if path.startswith("crate::"):
        parts = [crate] + path[len("crate::"):].split("::")
    elif path.startswith("super::"):
        parts = here.split("::")
        while path.startswith("super::"):
            parts = parts[:-1]
            path = path[len("super::"):]
        parts = parts + path.split("::")
    else:
        return []
    # Keep the path up to the first item that is not a module (Capitalised, braces, ...).
    modules = []
    for part in parts:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", part):
            break
        modules.append(part)
    return ["::".join(modules)] if len(modules) > 1 else []


def graph(top):
    src_root = top
    while os.path.basename(src_root) != "src":
        src_root = os.path.dirname(src_root)
    crate = "crate"
    edges = {}
    for path in rust_files(top):
        if path.endswith("tests.rs") or f"{os.sep}tests{os.sep}" in path:
            continue
        here = module_of(path, src_root, crate)
        with open(path, encoding="utf-8") as source:
            for line in source:
                if line.strip().startswith("#[cfg(test)]"):
                    break
                for target in imported_modules(line, here, crate):
                    # An import of a module's item names the module that holds it.
                    if target != here and not here.startswith(target + "::"):
                        edges.setdefault(here, set()).add(target)
    known = set(edges) | {t for ts in edges.values() for t in ts}

    def owner(module):
        # Map `crate::cluster::wire::proto` to the file module `crate::cluster::wire`.
        while module not in edges and "::" in module and module.rsplit("::", 1)[0] in known:
            parent = module.rsplit("::", 1)[0]
            if parent == "crate":
                break
            module = parent
        return module

    graph = {m: sorted({owner(t) for t in ts} - {m}) for m, ts in edges.items()}
    for module in sorted(graph):
        print(f"{module} -> {', '.join(graph[module])}")
    cycles = find_cycles(graph)
    for cycle in cycles:
        print("cycle: " + " -> ".join(cycle))
    if not cycles:
        print("no import cycles")
    return 1 if cycles else 0


def find_cycles(graph):
    """Import cycles, ignoring parent<->child edges (a `mod.rs` re-exporting its children
    and a child using its parent's items are one module's inside)."""
    def related(a, b):
        return a.startswith(b + "::") or b.startswith(a + "::")

    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, []):
            if related(node, nxt):
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def sizes():
    over = 0
    for crate in CRATES:
        top = os.path.join(ROOT, crate)
        if not os.path.isdir(top):
            continue
        for path in rust_files(top):
            rel = os.path.relpath(path, ROOT)
            with open(path, encoding="utf-8") as source:
                lines = source.read().split("\n")
            is_test_file = path.endswith("tests.rs") or f"{os.sep}tests{os.sep}" in rel
            if len(lines) > FILE_LIMIT and not is_test_file:
                print(f"{rel}: {len(lines)} lines (limit {FILE_LIMIT})")
                over += 1
            if is_test_file:
                continue
            for name, length, start in functions(lines):
                if length > FN_LIMIT:
                    print(f"{rel}:{start}: fn {name} is {length} lines (limit {FN_LIMIT})")
                    over += 1
    print(f"{over} over the limits")
    return 1 if over else 0


def functions(lines):
    """(name, length, first line) of each function outside `#[cfg(test)]` modules."""
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            return
        match = FN.match(line)
        if not match or line.rstrip().endswith(";"):
            continue
        indent = match.group(1)
        for j in range(i, len(lines)):
            if lines[j].startswith(indent + "}") and (j > i or "{" in line):
                yield match.group(2), j - i + 1, i + 1
                break


def main(argv):
    if len(argv) >= 2 and argv[1] == "graph":
        top = argv[2] if len(argv) > 2 else os.path.join(ROOT, "node/src/cluster")
        return graph(os.path.abspath(top))
    if len(argv) == 2 and argv[1] == "sizes":
        return sizes()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
