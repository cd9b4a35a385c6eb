"""Random and mutated YAML specs through the command line's code path (issue 7, Specs).

tests/test_specs.py feeds random documents to ``specs.parse_spec``; here
every example goes through :func:`hubexport.cli.main` in-process (the
console entry point: click parsing, ``load_specs``, the error -> exit code
mapping), as ``hubexport list --json --specs DIR`` and, when that accepts
the spec, ``hubexport fetch NAME --specs DIR`` against an empty mirror
directory (so the fetch stage's own checks of the spec run too, with no
network). Mutations here are textual (lines deleted, duplicated, swapped,
re-indented, values replaced by YAML oddities), unlike test_specs.py's.

Every outcome must be: exit 0 with valid output, or exit 2 with exactly one
line ``error: FILE:LINE: field: problem`` naming the spec file; for fetch,
exit 1 with one line naming the missing mirror file. Never a traceback,
never another exit code.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubexport.cli import main
from hubexport.specs import parse_spec_file

import reliability_support as rs

SPECS = {p.stem: p.read_text(encoding="utf-8") for p in sorted((rs.REPO / "specs").glob("*.yaml"))}
SPEC_ERROR = re.compile(r"^error: (?P<file>.+):(?P<line>\d+): (?P<field>\S+): (?P<problem>.+)$")

# Values a line's value is replaced with: YAML's odd corners.
ODD_VALUES = [
    "", "~", "null", "yes", "no", "on", "true", "0", "-1", "01", "0x1f", "0o17", "1_000", "1e3",
    ".inf", "-.nan", "1:30", "2016-08-28", "2016-08-28T00:00:00Z", "[]", "{}", "[1, 2",
    "{a: 1", "'unterminated", '"\\x00"', '"\\u2028"', "!!binary aGk=", "!!python/object:os.system",
    "!custom x", "&anchor value", "*undefined_alias", "<<: *x", "|", ">-", "| \n  text",
    "- item", "? key", "%TAG", "@reserved", "`backtick", "x" * 300, "ü ñ 中文", "\u00a0",
    "https://example.com/a b.tar.gz", "file:///etc/passwd", "ftp://h/x.tar.gz",
    "http:///x.tar.gz", "http://h/", "http://h/%2e%2e", "http://h/a%00b.tar.gz",
    "http://h/a%5Cb.tar.gz", "sha256:" + "0" * 63, "md5:" + "g" * 32, "sha1:" + "0" * 40,
    "SHA256:" + "A" * 64, "../escape", "/abs/path", "a//b", "9223372036854775808",
    "-9223372036854775809", "1.5", "[default, default]", "[serving_default]",
]
ODD_LINES = ["extra: 1", "  extra: 1", "---", "...", "%YAML 1.1", "? complex", "- stray",
             "key: [unclosed", "&a {x: 1}", "<<: *a", "\tindented: with a tab", "#", " ",
             "name: other_name", "checkpoint:", "modules: {}", "versions:\n  1: null"]


def _run(args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _check_spec_error(err: str, path: Path, text: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    m = SPEC_ERROR.match(lines[0])
    assert m, lines[0]
    assert m["file"] == str(path), lines[0]
    assert 1 <= int(m["line"]) <= max(1, len(text.splitlines()) + 1), lines[0]
    return m["field"]


class Outcomes:
    """Counts of what the examples did (for the report)."""

    def __init__(self):
        self.valid = self.rejected = 0
        self.fields: dict[str, int] = {}


def _outcome(tmp: Path, name: str, text: str, counts: Outcomes) -> None:
    """Runs list (and fetch) on one spec text and checks the outcome."""
    spec_dir = tmp / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    for old in spec_dir.iterdir():
        old.unlink()
    path = spec_dir / (name + ".yaml")
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    code, out, err = _run(["list", "--json", "--specs", spec_dir])
    assert "Traceback" not in err
    assert code in (0, 2), (code, err)
    if code == 2:
        field = _check_spec_error(err, path, text)
        counts.rejected += 1
        counts.fields[field.split(".")[0]] = counts.fields.get(field.split(".")[0], 0) + 1
        return
    rows = json.loads(out)
    # A spec file with a variant table defines the models NAME_...
    models = sorted({r["name"] for r in rows})
    assert rows and all(m == name or m.startswith(name + "_") for m in models)
    counts.valid += 1
    mirror, model = tmp / "empty-mirror", models[0]
    code, out, err = _run(["fetch", model, "--specs", spec_dir, "--mirror", mirror,
                           "--cache-dir", tmp / "cache"])
    assert "Traceback" not in err
    assert code in (1, 2), (code, err)
    if not parse_spec_file(path.read_bytes(), path)[model].checkpoint.pinned:
        # No published checksum: refused before anything is fetched (exit 2).
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("error: model %s: " % model), err
        assert "has no published checksum" in lines[0] and "--allow-unpinned" in lines[0], err
    elif code == 2:
        _check_spec_error(err, path, text)
    else:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: " + str(mirror)), err
        assert "does not exist" in lines[0]


@st.composite
def mutated_text(draw):
    name = draw(st.sampled_from(sorted(SPECS)))
    lines = SPECS[name].splitlines()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["value", "value", "delete", "duplicate", "swap", "indent",
                                   "insert", "truncate"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if op == "value":
            keyed = [j for j, l in enumerate(lines) if re.match(r"\s*[\w\-]+:", l)]
            j = draw(st.sampled_from(keyed)) if keyed else i
            key = lines[j].split(":", 1)[0]
            value = draw(st.sampled_from(ODD_VALUES) | st.text(max_size=12))
            lines[j] = "%s: %s" % (key, value)
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            delta = draw(st.integers(-4, 4))
            stripped = lines[i].lstrip(" ")
            lines[i] = " " * max(0, len(lines[i]) - len(stripped) + delta) + stripped
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(ODD_LINES) | st.text(max_size=20)))
        else:
            lines = lines[:i]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return name, newline.join(lines) + draw(st.sampled_from(["", newline]))


@st.composite
def generated_text(draw):
    """Specs assembled from the real fields with random values of the right shape or not."""
    name = draw(st.sampled_from(sorted(SPECS)))
    import yaml

    doc = yaml.safe_load(SPECS[name])
    scalar = (st.sampled_from(ODD_VALUES) | st.integers() | st.text(max_size=10)
              | st.booleans() | st.none())
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=3, unique=True)):
        if isinstance(doc[key], dict) and draw(st.booleans()):
            sub = draw(st.sampled_from(sorted(doc[key])))
            doc[key][sub] = draw(scalar)
        else:
            doc[key] = draw(scalar)
    style = draw(st.sampled_from([None, True, False]))
    return name, yaml.safe_dump(doc, default_flow_style=style, allow_unicode=True,
                                sort_keys=draw(st.booleans()))


def _property_case(case, what):
    return case.describe("Specs", what, "every outcome is a valid spec (exit 0, then fetch "
                         "exit 1 naming the missing mirror file) or exit 2 with one line "
                         "`FILE:LINE: field: problem`; never a traceback")


@pytest.mark.parametrize("strategy,what", [
    (mutated_text(), "hypothesis: shipped specs with lines deleted, duplicated, swapped, "
                     "re-indented, truncated, values replaced by YAML oddities"),
    (generated_text(), "hypothesis: shipped specs re-dumped with random values in "
                       "random fields, block or flow style"),
], ids=["mutated_text", "generated"])
def test_random_specs_through_the_cli(tmp_path, case, strategy, what):
    _property_case(case, what)
    counts = Outcomes()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(strategy)
    def run(example):
        name, text = example
        _outcome(tmp_path, name, text, counts)
        case.trial(True)

    run()
    assert counts.valid + counts.rejected == case.trials
    assert counts.rejected > 0
    top = sorted(counts.fields.items(), key=lambda kv: -kv[1])[:6]
    case.observed = ("%d examples: %d valid, %d rejected with FILE:LINE: field: problem "
                     "(fields: %s); no traceback" % (case.trials, counts.valid,
                                                     counts.rejected,
                                                     ", ".join("%s %d" % kv for kv in top)))
