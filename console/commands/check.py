"""`flightdeck check FILE`: validate a hierarchy file without running anything."""

from __future__ import annotations

import argparse


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check", help="validate a hierarchy file",
        description="Validate a hierarchy file (or bundled name): schema, references, delegation cycles, tool "
                    "imports. Prints every problem with its file, line and field; exit 2 if any.")
    parser.add_argument("hierarchy", metavar="FILE|NAME")
    parser.add_argument("--scenario", metavar="FILE", help="also validate a scripted-model scenario file")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from engine.hierarchy.loader import load_hierarchy

    hierarchy = load_hierarchy(args.hierarchy, scenario=args.scenario)
    spec = hierarchy.spec
    print(f"{hierarchy.path}: ok: hierarchy {spec.name}: {len(spec.agents)} agents, {len(spec.tools)} tools, "
          f"{len(spec.models)} models, entry {spec.entry}")
    return 0
