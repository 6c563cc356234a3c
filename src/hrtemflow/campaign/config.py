"""Load, complete and validate a campaign config: the one source of truth for every parameter.

Validation happens once, before any job: the JSON schema (types, ranges, enums, defaults) and then
the checks a schema cannot express (reversed ranges, n < m, a field of view larger than the tube,
a potential file that is not there). Every error names the key and what is allowed. A diameter range of
CNT chiralities (families.cnt.chiralities_in_range_nm) is written out here as the explicit list, so no
reader after this one ever sees a range.

A config may be hostile or broken in ways a schema does not see: a file too large to read, YAML whose
aliases expand into billions of values or nest thousands deep, duplicate keys (`core.safe_yaml`),
NaN or infinite numbers (every comparison with NaN is false, so a range check passes it), `4.0` where
a whole number is meant, a sample count of 10^12, results written to `/etc`. Each is refused with one
line per problem naming the key; values are clipped and at most MAX_LISTED problems are listed, so an
error is never longer than MAX_MESSAGE bytes whatever the input.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import re
import reprlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from ..core import safe_yaml
from ..core.atomic import canonical_json
from ..core.errors import ConfigError
from ..core.families import FAMILIES, FILM_FAMILIES, ORDERINGS
from ..core.tasks import TASKS
from ..core.tubes import GRAPHENE_A, tube_diameter_A, tubes_in_diameter_range

SECTION_FILES = {
    "families": "families.schema.yaml",
    "imaging": "imaging.schema.yaml",
    "learning": "learning.schema.yaml",
    "apply": "apply.schema.yaml",
}

#: the largest config file read; a campaign config is a few kB
MAX_FILE_BYTES = 1 << 20
#: the longest line one problem takes in a ConfigError (UTF-8 bytes)
MAX_LINE = 200
#: problems listed in a ConfigError; the others are counted
MAX_LISTED = 5
#: the longest ConfigError message (UTF-8 bytes)
MAX_MESSAGE = 1000
#: items in one list of a config (a written-out chirality range has at most MAX_RANGE_TUBES): bounds jsonschema's
#: uniqueItems, quadratic
MAX_ITEMS = 1000
#: whole numbers must fit 64 bits (a seed, a count); beyond that they are a typo or an attack
INT_LIMIT = 2**63
#: tubes a diameter range (families.cnt.chiralities_in_range_nm) may expand into: each is a class and a group;
#: [0.8, 1.4] nm holds 71, [0, 3] nm 475, and beyond a few hundred classes a range is a typo, not a campaign
MAX_RANGE_TUBES = 500
#: the range's key, as messages name it
RANGE_KEY = "families.cnt.chiralities_in_range_nm"
#: folders results may never be written to or under (unless the working directory itself is under one)
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys", "/dev", "/boot", "/var")


def schema_dir() -> Path:
    """The schema folder: in the repository (editable install) or packaged with the wheel."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parents[1] / "workflow" / "schemas", here / "schemas"):
        if (candidate / "config.schema.yaml").exists():
            return candidate
    raise FileNotFoundError("hrtemflow's config schema (workflow/schemas/config.schema.yaml) is missing")


@functools.cache
def load_schema() -> dict[str, Any]:
    """The full schema, with the section files inlined in place of their $ref."""
    folder = schema_dir()
    root = yaml.safe_load((folder / "config.schema.yaml").read_text())
    for key, filename in SECTION_FILES.items():
        root["properties"][key] = yaml.safe_load((folder / filename).read_text())
    _add_registry(root)
    return root


def _add_registry(root: dict) -> None:
    """The lists the registry owns, written nowhere else: every task of `hrtemflow.core.tasks` gets
    `learning.tasks.<task>` (the settings every task shares, described once as `$defs.task` in
    learning.schema.yaml) and is a choice of `apply.tasks`; the nanoalloy orderings are those of
    `hrtemflow.core.families`."""
    orderings = root["properties"]["families"]["properties"]["nanoalloy"]["properties"]["orderings"]
    orderings["items"] = {"enum": list(ORDERINGS)}
    orderings["default"] = list(ORDERINGS)
    learning = root["properties"]["learning"]
    template = learning.pop("$defs")["task"]
    tasks = learning["properties"]["tasks"]
    tasks["properties"] = {
        name: {**copy.deepcopy(template), "description": f"{t.description} ({t.kind}): training settings."}
        for name, t in TASKS.items()
    }
    root["properties"]["apply"]["properties"]["tasks"]["items"] = {"enum": list(TASKS)}


def _with_defaults(cls):
    """A validator class that fills `default`s into the instance while it validates."""
    validate_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return validators.extend(cls, {"properties": properties})


def _is_integer(checker, instance) -> bool:
    """JSON Schema's `integer` as Python's int: 4.0 is refused (the plan would fail on it with a TypeError)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictValidator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
)
_FillingValidator = _with_defaults(_StrictValidator)


class _Clipped(reprlib.Repr):
    """repr() of a config value, clipped: an error shows what was given, never a huge input whole."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 2, 40, 40, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 4

    def repr_int(self, x, level):
        if abs(x) >= 10**30:  # before repr: ints of more than 4300 digits cannot be printed at all
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


def _show(value: Any, width: int = 40) -> str:
    """A value as an error shows it: its repr, texts and lists clipped to about `width` characters and 4 items."""
    clipped = _Clipped()
    clipped.maxstring = clipped.maxother = width
    return clipped.repr(value)


def _clip(text: str, limit: int = MAX_LINE) -> str:
    """One line of at most `limit` UTF-8 bytes."""
    text = " ".join(str(text).split())
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def _where(source: Any) -> str:
    """A file name for messages: its end, if long (where a file's name is)."""
    text = " ".join(str(source).split()).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 100 else "..." + text[-97:]


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _key(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _NAME.fullmatch(part):
            out += f".{part}" if out else part
        else:  # a key no schema has: shown as given, clipped
            out += f"[{_show(part)}]"
    return out or "(top level)"


def _allowed(error) -> str:
    s = error.schema if isinstance(error.schema, dict) else {}
    bits = []
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"allowed keys here: {', '.join(allowed)}"
    if "enum" in s:
        bits.append("one of " + ", ".join(repr(v) for v in s["enum"]))
    if "type" in s:
        bits.append(f"type {s['type']}")
    for word, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if word in s:
            bits.append(f"{sym} {s[word]}")
    if "minItems" in s:
        bits.append(f"at least {s['minItems']} item(s)")
    if "maxItems" in s:
        bits.append(f"at most {s['maxItems']} item(s)")
    text = "allowed: " + ", ".join(bits) if bits else ""
    if s.get("description"):
        text += f" ({s['description'].strip()})" if text else s["description"].strip()
    return text


def _what(err) -> str:
    """jsonschema's message with the offending value clipped (its messages start with the value's whole repr)."""
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        extras = [k for k in err.instance if k not in known]
        names = ", ".join(_show(k, 20) for k in extras[:3])
        names += f" and {len(extras) - 3} more" if len(extras) > 3 else ""
        return f"Additional properties are not allowed ({names} {'was' if len(extras) == 1 else 'were'} unexpected)"
    if err.validator == "type" and isinstance(err.instance, float) and "integer" in str(err.validator_value):
        fix = "; write it without the decimal point" if err.instance.is_integer() else ""
        return f"{_show(err.instance)} is not a whole number{fix}"
    message = err.message
    whole = repr(err.instance)
    if message.startswith(whole):
        message = _show(err.instance) + message[len(whole) :]
    return message


def _schema_errors(instance: dict) -> list[str]:
    validator = _FillingValidator(load_schema())
    messages = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        allowed = _allowed(err)
        messages.append(_clip(f"{_key(err.absolute_path)}: {_what(err)}" + (f"; {allowed}" if allowed else "")))
    return messages


def _value_errors(raw: Any) -> list[str]:
    """Values no campaign has and a schema lets through or chokes on: NaN and infinity (every comparison
    with NaN is false, so `minimum` passes it), whole numbers beyond 64 bits, text that is not valid
    Unicode (a lone surrogate), lists too long for jsonschema's uniqueItems to check in time."""
    errors = []
    stack: list[tuple[tuple, Any]] = [((), raw)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping):
            for k, v in reversed(list(node.items())):
                stack.append(((*path, k), v))
                if isinstance(k, str) and not _is_unicode(k):
                    errors.append(f"{_key(path)}: key {_show(k)} is not valid Unicode text (a lone surrogate)")
        elif isinstance(node, (list, tuple)):
            if len(node) > MAX_ITEMS:
                errors.append(f"{_key(path)}: a list of {len(node):,} items; a config list has at most {MAX_ITEMS:,}")
                continue
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not -INT_LIMIT <= node < INT_LIMIT:
                errors.append(f"{_key(path)}: {_show(node)} is too large; whole numbers must lie within +-2**63")
        elif isinstance(node, float):
            if not math.isfinite(node):
                errors.append(
                    f"{_key(path)}: {node} is not a finite number (NaN and infinity are refused); give a number"
                )
        elif isinstance(node, str) and not _is_unicode(node):
            errors.append(f"{_key(path)}: {_show(node)} is not valid Unicode text (a lone surrogate)")
    return [_clip(e) for e in errors]


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk_ranges(schema: Mapping, inst: Any, path: tuple) -> Iterator[tuple[tuple, list]]:
    """Yield (path, value) for every config value whose schema is marked `x-range`."""
    if not isinstance(schema, Mapping):
        return
    if schema.get("x-range") and isinstance(inst, list):
        yield path, inst
    if isinstance(inst, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in inst:
                yield from _walk_ranges(sub, inst[name], (*path, name))


def _gives(raw: Any, *path: str) -> bool:
    """Whether the config as written has the key at `path`: asked before the schema fills in defaults, which
    cannot be told from a value the user wrote afterwards."""
    node = raw
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _expand_chirality_range(cfg: dict, listed: bool) -> list[str]:
    """Write families.cnt.chiralities_in_range_nm out as the explicit families.cnt.chiralities (by diameter,
    then chiral angle: `core.tubes.tubes_in_diameter_range`), so that the plan, the task registry, the cost
    estimate and the specs read one explicit list, and a range writes the very specs of its list.

    `listed`: the config as written gives chiralities too. That is refused unless the list is the range's own
    (a validated config read again), so which tubes are made is never ambiguous. Returns the problems found.
    """
    cnt = cfg["families"]["cnt"]
    span = cnt.get("chiralities_in_range_nm")
    if span is None:
        return []
    d_min, d_max = span
    if d_min > d_max:
        return []  # reported with every other reversed x-range
    tubes = [[n, m] for n, m in tubes_in_diameter_range(d_min, d_max)]
    if listed and cnt["chiralities"] != tubes:
        return [
            "families.cnt: both chiralities and chiralities_in_range_nm are given; remove one (chiralities to make "
            "every tube in the range, chiralities_in_range_nm to make only the listed tubes)"
        ]
    if not tubes:
        return [f"{RANGE_KEY}: no tube (n, m) has a diameter in [{d_min}, {d_max}] nm{_neighbours(d_min, d_max)}"]
    if len(tubes) > MAX_RANGE_TUBES:
        return [
            f"{RANGE_KEY}: [{d_min}, {d_max}] nm holds {len(tubes):,} tubes, more than the {MAX_RANGE_TUBES} classes "
            "a range may make; narrow the range or list the tubes in families.cnt.chiralities"
        ]
    cnt["chiralities"] = tubes
    return []


def _neighbours(d_min: float, d_max: float) -> str:
    """The tubes just outside an empty diameter range, the fix an error offers ('; widen it (nearest: ...)')."""
    below = tubes_in_diameter_range(max(0.0, d_min - 0.3), d_min)
    above = tubes_in_diameter_range(d_max, d_max + 0.3)
    near = [f"({n},{m}) at {tube_diameter_A(n, m, GRAPHENE_A) / 10:.3f} nm" for n, m in (below[-1:] + above[:1])]
    return f"; widen it (nearest: {' and '.join(near)})" if near else "; widen it"


def _semantic_errors(cfg: dict, base: Path) -> list[str]:
    """Checks across keys that a JSON schema cannot express."""
    errors = []
    for path, value in _walk_ranges(load_schema(), cfg, ()):
        if len(value) == 2 and value[0] > value[1]:
            errors.append(f"{_key(path)}: range {value} is reversed; write it as [min, max]")

    errors += _results_errors(cfg["campaign"], base)

    fam = cfg["families"]
    total = md_samples(cfg)
    ceiling = cfg["campaign"]["max_samples"]
    if sum(total.values()) > ceiling:
        each = ", ".join(f"{f} {n:,}" for f, n in total.items() if n)
        errors.append(
            f"families: {sum(total.values()):,} MD samples in all, more than campaign.max_samples = {ceiling:,}: "
            f"lower the counts or raise campaign.max_samples ({each})"
        )
    if not any(fam[f]["enabled"] for f in FAMILIES):
        errors.append("families: every family is disabled; enable at least one of " + ", ".join(FAMILIES))

    cnt = fam["cnt"]
    for i, (n, m) in enumerate(cnt["chiralities"]):
        if m > n:
            errors.append(
                f"families.cnt.chiralities[{i}]: [{n}, {m}] has n < m; write chiral indices as [n, m] with n >= m (the "
                f"tube ({m},{n}) is the mirror image of ({n},{m}))"
            )
        elif n == 0:
            errors.append(f"families.cnt.chiralities[{i}]: [{n}, {m}] is not a tube; n must be >= 1")

    img = cfg["imaging"]
    if img["enabled"]:
        phys = img["families"]
        if cnt["enabled"]:
            fov = phys["cnt"]["fov_nm"][1]
            if cnt["structure"]["length_nm"] < fov:
                errors.append(
                    f"families.cnt.structure.length_nm: {cnt['structure']['length_nm']} nm is shorter than the largest "
                    f"CNT field of view imaging.families.cnt.fov_nm = {fov} nm; make the tube at least that long"
                )
        for family in FILM_FAMILIES:
            if fam[family]["enabled"] and phys[family]["support_film"]:
                if not fam["amorphous"]["enabled"]:
                    errors.append(
                        f"imaging.families.{family}.support_film: needs families.amorphous.enabled: true (the film is "
                        "taken from the amorphous family)"
                    )
                box = fam["amorphous"]["structure"]["box_nm"]
                fov = phys[family]["fov_nm"][1]
                if min(box[0], box[1]) < fov:
                    errors.append(
                        f"families.amorphous.structure.box_nm: {box[:2]} nm is smaller than the largest {family} field "
                        f"of view {fov} nm, so it cannot serve as a support film"
                    )
        if phys["amorphous"]["support_film"]:
            errors.append(
                "imaging.families.amorphous.support_film: an amorphous film is not put on another film; set it false "
                f"(films are for {' and '.join(FILM_FAMILIES)})"
            )

    learn = cfg["learning"]
    if learn["enabled"]:
        if not img["enabled"]:
            errors.append("learning.enabled: needs imaging.enabled: true (the networks learn from the images)")
        if learn["image_size"] not in img["sizes"]:
            errors.append(
                f"learning.image_size: {learn['image_size']} px is not one of the image sizes made, imaging.sizes = "
                f"{img['sizes']}; add it there or pick one of those"
            )
        if learn["split"]["val"] + learn["split"]["test"] >= 0.9:
            errors.append("learning.split: val + test must leave at least 10 % of structures for training")
        for task, tcfg in learn["tasks"].items():
            if not tcfg["enabled"]:
                continue
            entry = TASKS[task]
            if tcfg.get("shot_noise") == "fresh" and list(img["detector"]["recorded_pixel_scale"]) != [1.0, 1.0]:
                errors.append(
                    f"learning.tasks.{task}.shot_noise: fresh redraws white shot noise on each stored image, which "
                    "would undo imaging.detector.recorded_pixel_scale (noise detected at another pixel, then "
                    "resampled); use shot_noise: stored, or recorded_pixel_scale: [1, 1]"
                )
            if not any(fam[f]["enabled"] for f in entry.families):
                errors.append(
                    f"learning.tasks.{task}: needs family {' or '.join(entry.families)} enabled, or set "
                    f"learning.tasks.{task}.enabled: false"
                )
            elif entry.classes and len(classes := entry.classes(cfg)) < 2:
                errors.append(
                    f"learning.tasks.{task}: a classifier needs at least 2 classes in {entry.classes_from}, got "
                    f"{classes}"
                )
            size = learn["image_size"]
            if size % (2 ** tcfg["depth"]) != 0:
                errors.append(
                    f"learning.tasks.{task}.depth: {tcfg['depth']} downsampling stages do not fit image_size {size} px "
                    f"(it must be divisible by 2**depth = {2 ** tcfg['depth']})"
                )

    app = cfg["apply"]
    if app["enabled"]:
        if not app["input_dir"]:
            errors.append("apply.input_dir: apply.enabled is true but no input folder is given")
        elif not _exists(base / app["input_dir"], Path.is_dir):
            errors.append(f"apply.input_dir: folder {_show(app['input_dir'], 100)} does not exist")
        for task in app["tasks"]:
            if not (learn["enabled"] and learn["tasks"][task]["enabled"]):
                errors.append(f"apply.tasks: {task!r} is not trained (learning.tasks.{task}.enabled is false)")

    for path in sorted(set(potential_files(cfg).values())):
        if not _exists(base / path, Path.is_file):
            errors.append(
                f"potentials.directory: potential file {_show(path, 80)} is missing; run `hrtemflow potentials --out "
                f"{_show(cfg['potentials']['directory'], 60)}` to write it"
            )
    return [_clip(e) for e in errors]


def _exists(path: Path, test) -> bool:
    """`test(path)` (Path.is_file, Path.is_dir), False where the path cannot even be looked at (a name too long)."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def md_samples(cfg: dict) -> dict[str, int]:
    """MD samples per family of a validated config (0 for a disabled one), counted without making the plan."""
    fam = cfg["families"]
    na, cnt, am = fam["nanoalloy"], fam["cnt"], fam["amorphous"]
    return {
        "nanoalloy": na["samples_per_ordering"] * len(na["orderings"]) if na["enabled"] else 0,
        "cnt": cnt["samples_per_chirality"] * len(cnt["chiralities"]) if cnt["enabled"] else 0,
        "amorphous": am["samples"] if am["enabled"] else 0,
    }


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (OSError, RuntimeError, KeyError):
        return None


def _results_errors(campaign: dict, base: Path) -> list[str]:
    """campaign.results: no '..', names of at most 255 bytes, never the root, the home folder or a system
    folder, and inside the working directory unless campaign.results_outside_base says otherwise."""
    results = campaign["results"]
    shown = _show(results, 48)
    parts = Path(results).parts
    if ".." in parts:
        return [
            f"campaign.results: {shown} contains '..'; give a folder inside the working directory or an absolute path"
        ]
    if any(len(os.fsencode(p)) > 255 for p in parts):
        return [f"campaign.results: {shown} has a folder name longer than 255 bytes, which no file system allows"]
    try:
        here = Path(base).resolve()
        lexical = Path(os.path.normpath(here / results))
        target = lexical.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        return [f"campaign.results: {shown} cannot be resolved ({exc})"]
    home = _home()
    for where in dict.fromkeys((lexical, target)):
        if where == Path(where.anchor):
            return [f"campaign.results: {shown} is the file system's root; give a folder of its own"]
        if where == home:
            return [f"campaign.results: {shown} is the home folder itself; give a folder of its own"]
        for system in map(Path, SYSTEM_DIRS):
            if where.is_relative_to(system) and (where == system or not here.is_relative_to(system)):
                return [f"campaign.results: {shown} is in the system folder {system}; give a folder of your own"]
    if not target.is_relative_to(here) and not campaign["results_outside_base"]:
        return [
            f"campaign.results: {shown} is outside the working directory; set campaign.results_outside_base: true "
            f"to allow it (a scratch file system) or give a folder inside {_show(str(here))}"
        ]
    return []


def potential_files(cfg: dict) -> dict[str, str]:
    """Potential file per enabled family, as paths relative to the working directory."""
    d = cfg["potentials"]["directory"]
    fam = cfg["families"]
    out = {}
    if fam["nanoalloy"]["enabled"]:
        out["nanoalloy"] = f"{d}/AgCo_{cfg['potentials']['agco_set']}.eam.fs"
    for f in ("cnt", "amorphous"):
        if fam[f]["enabled"]:
            out[f] = f"{d}/C.tersoff"
    return out


def load_config(source: str | os.PathLike | Mapping, *, base: str | os.PathLike = ".") -> dict:
    """Read (if a path), fill defaults and validate; raise ConfigError listing every problem.

    `base` is the working directory the relative paths of the config refer to. A file is read with
    `core.safe_yaml` (bounded aliases and nesting, no duplicate keys); a mapping (Snakemake's parsed
    `--configfile`) is bounded by `safe_yaml.check_structure` before anything walks it.
    """
    if isinstance(source, Mapping):
        where = "config"
        safe_yaml.check_structure(source, where)
        raw = copy.deepcopy(dict(source))
    else:
        where = _where(source)
        raw = safe_yaml.load(_read(source, where), where)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: the top level must be a mapping of sections (campaign, families, imaging, ...), not "
            f"{type(raw).__name__}"
        )
    errors = _value_errors(raw)
    if not errors:
        raw.setdefault("campaign", {})
        listed = _gives(raw, "families", "cnt", "chiralities")
        errors = _schema_errors(raw)
    if not errors:
        errors = [_clip(e) for e in _expand_chirality_range(raw, listed)] + _semantic_errors(raw, Path(base))
    if errors:
        raise ConfigError(_listing(where, errors))
    return raw


def _read(source: str | os.PathLike, where: str) -> str:
    """A config file's text: at most MAX_FILE_BYTES (read no further, so /dev/zero is refused too), UTF-8."""
    try:
        with open(source, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {where} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(_clip(f"config file {where} cannot be read: {reason}", 300)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"config file {where} is larger than {MAX_FILE_BYTES:,} bytes (1 MiB), so it was not read; a campaign "
            "config is a few kB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); a config "
            "is a YAML text file"
        ) from None


def _listing(where: str, errors: list[str]) -> str:
    """The ConfigError text: a head line, then one line per problem, at most MAX_LISTED and MAX_MESSAGE bytes."""
    errors = list(dict.fromkeys(errors))
    n = len(errors)
    text = f"{where} is invalid ({n} problem{'s' if n > 1 else ''}); nothing was run:"
    for i, line in enumerate(errors[:MAX_LISTED]):
        more = f"\n  - (and {n - i - 1} more)" if i + 1 < n else ""
        if i and len((text + "\n  - " + line + more).encode("utf-8")) > MAX_MESSAGE:
            return text + f"\n  - (and {n - i} more)"
        text += "\n  - " + line
    return text + (f"\n  - (and {n - MAX_LISTED} more)" if n > MAX_LISTED else "")


def config_hash(cfg: Mapping) -> str:
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()
