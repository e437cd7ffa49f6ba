#!/usr/bin/env python3
"""The workspace's layout rules (docs/architecture.md), checked: no import cycle between the
top-level modules of any crate (`crate::a` used in `b` and `crate::b` in `a`, directly or round
a longer loop; a module's own submodules count as the module), and no Rust file over MAX_LINES.

Usage: check_layout.py [ROOT]   (ROOT: the workspace, default the current directory)
"""

import re
import sys
from pathlib import Path

MAX_LINES = 650
USE = re.compile(r"\bcrate::(\w+)")


def module_edges(src: Path) -> dict:
    """{(from, to): [file:line, ...]} between the top-level modules of the crate at `src`."""
    edges = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            for target in USE.findall(code):
                if target != top:
                    edges.setdefault((top, target), []).append(f"{rel}:{number}")
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    problems = []
    crates = [p.parent for p in root.glob("**/Cargo.toml") if "target" not in p.parts and (p.parent / "src").is_dir()]
    for crate in sorted(crates):
        edges = module_edges(crate / "src")
        for component in cycles(edges):
            uses = [f"{a} -> {b} ({', '.join(where[:2])})" for (a, b), where in sorted(edges.items()) if a in component and b in component]
            problems.append(f"{crate.relative_to(root)}: import cycle between {', '.join(component)}: " + "; ".join(uses))
        for path in sorted(crate.rglob("*.rs")):
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                problems.append(f"{path.relative_to(root)}: {lines} lines (at most {MAX_LINES})")
    for p in problems:
        print(p)
    print(f"layout: {len(crates)} crates checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
