"""Writes a stand-in TF-Slim checkpoint tarball and a spec pinned to it.

Usage:
    python scripts/make_standin_checkpoint.py ARCH OUT_DIR [--seed N]

ARCH is inception_v2 or inception_resnet_v2. OUT_DIR receives the tarball
under the real one's file name (e.g. inception_v2_2016_08_28.tar.gz) and
specs/ARCH.yaml, the shipped spec with the stand-in's size and sha256, for
``hubexport build --specs OUT_DIR/specs``. See hubexport/standin.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hubexport.errors import HubexportError  # noqa: E402
from hubexport.standin import ARCHITECTURES, make_standin  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("architecture", choices=ARCHITECTURES)
    parser.add_argument("out_dir", help="directory to write the tarball and specs/ into")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives byte-identical output (default 0)")
    args = parser.parse_args(argv)
    try:
        result = make_standin(args.architecture, args.out_dir, seed=args.seed)
    except HubexportError as e:
        print("error: %s" % e, file=sys.stderr)
        return e.exit_code
    print("tarball: %s" % result.tarball)
    print("size: %d" % result.size)
    print("checksum: %s" % result.checksum)
    print("spec: %s" % (result.spec_dir / ("%s.yaml" % args.architecture)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
