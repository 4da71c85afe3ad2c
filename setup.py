"""Install diffsr. On CPU-only machines install with the repository's constraints file
(``PIP_CONSTRAINT=constraints.txt``) so that torch resolves to the local 2.13.0 CPU build."""

from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "diffsr" / "__init__.py").read_text(), version) 

setup(
    name="diffsr",
    version=version["__version__"],
    description="Registry-driven image-restoration toolbox with a diffusion prior as loss (DiffLoss)",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["diffsr", "diffsr.*"]),
    # NIQE's pristine-model parameters and their attribution (diffsr/metrics/data/README.md).
    package_data={"diffsr": ["py.typed", "metrics/data/*.npz", "metrics/data/README.md"]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "opencv-python-headless>=4.8",
        "pyyaml>=6.0",
        "lmdb>=1.4",
        "tqdm>=4.60",
    ],
    extras_require={
        "demo": ["scikit-image>=0.21", "matplotlib>=3.6"],
        "plots": ["matplotlib>=3.6"],
        "tensorboard": ["tensorboard>=2.10"],
        "wandb": ["wandb>=0.16"],
        "test": [
            "pytest>=7.4",
            "ruff>=0.5",
            "scikit-image>=0.21",
            "matplotlib>=3.6",
            "tensorboard>=2.10",
            "wandb>=0.16",  # logger.wandb, tested offline
            # Test-only reference implementation of OpenAI's ADM UNet; never imported at run time.
            "guided-diffusion-sdk==1.0.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "diffsr-train=diffsr.train:main",
            "diffsr-test=diffsr.test:main",
        ]
    },
)
