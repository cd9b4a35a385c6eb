"""The command line: help texts, `list`, exit codes, and no TensorFlow where none is needed."""

import json
import subprocess
import sys

import pytest

_NO_TF = """
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
    from hubexport.specs import load_specs

    rows = json.loads(run("list", "--json").stdout)
    handles = {r["module_handle"] for r in rows}
    assert len(handles) == 8 * len(load_specs())  # 2 kinds x versions 1, 3, 4, 5 per model
    assert "google/imagenet/inception_v2/classification/3" in handles
    v3 = [r for r in rows if r["module_handle"] == "google/imagenet/inception_v2/classification/3"][0]
    assert v3["format"] == "hub" and v3["input_size"] == "variable"
    assert "image_classification_with_bn_hparams" in v3["signatures"]


def test_unknown_model_is_a_usage_error_without_traceback():
    result = run("build", "no_such_net")
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if not l.startswith("TF-MODULES")]
    from hubexport.specs import load_specs

    known = sorted(load_specs())
    assert "inception_v2" in known
    assert lines == ["error: unknown model no_such_net; known: %s (see 'hubexport list')"
                     % ", ".join(known)]


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
