"""The command line: help texts, `list`, exit codes, and no TensorFlow where none is needed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import zoo_facts

# The models of ZOO.md section 1 by module versions: part 1 (versions 1, 3, 4,
# 5), MobileNet V1 (1, 3, 4, 5) and V2 (1, 2, 3, 4, 5).
PART_1 = ["inception_resnet_v2", "inception_v1", "inception_v2", "inception_v3",
          "resnet_v1_101", "resnet_v1_152", "resnet_v1_50", "resnet_v2_101", "resnet_v2_152",
          "resnet_v2_50"]
MOBILENETS = zoo_facts.expected_models()
# How a usage error names the known models, compactly (ZOO.md's own notation).
KNOWN = ("inception_resnet_v2, inception_v1, inception_v2, inception_v3, "
         "mobilenet_v1_{025,050,075,100}_{128,160,192,224}, "
         "mobilenet_v2_{035,050,075,100}_{96,128,160,192,224}, mobilenet_v2_{130,140}_224, "
         "resnet_v1_101, resnet_v1_152, resnet_v1_50, resnet_v2_101, resnet_v2_152, resnet_v2_50")

_NO_TF = zoo_facts.ARCHITECTURES_PRELUDE + """
import sys
from hubexport.cli import main
sys.argv = ["hubexport"] + sys.argv[1:]
try:
    main()
except SystemExit as e:
    code = e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
print("TF-MODULES:", loaded, file=sys.stderr)
sys.exit(code)
"""


def run(*args, env=None):
    return subprocess.run([sys.executable, "-c", _NO_TF, *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"], ["build", "--help"],
                                  ["fetch", "--help"]])
def test_help_and_list_do_not_import_tensorflow(args):
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "TF-MODULES: []" in result.stderr


def test_every_command_help_has_an_example():
    from click.testing import CliRunner

    from hubexport.cli import cli

    runner = CliRunner()
    for name, command in cli.commands.items():
        if command.hidden:
            continue
        out = runner.invoke(cli, [name, "--help"]).output
        assert "Example" in out, name
        assert "Exit codes" in out, name


def test_list_json_covers_the_family():
    rows = json.loads(run("list", "--json").stdout)
    assert sorted({r["name"] for r in rows}) == sorted(PART_1 + list(MOBILENETS))
    versions = {}
    for r in rows:
        versions.setdefault(r["name"], set()).add((r["kind"], r["version"]))
        assert r["module_handle"] == "google/imagenet/%s/%s/%d" % (r["name"], r["kind"],
                                                                   r["version"])
    for name, got in versions.items():
        numbers = [1, 2, 3, 4, 5] if name.startswith("mobilenet_v2") else [1, 3, 4, 5]
        assert got == {(k, v) for k in ("classification", "feature_vector") for v in numbers}
    assert len(rows) == len({r["module_handle"] for r in rows}) == 10 * 8 + 16 * 8 + 22 * 10
    v3 = [r for r in rows if r["module_handle"] == "google/imagenet/inception_v2/classification/3"][0]
    assert v3["format"] == "hub" and v3["input_size"] == "variable"
    assert "image_classification_with_bn_hparams" in v3["signatures"]
    for r in rows:
        if r["name"] in MOBILENETS:
            facts = MOBILENETS[r["name"]]
            assert (r["architecture"], r["image_size"], r["feature_size"], r["num_classes"]) == (
                facts["architecture"], facts["resolution"], facts["feature_size"], 1001)
    mv2_3 = [r for r in rows if r["module_handle"]
             == "google/imagenet/mobilenet_v2_130_224/classification/3"][0]
    assert mv2_3["input_size"] == "fixed" and "image_classification_with_bn_hparams" in mv2_3[
        "signatures"]


def test_list_json_feeds_the_release_matrix():
    """The release workflow's matrix step, run on our output: one job per (model, kind)."""
    import yaml

    workflow = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "release.yml"
    step = [s for s in yaml.safe_load(workflow.read_text())["jobs"]["matrix"]["steps"]
            if s.get("id") == "list"][0]["run"]
    assert "hubexport list --specs \"$SPECS_DIR\" --json > modules.json" in step
    script = step[step.index("import json"):step.index("EOF", step.index("import json"))]
    rows = run("list", "--json").stdout
    out = subprocess.run([sys.executable, "-c", script], input=None, capture_output=True,
                         text=True, cwd=_write(rows), check=True).stdout
    include = json.loads(out.split("include=", 1)[1])
    assert len(include) == 2 * 48
    assert {"model": "mobilenet_v2_035_96", "kind": "feature_vector"} in include


def _write(text):
    import tempfile

    directory = tempfile.mkdtemp(prefix="matrix-")
    Path(directory, "modules.json").write_text(text)
    return directory


def test_list_text_shows_every_model_with_its_feature_size():
    out = run("list").stdout
    for name, facts in MOBILENETS.items():
        assert ("%s (%s, %dx%d pixels, 1001 classes, %d features)"
                % (name, facts["architecture"], facts["resolution"], facts["resolution"],
                   facts["feature_size"])) in out.splitlines(), name
    assert "  google/imagenet/mobilenet_v2_140_224/classification  versions 1 (hub, fixed), " \
           "2 (hub, fixed), 3 (hub, fixed), 4 (saved_model_2, fixed), " \
           "5 (saved_model_2, fixed)" in out.splitlines()


def _models(*args):
    result = run("list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return list(dict.fromkeys(r["name"] for r in json.loads(result.stdout)))


def test_patterns_select_the_matching_models():
    assert _models("mobilenet_v1_*_224") == [
        "mobilenet_v1_025_224", "mobilenet_v1_050_224", "mobilenet_v1_075_224",
        "mobilenet_v1_100_224"]
    assert _models("mobilenet_v1_*_128") == [
        "mobilenet_v1_025_128", "mobilenet_v1_050_128", "mobilenet_v1_075_128",
        "mobilenet_v1_100_128"]
    # Several names and patterns: in the order given, each model once.
    assert _models("mobilenet_v2_140_224", "mobilenet_v2_1[34]0_*", "inception_v2",
                   "inception_v?") == [
        "mobilenet_v2_140_224", "mobilenet_v2_130_224", "inception_v2", "inception_v1",
        "inception_v3"]
    assert len(_models("mobilenet_v2_*")) == 22 and len(_models("*")) == 48
    upper = run("list", "MOBILENET_V1_*")  # patterns are case-sensitive
    assert upper.returncode == 2 and "no model matches 'MOBILENET_V1_*'" in upper.stderr


def test_build_and_fetch_resolve_patterns_as_list_does():
    from hubexport import cli

    got = [s.name for s in cli._load_specs(None, ["mobilenet_v1_*_224", "mobilenet_v1_100_*"])]
    assert got == _models("mobilenet_v1_*_224", "mobilenet_v1_100_*")
    assert got[-3:] == ["mobilenet_v1_100_128", "mobilenet_v1_100_160", "mobilenet_v1_100_192"]
    # One model, one of its versions (mobilenet_v2 has 1-5).
    result = run("build", "mobilenet_v2_100_224", "--version", "6")
    assert result.returncode == 2
    assert _errors(result) == ["error: model mobilenet_v2_100_224 has no version 6; "
                               "defined: 1, 2, 3, 4, 5"]


def _errors(result):
    return [l for l in result.stderr.splitlines() if not l.startswith("TF-MODULES")]


@pytest.mark.parametrize("command", ["build", "fetch", "list"])
def test_pattern_matching_nothing_is_a_usage_error(command, tmp_path):
    result = run(command, "mobilenet_v3_*", "--specs", str(Path(__file__).parents[1] / "specs"))
    assert result.returncode == 2
    assert _errors(result) == ["error: no model matches 'mobilenet_v3_*'; known: %s "
                               "(see 'hubexport list')" % KNOWN]
    assert "TF-MODULES: []" in result.stderr


def test_unknown_model_is_a_usage_error_without_traceback():
    result = run("build", "no_such_net")
    assert result.returncode == 2
    assert _errors(result) == ["error: unknown model no_such_net; known: %s "
                               "(see 'hubexport list')" % KNOWN]


def test_no_model_named_is_a_usage_error():
    result = run("fetch")
    assert result.returncode == 2
    assert _errors(result) == ["error: name a model or a pattern; known: %s "
                               "(see 'hubexport list')" % KNOWN]
    assert _errors(run("build")) == ["error: name a model or a pattern (or pass --all); known: "
                                     "%s (see 'hubexport list')" % KNOWN]


def test_unknown_version_is_a_usage_error(tmp_path):
    result = run("build", "inception_v2", "--version", "2", "--output", str(tmp_path))
    assert result.returncode == 2
    assert "has no" in result.stderr and "Traceback" not in result.stderr


def test_bad_spec_reports_file_line_field(tmp_path):
    spec = (tmp_path / "inception_v2.yaml")
    from hubexport.specs import default_specs_dir

    text = (default_specs_dir() / "inception_v2.yaml").read_text()
    spec.write_text(text.replace("image_size: 224", "image_size: big"))
    result = run("list", "--specs", str(tmp_path))
    assert result.returncode == 2
    line = text.splitlines().index("image_size: 224") + 1
    assert result.stderr.startswith("error: %s:%d: image_size: " % (spec, line)), result.stderr
    assert "Traceback" not in result.stderr


def test_click_usage_error_exits_2():
    result = run("build", "--kind", "nonsense")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["fetch", "build"])
def test_allow_unpinned_is_documented(command):
    from click.testing import CliRunner

    from hubexport.cli import cli

    out = " ".join(CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output.split())
    assert "--allow-unpinned" in out
    assert "[env: HUBEXPORT_ALLOW_UNPINNED=1]" in out
    assert "checksum: unpublished is refused (exit 2) unless --allow-unpinned" in out
    assert "HUBEXPORT_ALLOW_UNPINNED=1 (as --allow-unpinned)" in out  # the epilog


def test_allow_unpinned_env_must_be_a_boolean(tmp_path):
    import os

    env = dict(os.environ, HUBEXPORT_ALLOW_UNPINNED="maybe")
    result = run("fetch", "inception_v2", "--cache-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "maybe" in result.stderr and "is not a valid boolean" in result.stderr
    assert list(tmp_path.iterdir()) == []
