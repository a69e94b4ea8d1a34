"""The one way Flightdeck reads YAML that a person wrote: hierarchies, scenarios, runbook front matter.

Safe by construction, whatever the file holds:
- size bounded: the file is read up to MAX_INPUT_BYTES and refused beyond (a 2 GB file, or /dev/zero, must not be
  read whole before we say no);
- alias/anchor expansion bounded: a document is composed into a node graph first (aliases share nodes, so this is
  linear in the file), and the size and depth the graph would have once every alias is expanded are counted on it
  before anything is constructed. "Billion laughs" (nine lists of nine aliases to the previous list) is refused in
  milliseconds instead of taking everything downstream (pydantic, repr, the JSON encoder) past gigabytes of memory;
  merge keys (`<<: *a`) are counted the same way. Recursive anchors are refused: nothing downstream expects a cycle;
- duplicate keys refused (YAML would silently keep the last one), each with its line;
- line numbers kept: YamlDocument.locate() maps a field path (`agents.finance.tools[1]`) to its line, so every
  later error (schema, cross-reference) names file, line and field.
Only the safe loader's tags exist: no Python objects are ever built from a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from engine.errors import InputError, InputErrors

__all__ = ["MAX_INPUT_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "YamlDocument", "format_loc", "load_yaml",
           "read_input_file"]

MAX_INPUT_BYTES = 4 * 1024 * 1024
# Nodes after expanding every alias. The bundled hierarchies have about 500 and a long scenario a few thousand;
# 200k is far above any real file and far below what hurts (billion laughs expands to ~1.5e9).
MAX_YAML_NODES = 200_000
MAX_YAML_DEPTH = 64

_YamlLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def format_loc(loc: tuple[Any, ...]) -> str:
    """A field path as a person writes it: ('agents', 'a', 'tools', 1) -> agents.a.tools[1]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def read_input_file(path: Path, what: str, *, max_bytes: int = MAX_INPUT_BYTES, dir_hint: str | None = None) -> bytes:
    """The bytes of an input file, or an InputError naming it: missing, a directory (with `dir_hint`, the file
    inside it the person probably meant), unreadable, or larger than max_bytes (read no further than that)."""
    shown = str(path)
    if not path.exists():
        raise InputError(f"{what} file not found", file=shown)
    if path.is_dir():
        hint = ""
        if dir_hint is not None and (path / dir_hint).is_file():
            hint = f"; did you mean {path / dir_hint}?"
        raise InputError(f"is a directory, not a {what} file{hint}", file=shown)
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} file: {exc.strerror or exc}", file=shown) from None
    if len(raw) > max_bytes:
        raise InputError(f"{what} file is larger than {max_bytes // (1024 * 1024)} MiB; refusing to read it",
                         file=shown)
    return raw


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class YamlDocument:
    """One parsed YAML file: its Python data and the node tree that knows every line.

    `what` names the kind of file in messages ("hierarchy", "scenario", "runbook"). The top level must be a
    mapping. Duplicate keys do not raise here: they are in `duplicate_errors`, so a loader can report them
    together with its schema errors."""

    def __init__(self, path: Path, raw: bytes, what: str, *, max_nodes: int = MAX_YAML_NODES,
                 max_depth: int = MAX_YAML_DEPTH) -> None:
        self.path = path
        self.file = str(path)
        self.raw = raw
        text = self._decode(raw)
        loader = None
        try:
            loader = _YamlLoader(text)  # the pure-Python reader checks characters as soon as it is built
            root = loader.get_single_node()
            if root is None:
                raise InputError(f"{what} file is empty", file=self.file)
            # Bounded before constructing: construction (merge keys) and everything after it expand aliases.
            self._check_expansion(root, max_nodes, max_depth)
            # Duplicate keys are checked before constructing: construction silently keeps the last one.
            self.duplicate_errors = list(self._duplicate_keys(root))
            self.data = loader.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            raise self._yaml_error(exc, text) from None
        except yaml.reader.ReaderError as exc:
            line = text[:exc.position].count("\n") + 1
            code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
            raise InputError(f"invalid YAML: character U+{code:04X} is not allowed ({exc.reason})",
                             file=self.file, line=line) from None
        except yaml.YAMLError as exc:
            raise InputError(f"invalid YAML: {exc}", file=self.file) from None
        except RecursionError:  # the pure-Python composer, on nesting libyaml would have refused
            raise InputError(f"invalid YAML: nested deeper than {max_depth} levels", file=self.file) from None
        finally:
            if loader is not None:
                loader.dispose()
        self.root: yaml.Node = root
        if not isinstance(root, yaml.MappingNode) or not isinstance(self.data, dict):
            found = "a list" if isinstance(root, yaml.SequenceNode) else f"the value {_short(self.data)}"
            keys = {"scenario": "`scripts:`", "hierarchy": "`name:` and `agents:`"}.get(what, "`key: value`")
            raise InputError(f"the top level of a {what} file must be a mapping (keys like {keys}), found {found}",
                             file=self.file, line=root.start_mark.line + 1)

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise InputError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})",
                             file=self.file, line=line) from None

    def _yaml_error(self, exc: yaml.MarkedYAMLError, text: str) -> InputError:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        message = f"invalid YAML: {problem}"
        if mark is not None:
            message += f" (column {mark.column + 1})"
        if exc.context and exc.problem and exc.context_mark is not None:
            message += f", {exc.context} at line {exc.context_mark.line + 1}"
        lines = text.splitlines()
        if mark is not None and mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t":
            message += "; YAML cannot indent with tabs, use spaces"
        return InputError(message, file=self.file, line=mark.line + 1 if mark is not None else None)

    def _check_expansion(self, root: yaml.Node, max_nodes: int, max_depth: int) -> None:
        """Refuse a graph whose alias-expanded tree has more than max_nodes nodes, is deeper than max_depth, or is
        infinite (a recursive anchor). Iterative post-order walk, each shared node visited once: O(graph)."""
        size: dict[int, int] = {}
        depth: dict[int, int] = {}
        on_path: set[int] = set()
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            children = self._children(node)
            if children_done:
                on_path.discard(key)
                size[key] = min(1 + sum(size[id(c)] for c in children), max_nodes + 1)
                depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
                if depth[key] > max_depth:
                    raise InputError(f"nested deeper than {max_depth} levels (counting aliases expanded)",
                                     file=self.file, line=node.start_mark.line + 1)
                if size[key] > max_nodes:
                    raise InputError(f"expands to more than {max_nodes} values once its aliases (*name) are "
                                     f"expanded; refusing it (a \"billion laughs\" document?)",
                                     file=self.file, line=node.start_mark.line + 1)
                continue
            if key in size:
                continue
            if key in on_path:
                raise InputError("recursive alias: an anchor (&name) that contains an alias to itself",
                                 file=self.file, line=node.start_mark.line + 1)
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)

    @staticmethod
    def _children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    def _duplicate_keys(self, root: yaml.Node) -> Iterator[InputError]:
        seen_nodes: set[int] = set()
        stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
        while stack:
            node, loc = stack.pop()
            if id(node) in seen_nodes:  # aliases share nodes
                continue
            seen_nodes.add(id(node))
            if isinstance(node, yaml.MappingNode):
                first_line: dict[str, int] = {}
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                        line = key.start_mark.line + 1
                        if key.value in first_line:
                            yield InputError(f"duplicate key {key.value!r} (first at line {first_line[key.value]}); "
                                             f"YAML would silently keep only the last one",
                                             file=self.file, line=line, field=format_loc(loc + (key.value,)))
                        else:
                            first_line[key.value] = line
                        stack.append((value, loc + (key.value,)))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    stack.append((item, loc + (index,)))

    def locate(self, loc: Iterable[Any]) -> tuple[str, int]:
        """The field path and line for a location in the data. Where the path leaves the document (a missing
        key), the line is that of the deepest node that exists."""
        node: yaml.Node | None = self.root
        line = self.root.start_mark.line + 1
        path: list[Any] = []
        for part in loc:
            child: tuple[yaml.Node, yaml.Node] | None = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        child = (key, value)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                item = node.value[part]
                child = (item, item)
            if child is not None:
                line = child[0].start_mark.line + 1
                node = child[1]
                path.append(part)
                continue
            if is_union_tag(part):
                continue
            path.append(part)
            node = None
        return format_loc(tuple(path)), line

    def error(self, loc: Iterable[Any], message: str) -> InputError:
        field, line = self.locate(loc)
        return InputError(message, file=self.file, line=line, field=field or None)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "bytes"})


def is_union_tag(part: Any) -> bool:
    """Pydantic puts the union member it tried into `loc` (`'str'`, `"literal['forever']"`); not a file key."""
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[]()'\""))


def load_yaml(text: str | bytes, *, file: str, what: str) -> Any:
    """The data of a YAML mapping, through the same bounds and checks (duplicate keys are errors here)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    doc = YamlDocument(Path(file), raw, what)
    if doc.duplicate_errors:
        errors = doc.duplicate_errors
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return doc.data
