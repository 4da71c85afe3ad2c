"""Registry look-ups and option-file validation: errors name the key, the file and a fix."""

from pathlib import Path

import pytest
import torch.nn as nn

from diffsr.utils.options import OptionError, apply_overrides, parse_options, validate_options
from diffsr.utils.registry import Registry, RegistryError
from diffsr.utils.yaml_util import load_yaml


def test_register_and_build_checks_signature():
    reg = Registry("thing")

    @reg.register()
    class Widget:
        def __init__(self, width: int, depth: int = 2) -> None:
            self.width, self.depth = width, depth

    built = reg.build({"type": "Widget", "width": 5})
    assert (built.width, built.depth) == (5, 2)
    with pytest.raises(RegistryError, match=r"does not take the option 'widht'.*'width'"):
        reg.build({"type": "Widget", "widht": 5})
    with pytest.raises(RegistryError, match="needs the option"):
        reg.build({"type": "Widget"})


def test_unknown_name_suggests_closest_and_duplicate_raises():
    reg = Registry("arch")
    reg.register(type("FSDGN", (), {}))
    reg.register(type("FFANet", (), {}))
    with pytest.raises(RegistryError, match=r"arch registry has no 'FSDNG'.*'FSDGN'"):
        reg.get("FSDNG")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register(type("FSDGN", (), {}))


def _base_options() -> dict:
    return {
        "name": "unit",
        "network_g": {"type": "OptionsTestNet"},
        "train": {"optim_g": {"lr": 1e-4}, "total_iter": 10, "pixel_opt": {"type": "MSELoss"}},
    }


class OptionsTestNet(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)


@pytest.fixture
def aod_registered():
    """A trivial arch registered for the option tests (independent of the paper's networks)."""
    from diffsr.utils.registry import ARCH_REGISTRY

    if "OptionsTestNet" not in ARCH_REGISTRY:
        ARCH_REGISTRY.register(OptionsTestNet)
    return ARCH_REGISTRY


def test_defaults_filled(aod_registered):
    opt = validate_options(_base_options(), "x.yml")
    assert opt["model_type"] == "RestorationModel"
    assert opt["train"]["ema_decay"] == 0.0
    assert opt["logger"]["print_freq"] == 100
    assert opt["val"]["val_freq"] == 5000


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (
            lambda o: o["train"].update(totl_iter=3),
            r"x\.yml: unknown key 'train\.totl_iter'.*'total_iter'",
        ),
        (
            lambda o: o["train"].update(total_iter="10k"),
            r"train\.total_iter must be integer, got str",
        ),
        (lambda o: o["train"].pop("total_iter"), r"missing required key 'train\.total_iter'"),
        (
            lambda o: o.update(network_g={"type": "OptionsTestNte"}),
            r"network_g: arch registry has no 'OptionsTestNte'.*'OptionsTestNet'",
        ),
        (
            lambda o: o["train"]["pixel_opt"].update(loss_wieght=1),
            r"train\.pixel_opt: loss 'MSELoss'.*'loss_weight'",
        ),
        (
            lambda o: o["train"].update(nan_policy="ignore"),
            r"nan_policy is 'ignore'; allowed: stop, skip",
        ),
        (lambda o: o.update(vall={}), r"unknown key 'vall'.*'val'"),
        (lambda o: o.update(model_type="RestorationModle"), r"'RestorationModel'"),
    ],
)
def test_bad_options_are_named(aod_registered, edit, pattern):
    opt = _base_options()
    edit(opt)
    with pytest.raises(OptionError, match=pattern):
        validate_options(opt, "x.yml")


def test_overrides_are_typed_and_scientific_floats_parse(tmp_path: Path, aod_registered):
    path = tmp_path / "o.yml"
    path.write_text(
        "name: t\nnetwork_g: {type: OptionsTestNet}\ntrain:\n  optim_g: {lr: 2e-4}\n  total_iter: 5\n"
        "  pixel_opt: {type: L1Loss}\n"
    )
    assert load_yaml(path)["train"]["optim_g"]["lr"] == pytest.approx(2e-4)
    opt = parse_options(
        path, overrides=["train.total_iter=7", "train.optim_g.lr=1e-3", "val.save_img=true"]
    )
    assert opt["train"]["total_iter"] == 7 and opt["train"]["optim_g"]["lr"] == pytest.approx(1e-3)
    assert opt["val"]["save_img"] is True
    assert opt["path"]["models"] == str(Path("experiments/t/models"))
    with pytest.raises(OptionError, match=r"unknown key 'train\.total_itr'"):
        parse_options(path, overrides=["train.total_itr=7"])
    with pytest.raises(OptionError, match=r"expected key\.sub=value"):
        apply_overrides({}, ["oops"])


def test_user_module_import_registers_new_arch(tmp_path: Path):
    module = tmp_path / "my_archs.py"
    module.write_text(
        "import torch.nn as nn\n"
        "from diffsr.utils.registry import ARCH_REGISTRY\n\n"
        "@ARCH_REGISTRY.register()\n"
        "class TmpUserNetForOptions(nn.Module):\n"
        "    def __init__(self, width: int = 4):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 3, 3, padding=1)\n\n"
        "    def forward(self, x):\n"
        "        return x + self.conv(x)\n"
    )
    opt = {
        "name": "u",
        "imports": [str(module)],
        "network_g": {"type": "TmpUserNetForOptions", "width": 8},
        "train": {"optim_g": {"lr": 1e-4}, "total_iter": 1, "pixel_opt": {"type": "L1Loss"}},
    }
    checked = validate_options(opt, str(tmp_path / "o.yml"))
    from diffsr.archs import build_network

    assert isinstance(build_network(checked["network_g"]), nn.Module)
    with pytest.raises(OptionError, match="does not exist"):
        validate_options({**opt, "imports": [str(tmp_path / "missing.py")]}, "o.yml")
