"""Train with BasicSR's own pipeline, diffsr's losses and DiffLossSRModel registered.

``python -m diffsr.integrations.basicsr_train -opt options/X.yml [BasicSR's flags]``; experiments
are written under the current directory, as BasicSR's ``basicsr/train.py`` does under its root.
"""

from __future__ import annotations

import os

import diffsr.integrations.basicsr  # noqa: F401  (registers the losses and the model)


def main() -> None:
    from basicsr.train import train_pipeline

    train_pipeline(os.getcwd())


if __name__ == "__main__":
    main()
