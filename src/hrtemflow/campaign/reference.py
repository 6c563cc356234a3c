"""config/README.md: every config key with its type, allowed values, default and meaning, written
from the schema's own descriptions (`hrtemflow config-doc`), so the reference never drifts from what
`hrtemflow validate` checks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from .config import load_schema

HEADER = """# Campaign configuration reference

Generated from `workflow/schemas/*.schema.yaml` by `hrtemflow config-doc` (do not edit by hand;
`make test` checks it is current). A campaign is one YAML file; every key below is optional unless
marked required, and a key left out takes its default. `hrtemflow validate CONFIG` checks a file
against exactly these rules (and the cross-key checks listed at the end) before anything runs.
`config/config.yaml` is the demo; `config/bench-*.yaml` are the learning benches;
`config/campaign-seed.yaml` is a full campaign.

Ranges written `[min, max]` are drawn uniformly per sample (or per image) and must not be reversed.
"""

CROSS_KEY_CHECKS = """## Checks across keys

Besides the rules above, `hrtemflow validate` refuses:
- a file over 1 MiB, text that is not UTF-8, YAML aliases that expand past 20,000 values, nesting deeper
  than 32 levels and a key given twice; NaN or infinite numbers anywhere; a float where an integer is meant;
- a campaign of more MD samples than `campaign.max_samples`; `campaign.results` outside the working
  directory (unless `campaign.results_outside_base`), the root, the home folder or a system folder;
- a reversed range `[max, min]`; `campaign.results` containing `..`;
- every family disabled; a chirality `[n, m]` with `n < m` or `n = 0`;
- a CNT shorter than the largest CNT field of view; a nanoalloy support film without the amorphous
  family, or with amorphous boxes smaller than the nanoalloy field of view;
- learning without imaging; `learning.image_size` not among `imaging.sizes`; val + test >= 0.9;
  a task without any of its families enabled; a classifier with fewer than 2 classes; an image size
  not divisible by `2**depth`;
- `apply.enabled` without an existing `apply.input_dir`, or an apply task that is not trained;
- a potential file that is not there (`hrtemflow potentials` writes them).
"""


def _type(s: Mapping[str, Any]) -> str:
    if "enum" in s:
        return "one of " + ", ".join(f"`{v}`" for v in s["enum"])
    t = s.get("type", "")
    if isinstance(t, list):
        t = " or ".join(t)
    if t == "array":
        item = s.get("items", {})
        inner = _type(item) if isinstance(item, Mapping) else ""
        kind = "range [min, max] of " if s.get("x-range") else "list of "
        return kind + (inner or "values")
    return t or "any"


def _bounds(s: Mapping[str, Any]) -> str:
    bits = []
    for word, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if word in s:
            bits.append(f"{sym} {s[word]}")
    item = s.get("items")
    if isinstance(item, Mapping):
        bits += [f"each {b}" for b in _bounds(item).split(", ") if b]
    if "minItems" in s and "x-range" not in s:
        bits.append(f"at least {s['minItems']} item(s)")
    if "pattern" in s:
        bits.append(f"matching `{s['pattern']}`")
    return ", ".join(bits)


def _rows(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, sub in (schema.get("properties") or {}).items():
        key = f"{path}.{name}" if path else name
        yield key, sub
        if sub.get("type") == "object" and sub.get("properties"):
            yield from _rows(sub, key)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def schema_markdown() -> str:
    """The reference as Markdown: one section per top-level section, one table row per key."""
    schema = load_schema()
    out = [HEADER]
    for section, sub in schema["properties"].items():
        out.append(f"## `{section}`\n")
        if sub.get("description"):
            out.append(_cell(sub["description"]) + "\n")
        out.append("| key | type | allowed | default | meaning |")
        out.append("|---|---|---|---|---|")
        for key, s in _rows(sub, section):
            if s.get("type") == "object" and s.get("properties"):
                out.append(f"| **`{key}`** | section | | | {_cell(s.get('description', ''))} |")
                continue
            default = (
                f"`{json.dumps(s['default'])}`"
                if "default" in s
                else ("required" if key in schema.get("required", []) else "")
            )
            out.append(
                f"| `{key}` | {_cell(_type(s))} | {_cell(_bounds(s))} | {_cell(default)} | "
                f"{_cell(s.get('description', ''))} |"
            )
        out.append("")
    out.append(CROSS_KEY_CHECKS)
    return "\n".join(out).rstrip() + "\n"
