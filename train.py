"""Entry point for `accelerate launch train.py --config configs/<competition>/<exp>.yaml [--fold K] [key=value …]`.

The same script runs on one CPU, one GPU or many processes; see competition/train.py for the loop.
"""

from competition.train import main

if __name__ == "__main__":
    raise SystemExit(main())
