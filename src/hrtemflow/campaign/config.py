"""Load, complete and validate a campaign config: the one source of truth for every parameter.

Validation happens once, before any job: the JSON schema (types, ranges, enums, defaults) and then
the checks a schema cannot express (reversed ranges, n < m, a field of view larger than the tube,
a potential file that is not there). Every error names the key and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from ..core.atomic import canonical_json
from ..core.errors import ConfigError
from ..core.families import FAMILIES, ORDERINGS
from ..core.tasks import TASKS

SECTION_FILES = {
    "families": "families.schema.yaml",
    "imaging": "imaging.schema.yaml",
    "learning": "learning.schema.yaml",
    "apply": "apply.schema.yaml",
}


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


_FillingValidator = _with_defaults(Draft202012Validator)


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
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


def _schema_errors(instance: dict) -> list[str]:
    validator = _FillingValidator(load_schema())
    messages = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        allowed = _allowed(err)
        messages.append(f"{_key(err.absolute_path)}: {err.message}" + (f"; {allowed}" if allowed else ""))
    return messages


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


def _semantic_errors(cfg: dict, base: Path) -> list[str]:
    """Checks across keys that a JSON schema cannot express."""
    errors = []
    for path, value in _walk_ranges(load_schema(), cfg, ()):
        if len(value) == 2 and value[0] > value[1]:
            errors.append(f"{_key(path)}: range {value} is reversed; write it as [min, max]")

    results = cfg["campaign"]["results"]
    if ".." in Path(results).parts:
        errors.append(
            f"campaign.results: {results!r} contains '..'; give a folder inside the working directory or an absolute "
            "path"
        )

    fam = cfg["families"]
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
        if fam["nanoalloy"]["enabled"] and phys["nanoalloy"]["support_film"]:
            if not fam["amorphous"]["enabled"]:
                errors.append(
                    "imaging.families.nanoalloy.support_film: needs families.amorphous.enabled: true (the film is "
                    "taken from the amorphous family)"
                )
            box = fam["amorphous"]["structure"]["box_nm"]
            fov = phys["nanoalloy"]["fov_nm"][1]
            if min(box[0], box[1]) < fov:
                errors.append(
                    f"families.amorphous.structure.box_nm: {box[:2]} nm is smaller than the largest nanoalloy field of "
                    f"view {fov} nm, so it cannot serve as a support film"
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
        elif not (base / app["input_dir"]).is_dir():
            errors.append(f"apply.input_dir: folder {app['input_dir']!r} does not exist")
        for task in app["tasks"]:
            if not (learn["enabled"] and learn["tasks"][task]["enabled"]):
                errors.append(f"apply.tasks: {task!r} is not trained (learning.tasks.{task}.enabled is false)")

    for path in sorted(set(potential_files(cfg).values())):
        if not (base / path).is_file():
            errors.append(
                f"potentials.directory: potential file {path} is missing; run `hrtemflow potentials --out "
                f"{cfg['potentials']['directory']}` to write it"
            )
    return errors


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

    `base` is the working directory the relative paths of the config refer to.
    """
    where = "config"
    if isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        where = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {where} does not exist") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {where} cannot be read: {exc}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: the top level must be a mapping of sections (campaign, families, imaging, ...), not "
            f"{type(raw).__name__}"
        )
    raw.setdefault("campaign", {})
    errors = _schema_errors(raw)
    if not errors:
        errors = _semantic_errors(raw, Path(base))
    if errors:
        listing = "\n  - ".join(errors)
        raise ConfigError(
            f"{where} is invalid ({len(errors)} problem{'s' if len(errors) > 1 else ''}); nothing was run:\n  - "
            f"{listing}"
        )
    return raw


def config_hash(cfg: Mapping) -> str:
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()
