"""`python -m splat ...` (and the `splat` console script): runs the bundled splat CLI binary."""

import os
import sys


def main(argv=None):
    exe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "splat")
    if not os.access(exe, os.X_OK):
        sys.stderr.write(f"splat: the CLI binary is missing from the package ({exe}); reinstall splat\n")
        return 2
    args = sys.argv[1:] if argv is None else list(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(exe, [exe] + args)  # replaces this process: exit code and signals are the CLI's own


if __name__ == "__main__":
    sys.exit(main())
