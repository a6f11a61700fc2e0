"""Every command's `--help`, made from its schema: its config groups and their options, then
each key with the value this config gives it and the comment the schema writes at the field
(conf/hydra/help/tennis_exp.yaml puts it under the command's own header). The schema's
comments are the one description of a key: nothing here repeats them."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import typing
from collections.abc import Iterator
from enum import Enum
from functools import cache

from omegaconf import DictConfig, OmegaConf

WIDTH = 96
HOW = """\
== Overriding ==
key=value sets a key, group=option picks a group's option, --multirun key=a,b sweeps; --cfg job
prints the composed config, --hydra-help Hydra's own flags."""


def help_resolver(*, _root_: DictConfig) -> str:
    """`${command_help:}`: the help of the config being composed, escaped for the
    string.Template Hydra fills the help template with."""
    return command_help(_root_).replace("$", "$$")


def command_help(cfg: DictConfig) -> str:
    """The config groups of `cfg` (a composed command config), its keys and how to set them."""
    values = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    keys = "\n".join(_keys(OmegaConf.get_type(cfg), values, ""))
    parts = [f"== Keys: key=value (this config's value) ==\n{keys}", HOW]
    if groups := _groups(cfg):
        parts.insert(0, f"== Config groups: group=option (* the chosen one) ==\n{groups}")
    return "\n\n".join(parts)


def _groups(cfg: DictConfig) -> str:
    """Each config group the command composes, with its options; the chosen one starred."""
    from hydra.core.global_hydra import GlobalHydra

    if "hydra" not in cfg or not GlobalHydra.instance().is_initialized():
        return ""
    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group, chosen in sorted(cfg.hydra.runtime.choices.items()):
        if group.startswith("hydra/"):
            continue
        options = [f"{o}*" if o == chosen else o for o in sorted(loader.get_group_options(group))]
        lines.append(f"{group}: {', '.join(options)}" + ("" if chosen else " (none chosen)"))
    return "\n".join(lines)


def _keys(schema: type, values: dict, prefix: str) -> Iterator[str]:
    """`key=value` and the field's comment for every field of `schema`, nested ones by their
    dotted key."""
    kinds = typing.get_type_hints(schema)
    comments = schema_comments(schema)
    for f in dataclasses.fields(schema):
        key, kind, comment = prefix + f.name, kinds[f.name], comments.get(f.name, "")
        if dataclasses.is_dataclass(kind):
            yield ""
            yield f"{key}:"
            yield from _indented(comment)
            yield from _keys(kind, values[f.name], f"{key}.")
            continue
        choices = isinstance(kind, type) and issubclass(kind, Enum)
        yield f"{key}={_shown(values[f.name])}" + (
            f"  ({' | '.join(m.value for m in kind)})" if choices else ""
        )
        yield from _indented(comment)
        if choices:
            members = schema_comments(kind)
            for member in kind:
                if members.get(member.name):
                    yield from _indented(f"{member.value}: {members[member.name]}", 6)


def _shown(value: object) -> str:
    """A value as it would be typed on the command line."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _indented(text: str, indent: int = 4) -> Iterator[str]:
    if text:
        yield from textwrap.wrap(
            text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * indent
        )


def schema_comments(cls: type) -> dict[str, str]:
    """The comment of each field (or enum member) of `cls` and the dataclasses it extends."""
    found: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base) or (base is cls and issubclass(cls, Enum)):
            found.update(_own_comments(base))
    return found


@cache
def _own_comments(cls: type) -> dict[str, str]:
    """The comment of each field `cls` itself defines: the comment lines right above it and the
    one at its end, joined."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {
        t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT
    }
    own_line = {n for n in comments if lines[n - 1].lstrip().startswith("#")}
    found = {}
    for node in ast.parse(source).body[0].body:
        target = getattr(node, "target", None) or next(iter(getattr(node, "targets", [])), None)
        if not isinstance(target, ast.Name):
            continue
        above, line = [], node.lineno - 1
        while line in own_line:
            above.insert(0, comments[line])
            line -= 1
        span = range(node.lineno, node.end_lineno + 1)
        at_end = [comments[n] for n in span if n in comments and n not in own_line]
        found[target.id] = " ".join(above + at_end)
    return found
