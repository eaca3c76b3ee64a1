"""Node configuration: a declarative schema of TOML sections, every default in code.

Why declarative: the operator edits one file (`homenode.toml`, possibly on the SD card's boot
partition from a PC) and must get a precise message for every mistake - file, key, bad value and
what is allowed - while each part of the firmware adds its own section without touching the
validator. A section is data::

    THERMAL = Section("thermal", "CPU temperature governor", [
        Key("warm_c", 70.0, "pause background work above this", FloatRange(40, 90)),
    ])

and the schema lists it (firmware/settings.py, `default_schema`). Values come out as
`cfg.thermal.warm_c`. Unknown sections and keys are errors with a did-you-mean, because a typo
silently falling back to a default is the worst kind of config bug on a headless box.

Rules between keys of a section are data too, checked after every key on its own::

    Rule(("warm_c", "hot_c", "critical_c"), lambda v: v["warm_c"] < v["hot_c"] < v["critical_c"],
         "warm_c < hot_c < critical_c")

`Schema.validate` is THE validator: `homenode config check`, `homenode run` and the image's
first boot (image/device/bootconfig.py) all call it, so they accept and refuse the same files
with the same messages.
"""

import difflib
import tomllib
import types
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Checks: a predicate plus the human description of what is allowed.


@dataclass(frozen=True)
class Check:
    """`ok(value)` says whether a (correctly typed) value is allowed; `allowed` says what is."""

    allowed: str
    ok: Any = field(default=lambda v: True, compare=False)


def EachParses(parse, allowed: str) -> Check:
    """A list whose every item `parse(item)` accepts (raises nothing)."""

    def ok(items):
        try:
            for item in items:
                parse(item)
        except (ValueError, TypeError, AttributeError):
            return False
        return True

    return Check(allowed, ok)


def IntRange(lo: int, hi: int, note: str = "") -> Check:
    return Check(f"an integer from {lo} to {hi}{note}", lambda v: lo <= v <= hi)


def FloatRange(lo: float, hi: float, unit: str = "") -> Check:
    u = f" {unit}" if unit else ""
    return Check(f"a number from {_num(lo)} to {_num(hi)}{u}", lambda v: lo <= v <= hi)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def OneOf(*choices: str) -> Check:
    return Check("one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def NonEmpty(what: str = "a non-empty string") -> Check:
    return Check(what, lambda v: bool(v.strip()))


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list"}


@dataclass(frozen=True)
class Key:
    """One setting. Its type is the default's type (an int is accepted where a float is)."""

    name: str
    default: Any
    help: str
    check: Check | None = None
    normalize: Any = field(default=None, compare=False)  # e.g. one string -> a list of one

    @property
    def type(self) -> type:
        return type(self.default)

    def allowed(self) -> str:
        return self.check.allowed if self.check else _TYPE_NAMES.get(self.type, str(self.type))

    def coerce(self, value: Any) -> Any:
        """Return the typed value or raise ValueError('what is allowed')."""
        t = self.type
        if self.normalize is not None:
            value = self.normalize(value)
        if isinstance(value, bool) and t is not bool:
            raise ValueError(self.allowed())
        if t is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, t):
            raise ValueError(self.allowed())
        if self.check is not None and not self.check.ok(value):
            raise ValueError(self.allowed())
        return value


@dataclass(frozen=True)
class Rule:
    """A condition on several keys of one section: `ok(values)` gets the section's values (a
    dict, defaults filled in); `allowed` says what must hold, e.g. "warm_c < hot_c"."""

    keys: tuple[str, ...]
    ok: Any = field(compare=False)
    allowed: str = ""


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    keys: tuple[Key, ...]
    rules: tuple[Rule, ...] = ()

    def __init__(self, name: str, help: str, keys, rules=()):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "help", help)
        object.__setattr__(self, "keys", tuple(keys))
        object.__setattr__(self, "rules", tuple(rules))
        for rule in self.rules:
            for k in rule.keys:
                if self.key(k) is None:
                    raise ValueError(f"rule of [{name}] names unknown key {k}")

    def key(self, name: str) -> Key | None:
        for k in self.keys:
            if k.name == name:
                return k
        return None


# ---------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """One or more config problems; `problems` is the list of one-line messages."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class FrozenSection(types.SimpleNamespace):
    """One section's values; read-only, so no part can rewrite another's settings at run time
    (what a setting means at start is what it means until the node stops)."""

    def __setattr__(self, name, value):
        raise AttributeError(f"settings are read-only after loading (tried to set {name})")

    def __delattr__(self, name):
        raise AttributeError(f"settings are read-only after loading (tried to delete {name})")


class Config:
    """Validated settings: `cfg.node.listen_port`; `cfg.get("node.listen_port")`. Frozen."""

    def __init__(self, values: dict[str, dict[str, Any]], source: str | None):
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_values", {s: dict(v) for s, v in values.items()})
        for name, keys in values.items():
            object.__setattr__(self, name, FrozenSection(**keys))

    def __setattr__(self, name, value):
        raise AttributeError(f"settings are read-only after loading (tried to set {name})")

    def get(self, dotted: str) -> Any:
        section, _, key = dotted.partition(".")
        return self._values[section][key]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self._values.items()}


def read_toml(path: str) -> dict:
    """Parse a TOML file; ConfigError with one line saying what is wrong with it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a file"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e} (fix the line it names; a text value "
                           "needs double quotes)"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not valid TOML: not UTF-8 text"]) from None


class Schema:
    def __init__(self, sections):
        self.sections = {}
        for s in sections:
            if s.name in self.sections:
                raise ValueError(f"config section [{s.name}] declared twice")
            self.sections[s.name] = s

    def defaults(self) -> dict[str, dict[str, Any]]:
        return {s.name: {k.name: k.default for k in s.keys} for s in self.sections.values()}

    def validate(self, data: dict, where: str) -> tuple[dict, list[str]]:
        """Merge `data` (parsed TOML) over the defaults, then check the rules between keys.
        Returns (values, problems): every problem, one line each."""
        values, problems, given, bad = self._merge(data, where)
        problems += self.check_rules(values, given, bad, where)
        return values, problems

    def check_rules(self, values: dict, given: set, bad: set, where: str) -> list[str]:
        """Problems of the sections' rules; rules over a key that was itself bad are skipped
        (its own message says enough). `given`: (section, key) set in a file or flag."""
        problems = []
        for section in self.sections.values():
            table = values[section.name]
            for rule in section.rules:
                if any((section.name, k) in bad for k in rule.keys) or rule.ok(table):
                    continue
                shown = ", ".join(f"{k} = {_show(table[k])}"
                                  + ("" if (section.name, k) in given else " (default)")
                                  for k in rule.keys)
                problems.append(f"{where}: [{section.name}] {shown} do not fit together: "
                                f"expected {rule.allowed}")
        return problems

    def _merge(self, data: dict, where: str):
        values = self.defaults()
        problems, given, bad = [], set(), set()
        for sname, table in data.items():
            section = self.sections.get(sname)
            if section is None and not isinstance(table, dict):
                owners = [s.name for s in self.sections.values() if s.key(sname)]
                hint = (f": it is a key of [{owners[0]}]; write it under [{owners[0]}]" if owners
                        else "; settings go under a [section] heading")
                problems.append(f"{where}: {sname} = {_show(table)} must be inside a section"
                                + hint)
                continue
            if section is None:
                problems.append(f"{where}: unknown section [{sname}]"
                                + _did_you_mean(sname, self.sections, "[{}]")
                                + " (sections: " + ", ".join(f"[{n}]" for n in self.sections)
                                + ")")
                continue
            if not isinstance(table, dict):
                problems.append(f"{where}: {sname} = {_show(table)} must be a table: "
                                f"write it as a [{sname}] section")
                continue
            for kname, value in table.items():
                key = section.key(kname)
                if key is None:
                    names = [k.name for k in section.keys]
                    problems.append(f"{where}: unknown key [{sname}] {kname}"
                                    + _did_you_mean(kname, names, "{}")
                                    + " (keys of [" + sname + "]: " + ", ".join(names) + ")")
                    continue
                given.add((sname, kname))
                try:
                    values[sname][kname] = key.coerce(value)
                except ValueError as e:
                    bad.add((sname, kname))
                    problems.append(f"{where}: [{sname}] {kname} = {_show(value)} is not "
                                    f"allowed: expected {e}")
        return values, problems, given, bad

    def load(self, path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
        """Read `path` (None: defaults only), apply `overrides` {"section.key": value}."""
        data = {} if path is None else read_toml(path)
        where = path or "defaults"
        values, problems, given, bad = self._merge(data, where)
        for dotted, value in (overrides or {}).items():
            sname, _, kname = dotted.partition(".")
            key = self.sections[sname].key(kname)  # programming error if missing
            given.add((sname, kname))
            try:
                values[sname][kname] = key.coerce(value)
                bad.discard((sname, kname))
            except ValueError as e:
                bad.add((sname, kname))
                problems.append(f"command line: {dotted} = {_show(value)} is not allowed: "
                                f"expected {e}")
        problems += self.check_rules(values, given, bad, where)
        if problems:
            raise ConfigError(problems)
        return Config(values, path)

    def defaults_toml(self) -> str:
        """A commented TOML file with every key at its default (for docs and `config defaults`)."""
        out = []
        for s in self.sections.values():
            out.append(f"# {s.help}")
            out.extend(f"# must hold: {r.allowed}" for r in s.rules)
            out.append(f"[{s.name}]")
            for k in s.keys:
                out.append(f"# {k.help}; {k.allowed()}")
                out.append(f"{k.name} = {_toml_value(k.default)}")
            out.append("")
        return "\n".join(out)


def _did_you_mean(word: str, choices, fmt: str) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {fmt.format(close[0])}?" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _show(value)
    return repr(value)
