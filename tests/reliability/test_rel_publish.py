"""`hubexport publish` over a damaged registry (issue 7, Publish).

A registry is published once from the stand-in's v3 module; each test
copies it, damages it in one way, and publishes again with the real
command line. Expected: exit 1, one line saying the registry is damaged,
naming the file and the problem, and that nothing was published; the
registry is byte-for-byte unchanged (nothing trusted, nothing half-written).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import reliability_support as rs

HANDLE = "google/imagenet/inception_v2/classification/3"


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture(scope="module")
def published(tmp_path_factory, v3_module):
    """A registry holding the v3 module, published by the CLI."""
    root = tmp_path_factory.mktemp("published")
    out = root / "out"
    shutil.copytree(v3_module["out"], out)
    registry = root / "registry"
    rs.run_cli(["publish", out, "--registry", registry], timeout=600).check_ok()
    return out, registry


def _edit_index(edit, *, recompute_digest=False):
    def damage(reg: Path):
        index = reg / "index.json"
        data = json.loads(index.read_text())
        edit(data["modules"][0])
        if recompute_digest:  # an editor who knows the format
            canonical = json.dumps(data["modules"], sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=True)
            data["digest"] = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
        index.write_text(json.dumps(data, indent=1))
    return damage


def _flip(rel):
    def damage(reg: Path):
        path = reg / rel
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


DAMAGE = {
    "missing_archive": (lambda reg: (reg / (HANDLE + ".tar.gz")).unlink(),
                        r"3\.tar\.gz.*missing|missing.*3\.tar\.gz",
                        "the module's archive deleted"),
    "archive_bit_flip": (_flip(HANDLE + ".tar.gz"), r"3\.tar\.gz.*sha256|sha256.*3\.tar\.gz",
                         "one bit flipped in the archive (same size)"),
    "index_edited": (_edit_index(lambda e: e.__setitem__("size", e["size"] + 1)),
                     r"index\.json.*digest", "index.json edited (archive size), digest kept"),
    "index_edited_digest_recomputed": (
        _edit_index(lambda e: e.__setitem__("sha256", "0" * 64), recompute_digest=True),
        r"3\.tar\.gz.*sha256|sha256.*3\.tar\.gz",
        "index.json edited (archive sha256) and its digest recomputed"),
    "index_truncated": (lambda reg: (reg / "index.json").write_bytes(
                            (reg / "index.json").read_bytes()[:100]),
                        r"index\.json.*unreadable", "index.json cut to 100 bytes"),
    "module_file_altered": (_flip(HANDLE + "/variables/variables.data-00000-of-00001"),
                            r"variables\.data.*sha256|sha256.*variables\.data",
                            "one bit flipped in the published module's variables"),
    "card_deleted": (lambda reg: next(reg.glob("assets/docs/**/3.md")).unlink(),
                     r"3\.md.*missing|missing.*3\.md", "the published card deleted"),
    "extra_file": (lambda reg: (reg / HANDLE / "evil.so").write_bytes(b"\x7fELF"),
                   r"evil\.so", "a file the index does not list, in the module directory"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_publish_refuses_a_damaged_registry(published, sandbox, case, name):
    damage, pattern, what = DAMAGE[name]
    case.describe("Publish", what, "`publish` refuses: exit 1, one line naming the damaged "
                  "file and saying nothing was published; the registry is left unchanged")
    out, registry = published
    shutil.copytree(registry, sandbox.registry, dirs_exist_ok=True)
    damage(sandbox.registry)
    tree = _tree(sandbox.registry)
    before = sandbox.snapshot()
    result = rs.run_cli(["publish", out, "--registry", sandbox.registry], sandbox, timeout=600)
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    assert outside == 0, changed
    line = result.check_one_line_error(1, r"registry .* is damaged", pattern,
                                       r"nothing was published")
    after = _tree(sandbox.registry)
    assert after == tree, sorted(set(after.items()) ^ set(tree.items()))
    case.trial(True, bytes_outside=outside,
               observed="`%s`" % rs.shorten(line, sandbox, 240))
