"""``python -m lerobot_pirl.bench``: the few-shot MetaWorld benchmark (see :mod:`lerobot_pirl.bench.cli`)."""

from lerobot_pirl.bench.cli import main

if __name__ == "__main__":
    main()
