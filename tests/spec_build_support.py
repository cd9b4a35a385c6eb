"""Modules built by the real CLI from a stand-in and an edited copy of its spec.

For tests of spec settings no shipped spec has at that place (a fixed input
size with bn_hparams signatures, fixed-size TF2 versions) on a small
existing net: :func:`build_with_edited_spec`.
"""

import os
import subprocess
import sys

import yaml


def cli(*args, check=True, timeout=1200):
    """Runs ``hubexport ARGS...`` in a subprocess; with ``check``, asserts exit code 0."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "hubexport.cli", *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def build_with_edited_spec(root, model, edit):
    """Builds every module of ``model``'s spec after ``edit(doc)`` changed it.

    Args:
      root: an empty directory (Path); receives ``mirror/`` (the stand-in,
        hubexport.standin.make_standin, seed 0, and its pinned spec
        directory), ``cache/`` and ``modules/``.
      model: a shipped single-model spec, e.g. ``"inception_v1"``.
      edit: callable changing the spec's parsed YAML (a dict) in place.

    Returns:
      (output directory, spec directory), Paths.
    """
    from hubexport.standin import make_standin
    from hubexport.tfimport import import_tensorflow

    import_tensorflow()
    standin = make_standin(model, root / "mirror", seed=0)
    spec_file = standin.spec_dir / ("%s.yaml" % model)
    doc = yaml.safe_load(spec_file.read_text())
    edit(doc)
    spec_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    output = root / "modules"
    cli("build", model, "--specs", standin.spec_dir, "--mirror", root / "mirror",
        "--cache-dir", root / "cache", "--output", output)
    return output, standin.spec_dir
