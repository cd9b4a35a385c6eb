"""The release workflow (.github/workflows/release.yml) runs locally as written (issue 6).

The test reads the workflow with PyYAML and runs the `run:` steps that call
hubexport, job by job (matrix -> one build matrix entry -> publish), with
bash the way GitHub runs them (``bash --noprofile --norc -eo pipefail``).
Only variables the workflow itself declares in its ``env:`` are overridden:
SPECS_DIR (the stand-in specs), HUBEXPORT_MIRROR (the loopback mirror),
HUBEXPORT_CACHE, MODULES_DIR, REGISTRY_DIR (tmp directories) and SERVE_PORT
(a free port); ``${{ matrix.* }}`` in a job's ``env:`` is filled in from the
matrix the workflow's own first job printed. ``uses:`` steps (checkout,
setup-python, cache, artifacts) are GitHub's and are checked, not run;
locally the jobs share one directory, which is what the artifact steps do
between runners. The only other `run:` step is ``pip install -e .``.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
INSTALL = "python -m pip install -e ."


def load_workflow():
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def evaluate_env(mapping, matrix, overrides):
    """A job's or the workflow's env: as the runner would see it, with overrides."""
    env = {}
    for key, value in (mapping or {}).items():
        if key in overrides:
            env[key] = overrides[key]
            continue

        def substitute(match, key=key):
            expression = match.group(1)
            assert expression.startswith("matrix."), (
                "env %s uses ${{ %s }}, which only GitHub can evaluate; override it" % (
                    key, expression))
            return str(matrix[expression[len("matrix."):]])

        env[key] = EXPRESSION.sub(substitute, str(value))
    return env


def run_steps(job_name, job, env, cwd):
    """Runs the job's hubexport `run:` steps; returns their names."""
    ran = []
    for step in job["steps"]:
        if "uses" in step:
            continue
        script = step["run"]
        assert "${{" not in script, "%s/%s: pass values through env:" % (job_name, step["name"])
        if "hubexport" not in script:
            assert script.strip() == INSTALL, (job_name, step["name"])
            continue
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, "%s/%s failed (%d):\n%s\n%s" % (
            job_name, step["name"], proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
        ran.append(step["name"])
    return ran


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uses(job, action):
    return [s for s in job["steps"] if s.get("uses", "").startswith(action + "@")]


def test_workflow_shape():
    wf = load_workflow()
    assert set(wf["on"]) == {"workflow_dispatch", "push"}
    jobs = wf["jobs"]
    assert list(jobs) == ["matrix", "build", "publish"]
    assert jobs["matrix"]["outputs"]["include"] == "${{ steps.list.outputs.include }}"
    assert [s.get("id") for s in jobs["matrix"]["steps"]].count("list") == 1
    assert jobs["build"]["needs"] == "matrix" and jobs["publish"]["needs"] == "build"
    assert jobs["build"]["strategy"]["matrix"]["include"] == \
        "${{ fromJSON(needs.matrix.outputs.include) }}"
    (cache,) = uses(jobs["build"], "actions/cache")
    assert cache["with"]["path"] == "${{ env.HUBEXPORT_CACHE }}"
    assert "hashFiles('specs/*.yaml')" in cache["with"]["key"]
    upload = [s for s in uses(jobs["build"], "actions/upload-artifact")
              if s["with"]["path"] == "${{ env.MODULES_DIR }}"]
    assert len(upload) == 1 and upload[0]["with"]["include-hidden-files"] is True  # the stamps
    (download,) = uses(jobs["publish"], "actions/download-artifact")
    assert download["with"]["path"] == "${{ env.MODULES_DIR }}"
    assert download["with"]["merge-multiple"] is True
    assert [s["with"]["path"] for s in uses(jobs["publish"], "actions/upload-artifact")] == [
        "${{ env.REGISTRY_DIR }}", "*.json"]


@pytest.mark.slow
def test_workflow_runs_locally_as_written(family, mirror, tmp_path):
    from hubexport.specs import load_specs

    wf = load_workflow()
    jobs = wf["jobs"]
    work = tmp_path / "workspace"
    work.mkdir()
    overrides = {"SPECS_DIR": str(family.specs_dir), "HUBEXPORT_MIRROR": mirror.base_url,
                 "HUBEXPORT_CACHE": str(tmp_path / "cache"),
                 "MODULES_DIR": str(work / "modules"), "REGISTRY_DIR": str(work / "registry"),
                 "SERVE_PORT": str(free_port())}
    assert set(overrides) <= set(wf["env"]), "override only what the workflow declares"
    base = dict(os.environ)
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    base.pop("HUBEXPORT_MIRROR", None)
    github_output = tmp_path / "github_output"
    github_output.touch()
    base["GITHUB_OUTPUT"] = str(github_output)

    # Job 1: the matrix, from `hubexport list --json`.
    env = dict(base, **evaluate_env(wf["env"], {}, overrides))
    assert run_steps("matrix", jobs["matrix"], env, work) == ["List the (model, kind) pairs to build"]
    outputs = dict(line.split("=", 1) for line in github_output.read_text().splitlines())
    include = json.loads(outputs["include"])
    expected = sorted({(s.name, t.kind) for s in load_specs(family.specs_dir).values()
                       for t in s.targets()})
    assert [(e["model"], e["kind"]) for e in include] == expected
    assert len(include) == 2 * len(load_specs(family.specs_dir))

    # Job 2: one matrix entry of the build (each entry runs the same steps).
    entry = {"model": "inception_v2", "kind": "classification"}
    assert entry in include
    env = dict(base, **evaluate_env(wf["env"], entry, overrides),
               **evaluate_env(jobs["build"]["env"], entry, {}))
    assert run_steps("build", jobs["build"], env, work) == ["Build", "Verify the built modules"]
    built = json.loads((work / "build-inception_v2-classification.json").read_text())
    assert [r["status"] for r in built] == ["built"] * 4
    assert (tmp_path / "cache" / "downloads" / "inception_v2_2016_08_28.tar.gz").is_file()
    verified = json.loads((work / "verify-inception_v2-classification.json").read_text())
    assert verified["ok"] and verified["kind"] == "output" and len(verified["modules"]) == 4

    # Job 3: publish, verify the registry, serve it and verify it over HTTP.
    env = dict(base, **evaluate_env(wf["env"], {}, overrides))
    assert run_steps("publish", jobs["publish"], env, work) == [
        "Publish", "Verify the registry", "Serve the registry and verify it over HTTP"]
    published = json.loads((work / "publish.json").read_text())
    assert [m["status"] for m in published["modules"]] == ["published"] * 4
    assert (work / "registry" / "index.json").is_file()
    for name, kind in (("verify-registry.json", "registry"), ("verify-served.json", "registry-url")):
        report = json.loads((work / name).read_text())
        assert report["ok"] and report["kind"] == kind and len(report["modules"]) == 4, name
    served = json.loads((work / "serve.json").read_text())
    assert served["url"] == "http://127.0.0.1:%s" % overrides["SERVE_PORT"]
    with socket.socket() as s:  # the step's trap stopped the server
        assert s.connect_ex(("127.0.0.1", int(overrides["SERVE_PORT"]))) != 0
