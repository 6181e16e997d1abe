"""``python -m hessopt ...``: the ``hessopt`` command (:func:`hessopt.cli.main`)."""

import sys

from hessopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
