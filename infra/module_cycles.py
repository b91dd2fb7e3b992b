#!/usr/bin/env python3
"""The import graph of each crate under `shared/`, module by module, and its cycles.

A module imports another when its code (not its comments, not its tests) names it by a
`crate::` or `super::` path, in a `use` or inline. Modules that import each other, directly
or round a loop, form a cycle (a strongly connected component of the graph); layers that
point one way have none.

The run fails on any cycle not within one of ALLOWED (now none): one being taken apart may
shrink, never grow, and no new one may appear.

It also holds the facade crate's layers: the edge (`app`, `api`, `http`: the `App`, handlers,
problem+json, routing) sits above the domains, so no domain module imports `app` or `api`,
and none imports `http` beyond what EDGE_IMPORTS_LEFT allows (now nothing). That list may
only shrink: an entry its module no longer needs fails the run too, so it is always the
exact remainder.

`python3 infra/module_cycles.py` prints what it finds.
"""

import re
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent / "shared"
# Every crate's sources: the facade's and each layer's. Crates cannot import each other
# round a loop (cargo refuses), so each is checked on its own.
ROOTS = [SHARED / "src", *sorted(p / "src" for p in SHARED.iterdir() if (p / "Cargo.toml").exists())]
ROOT = ROOTS[0]

# None is left: every module's imports point one way. A cycle that must be allowed for a
# while (being taken apart) is listed here by its modules, and may then only shrink.
ALLOWED: list[set[str]] = []

# The facade crate's edge: what a function's handlers and `App` are made of.
EDGE = {"app", "api", "http"}

# Domain modules that may still import the edge, and what of it (none is left: every domain
# error is a domain type, and reading a request is the edge's). A module being moved may be
# listed here for a while; the list may only shrink.
EDGE_IMPORTS_LEFT: dict[str, set[str]] = {}

PATH = r"[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*"


def module_sources(root: Path) -> dict[str, str]:
    """Module path (`payments::refund`; `crate` for lib.rs) -> its code without comments or
    its `#[cfg(test)]` part."""
    sources = {}
    for file in root.rglob("*.rs"):
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "mod":
            parts.pop()
        name = "::".join(parts) if parts != ["lib"] else "crate"
        code = file.read_text().split("#[cfg(test)]")[0]
        sources[name] = re.sub(r"//[^\n]*", "", code)
    return sources


def flatten(prefix: str, group: str) -> list[str]:
    """`a::{b, c::{d, e}}` (the inside of the braces) as full paths."""
    items, depth, current = [], 0, ""
    for ch in group:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    paths = []
    for item in (i.strip() for i in items):
        found = re.match(rf"^({PATH})(?:::\{{(.*)\}})?", item, re.S)
        if not found:
            continue
        path = f"{prefix}::{found.group(1)}" if prefix else found.group(1)
        paths += flatten(path, found.group(2)) if found.group(2) is not None else [path]
    return paths


def named_paths(code: str) -> list[str]:
    """Every `crate::`/`super::` path the code names."""
    paths = []
    for head, body in re.findall(rf"use\s+((?:crate|super)(?:::super)*)::(\{{.*?\}}|{PATH})\s*;", code, re.S):
        paths += [f"{head}::{p}" for p in flatten("", body[1:-1])] if body.startswith("{") else [f"{head}::{body}"]
    return paths + re.findall(r"\b((?:crate|super)(?:::super)*::[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)", code)


def reexports(sources: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """`(module, Name)` -> the path `Name` stands for, for each `pub use` of a module: a
    path through a re-export (`crate::App`, `identity::Email`) is an import of the module
    that defines the name, not of the one that re-exports it."""
    found = {}
    for name, code in sources.items():
        here = [] if name == "crate" else name.split("::")
        for body in re.findall(rf"pub\s+use\s+(\{{.*?\}}|{PATH}(?:::\{{.*?\}})?)\s*;", code, re.S):
            paths = flatten("", body[1:-1]) if body.startswith("{") else flatten("", body)
            for path in paths:
                parts = path.split("::")
                if parts[0] == "crate":
                    target = parts[1:]
                elif parts[0] in ("self", "super"):
                    up = 0
                    while parts[0] == "super":
                        up, parts = up + 1, parts[1:]
                    target = here[: len(here) - up] + [p for p in parts if p != "self"]
                else:
                    target = here + parts
                found[(name, parts[-1])] = target
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    modules = set(sources)
    exported = reexports(sources)

    def module_of(parts: list[str], depth: int = 0) -> str | None:
        for n in range(len(parts), -1, -1):
            name = "::".join(parts[:n]) if n else "crate"
            if name in modules:
                through = exported.get((name, parts[n])) if n < len(parts) else None
                if through and depth < 8:
                    # A name re-exported from another crate (the kernel) is, for this crate's
                    # layers, an import of the module it was named through.
                    found = module_of(through + parts[n + 1 :], depth + 1)
                    return found if found not in (None, "crate") else name
                return name if n else None
        return None

    graph = {name: set() for name in modules}
    for name, code in sources.items():
        here = [] if name == "crate" else name.split("::")
        for path in named_paths(code):
            parts = path.split("::")
            if parts[0] == "crate":
                target = parts[1:]
            else:
                up = 0
                while parts and parts[0] == "super":
                    up, parts = up + 1, parts[1:]
                target = here[: len(here) - up] + parts
            other = module_of(target)
            # A module's own parent or child is its nesting, not an import.
            if other and other != name and not name.startswith(other + "::") and not other.startswith(name + "::"):
                graph[name].add(other)
    return graph


def cycles(root: Path = ROOT) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    graph = import_graph(module_sources(root))
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
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


def layer_faults(root: Path = ROOT, left: dict[str, set[str]] | None = None) -> list[str]:
    """Where a module below the edge imports it beyond what `left` still allows."""
    left = EDGE_IMPORTS_LEFT if left is None else left
    graph = import_graph(module_sources(root))
    faults = []
    for name, imports in sorted(graph.items()):
        if name == "crate" or name.split("::")[0] in EDGE:
            continue
        edge = {other for other in imports if other.split("::")[0] in EDGE}
        for other in sorted(edge - left.get(name, set())):
            faults.append(f"LAYER: {name} imports the edge's {other}")
        for other in sorted(left.get(name, set()) - edge):
            faults.append(f"LAYER: {name} no longer imports {other}: take it out of EDGE_IMPORTS_LEFT")
    return faults


def main() -> int:
    roots = [Path(sys.argv[1])] if len(sys.argv) > 1 else ROOTS
    found = [component for root in roots for component in cycles(root)]
    new = [c for c in found if not any(set(c) <= allowed for allowed in ALLOWED)]
    for component in found:
        print(("NEW CYCLE: " if component in new else "allowed cycle: ") + " <-> ".join(component))
    print(f"{len(found)} cycle(s) among the modules of {len(roots)} crate(s), {len(new)} not allowed")
    faults = layer_faults(roots[0], None if len(sys.argv) == 1 else {})
    for fault in faults:
        print(fault)
    left = sum(map(len, EDGE_IMPORTS_LEFT.values())) if len(sys.argv) == 1 else 0
    print(f"{len(faults)} layer fault(s); {left} edge import(s) left below the edge")
    return 1 if new or faults else 0


if __name__ == "__main__":
    sys.exit(main())
