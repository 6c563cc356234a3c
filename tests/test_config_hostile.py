"""Hostile config input (issue "Hostile input ..."): whatever a file or a dict holds, `load_config` returns
or raises a ConfigError of under 1 kB within 10 s, never another exception, and `hrtemflow validate`
answers with exit status 2, one `error:` line and no traceback.

Property tests generate the input: random nested structures, alias bombs, deep nesting, duplicate keys,
random text and bytes, and NaN, infinite, huge and non-integral numbers put at random keys of the demo
config. The committed corpus (tests/data/hostile/configs, its README lists each file) runs through the
real command line.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from hrtemflow.campaign.config import load_config, load_schema
from hrtemflow.cli import main
from hrtemflow.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "hostile" / "configs"
DEMO_TEXT = (ROOT / "config" / "config.yaml").read_text(encoding="utf-8")
DEMO = yaml.safe_load(DEMO_TEXT)

SETTINGS = settings(
    max_examples=60,
    deadline=None,  # each call is timed against 10 s below; pytest-timeout ends a real hang
    database=None,  # write nothing into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def checked_load(source, base: Path = ROOT) -> dict | str:
    """load_config's answer: the config, or the ConfigError's text after checking its bounds."""
    start = time.monotonic()
    try:
        answer: dict | str = load_config(source, base=base)
    except ConfigError as exc:
        answer = str(exc)
        assert len(answer.encode()) < 1024, answer[:2000]
        head, *problems = answer.split("\n")
        assert len(head.encode()) <= 500, head
        assert len(problems) <= 6, answer  # five problems and "(and N more)"
        for line in problems:
            assert line.startswith("  - ") and len(line.encode()) <= 204, line
    assert time.monotonic() - start < 10
    return answer


def cli_validate(path: Path) -> tuple[int, str, str]:
    """`hrtemflow validate PATH` in this process (the subprocess runs are in the corpus test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["validate", "--base", str(ROOT), str(path)])
    return rc, out.getvalue(), err.getvalue()


def assert_refused_by_cli(path: Path) -> str:
    rc, out, err = cli_validate(path)
    assert rc == 2, (out, err)
    assert [line for line in err.splitlines() if line.startswith("hrtemflow validate: error: ")] == [
        err.splitlines()[0]
    ], err
    assert "Traceback" not in err and len(err.encode()) < 1100, err
    return err


# ---------------------------------------------------------------------------------------------- strategies


def _paths(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*path, i))


DEMO_PATHS = [p for p in _paths(DEMO) if p]


def dotted(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def schema_at(path) -> dict:
    node = load_schema()
    for part in path:
        node = node.get("items", {}) if isinstance(part, int) else node.get("properties", {}).get(part, {})
    return node


def wants_integer(path) -> bool:
    t = schema_at(path).get("type")
    types = t if isinstance(t, list) else [t]
    return "integer" in types and "number" not in types


NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE = st.one_of(
    st.integers(min_value=2**63, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63) - 1),
    st.sampled_from([10**12, 2**63 - 1, 1e308, -1.7e308, 5e-324]),
    # past 4300 digits, which Python refuses to print: built, since Hypothesis prints its strategies' constants
    st.builds(lambda digits, sign: sign * 10**digits, st.sampled_from([4301, 5000]), st.sampled_from([1, -1])),
)
INTEGRAL = st.integers(min_value=-(10**6), max_value=10**6).map(float)
NUMBERS = st.one_of(NONFINITE, HUGE, INTEGRAL, st.floats(), st.integers())
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "\ud800", "a\nb", "x" * 5000, "/etc", "..", "-rf", "~"]))
KEYS = st.one_of(TEXT, st.integers(), st.none(), st.booleans(), st.floats())
TREES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda kids: st.one_of(st.lists(kids, max_size=6), st.dictionaries(KEYS, kids, max_size=6)),
    max_leaves=30,
)


def put(tree: dict, path: tuple, value, *, new_key=None) -> dict:
    """A copy of `tree` with `value` at `path`, or (new_key given) at a new key of the mapping at or above it."""
    tree = copy.deepcopy(tree)
    if new_key is not None:
        while path and not isinstance(_at(tree, path), dict):
            path = path[:-1]
        _at(tree, path)[new_key] = value
    else:
        _at(tree, path[:-1])[path[-1]] = value
    return tree


def _at(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def dump(tree) -> str:
    try:
        return yaml.safe_dump(tree, sort_keys=False, allow_unicode=False)
    except (yaml.YAMLError, ValueError, UnicodeError):  # PyYAML cannot write some of them (ints past 4300 digits)
        reject()


@st.composite
def alias_bombs(draw) -> tuple[str, int]:
    """YAML whose anchors refer to earlier ones: (text, values it would expand to)."""
    levels, fan = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    lines, sizes = [f"x0: &a0 [{', '.join(['lol'] * fan)}]"], [fan + 1]
    for i in range(1, levels):
        refs = [draw(st.integers(0, i - 1)) for _ in range(fan)]
        lines.append(f"x{i}: &a{i} [{', '.join(f'*a{r}' for r in refs)}]")
        sizes.append(1 + sum(sizes[r] for r in refs))
    where = draw(st.sampled_from(["top", "name", "merge"]))
    last = f"*a{levels - 1}"
    if where == "name":
        body = f"campaign:\n  name: {last}\n"
    elif where == "merge":
        body = f"campaign:\n  <<: {{name: {last}}}\n"
    else:
        body = f"laughs: {last}\n"
    return "aliases:\n" + "".join(f"  {line}\n" for line in lines) + body, sum(sizes)


@st.composite
def deep_nesting(draw) -> tuple[str, int]:
    depth = draw(st.integers(1, 3000))
    style = draw(st.sampled_from(["list", "flow map", "block"]))
    if style == "list":
        text = "campaign:\n  name: " + "[" * depth + "]" * depth + "\n"
    elif style == "flow map":
        text = "campaign: " + "{a: " * depth + "1" + "}" * depth + "\n"
    else:
        depth = min(depth, 400)
        text = "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "v\n"
    return text, depth


@st.composite
def duplicate_keys(draw) -> str:
    """The demo config with one of its `key: value` lines written twice in a row."""
    lines = DEMO_TEXT.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[A-Za-z_0-9]+:", line)]
    i = draw(st.sampled_from(keyed))
    line = lines[i]
    if line.split("#")[0].rstrip().endswith(":"):  # a section: an empty one of the same name before it
        line = line.split("#")[0].rstrip() + " {}\n"
    return "".join([*lines[:i], line, *lines[i:]])


# ---------------------------------------------------------------------------------------------- load_config


@SETTINGS
@given(data=st.data())
def test_demo_config_with_a_hostile_number_at_a_random_key(data, work):
    path = data.draw(st.sampled_from(DEMO_PATHS), label="path")
    value = data.draw(NUMBERS, label="value")
    cfg = put(DEMO, path, value)
    for source in (cfg, "file"):
        if source == "file":
            source = work / "number.yaml"
            source.write_text(dump(cfg), encoding="utf-8")
        answer = checked_load(source)
        if isinstance(value, float) and not math.isfinite(value):
            assert isinstance(answer, str) and f"{dotted(path)}: {value}" in answer, answer
        elif isinstance(value, float) and wants_integer(path):
            assert isinstance(answer, str) and f"{dotted(path)}: " in answer and "whole number" in answer, answer
        elif isinstance(value, int) and not -(2**63) <= value < 2**63 and not isinstance(source, Path):
            assert isinstance(answer, str) and dotted(path) in answer, answer


@SETTINGS
@given(data=st.data())
def test_demo_config_with_a_random_structure_at_a_random_key(data, work):
    path = data.draw(st.sampled_from(DEMO_PATHS), label="path")
    value = data.draw(TREES, label="value")
    new_key = data.draw(st.one_of(st.none(), KEYS), label="new key")
    cfg = put(DEMO, path, value, new_key=new_key)
    checked_load(cfg)
    source = work / "tree.yaml"
    source.write_text(dump(cfg), encoding="utf-8")
    checked_load(source)


@SETTINGS
@given(tree=TREES)
def test_a_random_structure_as_the_whole_config(tree, work):
    if isinstance(tree, dict):
        checked_load(tree)
    source = work / "whole.yaml"
    source.write_text(dump(tree), encoding="utf-8")
    checked_load(source)


@SETTINGS
@given(bomb=alias_bombs())
def test_aliases_never_expand_past_the_bound(bomb, work):
    text, values = bomb
    source = work / "aliases.yaml"
    source.write_text(text, encoding="utf-8")
    answer = checked_load(source)
    assert isinstance(answer, str)  # `aliases` is no section of a config
    if values > 20_000:
        assert "expands the config past 20,000 values" in answer or "more than 20,000 values" in answer, answer
        assert_refused_by_cli(source)


@SETTINGS
@given(nest=deep_nesting())
def test_deep_nesting_is_refused_not_a_recursion_error(nest, work):
    text, depth = nest
    source = work / "deep.yaml"
    source.write_text(text, encoding="utf-8")
    answer = checked_load(source)
    assert isinstance(answer, str)
    if depth > 33:
        assert "nested more than 32 levels deep" in answer, answer
        assert_refused_by_cli(source)


@SETTINGS
@given(text=duplicate_keys())
def test_a_duplicate_key_is_refused_naming_its_line(text, work):
    source = work / "twice.yaml"
    source.write_text(text, encoding="utf-8")
    answer = checked_load(source)
    assert isinstance(answer, str) and "is given twice (first on line" in answer, answer
    assert "given twice" in assert_refused_by_cli(source)


@SETTINGS
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_random_bytes_and_text(content, work):
    source = work / "random.yaml"
    if isinstance(content, str):
        source.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        source.write_bytes(content)
    answer = checked_load(source)
    rc, out, err = cli_validate(source)
    assert (rc, isinstance(answer, dict)) in ((0, True), (2, False)), (rc, out, err)
    if rc == 2:
        assert_refused_by_cli(source)


# ---------------------------------------------------------------------------------------------- the command line


def _corpus_table() -> list[tuple[str, str]]:
    rows = []
    for line in (CORPUS / "README.md").read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\| `([^`]+)` \| .* \| `(.+)` \|", line):
            rows.append((m.group(1), m.group(2)))
    return rows


CORPUS_TABLE = _corpus_table()


def test_the_corpus_readme_lists_every_file():
    listed = {name for name, _ in CORPUS_TABLE}
    assert len(listed) >= 9
    assert listed == {p.name for p in CORPUS.iterdir() if p.name != "README.md"}


def _validate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hrtemflow.cli", "validate", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert lines and lines[0].startswith("hrtemflow validate: error: "), res.stderr
    assert sum("error:" in line for line in lines) == 1, res.stderr
    assert len(res.stderr.encode()) < 1100, res.stderr
    return res.stderr


@pytest.mark.parametrize(("name", "fragment"), CORPUS_TABLE, ids=[n for n, _ in CORPUS_TABLE])
def test_hostile_corpus_is_refused_by_the_cli(name, fragment):
    start = time.monotonic()
    res = _validate(f"tests/data/hostile/configs/{name}")
    assert time.monotonic() - start < 10
    err = _one_error_line(res)
    assert fragment in err, err
    assert f"tests/data/hostile/configs/{name}" in err  # the file is named


SPECIAL = {
    # name: (content, expected fragment)
    "scalar.yaml": (b"just a string\n", "the top level must be a mapping of sections"),
    "list.yaml": (b"- campaign\n- families\n", "the top level must be a mapping of sections"),
    "latin1.yaml": ("campaign:\n  name: caf\u00e9\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset"),
    "nul.yaml": (b"campaign:\n  name: a\x00b\n", "is not valid YAML"),
    "ten_mb.yaml": (b"# padding\n" * 1_048_576, "is larger than 1,048,576 bytes (1 MiB), so it was not read"),
    "tags.yaml": (b"campaign: !!python/object/apply:os.system [echo PWNED]\n", "is not valid YAML"),
    "timestamp.yaml": (b"campaign:\n  name: !!timestamp 2026-13-45\n", "cannot be read as tag:yaml.org,2002:timestamp"),
    "digits.yaml": (b"campaign:\n  seed: " + b"9" * 5000 + b"\n", "line 2: '9999"),
    "two_documents.yaml": (b"campaign: {}\n---\ncampaign: {}\n", "is not valid YAML"),
}


@pytest.mark.parametrize("name", list(SPECIAL))
def test_files_that_are_no_config_are_refused_by_the_cli(name, tmp_path):
    content, fragment = SPECIAL[name]
    path = tmp_path / name
    path.write_bytes(content)
    assert fragment in _one_error_line(_validate(str(path)))


def test_unreadable_paths_are_refused_by_the_cli(tmp_path):
    assert "is larger than 1,048,576 bytes" in _one_error_line(_validate("/dev/zero"))  # endless: read no further
    assert "cannot be read: Is a directory" in _one_error_line(_validate(str(tmp_path)))
    assert "does not exist" in _one_error_line(_validate(str(tmp_path / "missing.yaml")))
    assert "x" * 200 not in _one_error_line(_validate(str(tmp_path / ("x" * 250 + ".yaml"))))  # the name clipped


def test_an_empty_file_is_the_default_campaign(tmp_path):
    """Every key has a default, so an empty config is the demo campaign's defaults: valid, nothing to refuse."""
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    res = _validate(str(path))
    assert res.returncode == 0 and "valid (campaign 'demo'" in res.stdout, res.stderr
