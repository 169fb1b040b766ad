"""Architectures against SPEC section 3: parameter counts, exit counts, measured cost."""
import json

import pytest
import torch

from deepsloth.cli.main import main
from deepsloth.exits.cost import measure_exit_costs
from deepsloth.models import MultiExitNet, attach_ics, count_parameters, create_model

# (CNN params M, SDN params M, SDN ops G) from SPEC section 3
SPEC = {
    ("vgg16bn", "cifar10"): (15.254, 15.674, 0.6292),
    ("resnet56", "cifar10"): (0.856, 1.017, 0.2530),
    ("mobilenet", "cifar10"): (3.217, 3.924, 0.7519),
    ("vgg16bn", "tinyimagenet"): (21.223, 33.923, 2.5476),
    ("resnet56", "tinyimagenet"): (0.868, 4.099, 0.2591),
    ("mobilenet", "tinyimagenet"): (3.412, 22.461, 3.0404),
}
EXITS = {"vgg16bn": 15, "resnet56": 28, "mobilenet": 14}
CUMULATIVE = {
    "vgg16bn": ".006 .126 .187 .307 .367 .487 .607 .668 .788 .908 .938 .968 .998 .999 1.000",
    "resnet56": ".041 .079 .116 .154 .192 .229 .267 .304 .342 .371 .409 .446 .484 .521 .559 .596 .634 "
                ".671 .700 .738 .775 .813 .850 .888 .925 .963 1.000 1.000",
    "mobilenet": ".032 .062 .168 .197 .304 .333 .439 .546 .652 .758 .864 .894 1.000 1.000",
}


@pytest.mark.parametrize("arch,dataset", list(SPEC))
def test_parameter_counts_and_exits_match_spec(arch, dataset):
    cnn_m, sdn_m, _ = SPEC[(arch, dataset)]
    cnn = create_model(arch, dataset, sdn=False)
    sdn = create_model(arch, dataset, sdn=True)
    assert abs(count_parameters(cnn) / 1e6 - cnn_m) <= 0.001
    assert abs(count_parameters(sdn) / 1e6 - sdn_m) <= 0.001
    assert sdn.num_exits == EXITS[arch]


@pytest.mark.parametrize("arch,dataset", list(SPEC))
def test_describe_json_matches_spec_cost(arch, dataset, capsys):
    assert main(["describe", arch, "--dataset", dataset, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("params", "exits", "ops", "macs", "cumulative_cost"):
        assert key in info
    _, sdn_m, ops_g = SPEC[(arch, dataset)]
    assert abs(info["params"] / 1e6 - sdn_m) <= 0.001
    assert info["exits"] == EXITS[arch] == len(info["cumulative_cost"])
    assert abs(info["ops"] / 1e9 - ops_g) / ops_g <= 0.03
    assert info["macs"] < info["ops"]
    if dataset == "cifar10":
        ref = [float(v) for v in CUMULATIVE[arch].split()]
        got = info["cumulative_cost"]
        assert max(abs(a - b) for a, b in zip(got, ref)) <= 0.01
    assert info["cumulative_cost"][-1] == 1.0
    assert all(a <= b for a, b in zip(info["cumulative_cost"], info["cumulative_cost"][1:]))


def test_sdn_outputs_one_logit_tensor_per_exit():
    model = create_model("resnet56", "tinyimagenet", seed=0).eval()
    outs = model(torch.rand(2, 3, 64, 64))
    assert len(outs) == 28 and all(o.shape == (2, 200) for o in outs)


def test_sdn_built_from_cnn_shares_weights_and_final_output():
    cnn = create_model("resnet56", "cifar10", sdn=False, seed=1).eval()
    sdn = attach_ics(cnn, "cifar10", seed=2).eval()
    assert isinstance(sdn, MultiExitNet)
    assert sdn.blocks[0].conv1.weight is cnn.blocks[0].conv1.weight
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(sdn(x)[-1], cnn(x))
    # the SDN's state dict is the CNN's plus the ICs
    extra = set(sdn.state_dict()) - set(cnn.state_dict())
    assert extra and all(k.startswith("ics.") for k in extra)


def test_seeded_creation_is_reproducible():
    a = create_model("mobilenet", seed=3).state_dict()
    b = create_model("mobilenet", seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Tiny(torch.nn.Module):
    """conv 1->2 (3x3, no bias) on 4x4, ReLU, flatten, linear 32->3: countable by hand."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.ic = torch.nn.Linear(32, 3)
        self.fc = torch.nn.Linear(32, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return [self.ic(h), self.fc(h + 1)]


def test_cost_accounting_on_a_hand_countable_model():
    cost = measure_exit_costs(_Tiny(), (1, 4, 4), convention="exact")
    conv = 32 * (2 * 9 - 1)          # 32 outputs, 9 multiplies + 8 adds each
    relu = 32
    linear = 3 * (2 * 32 - 1) + 3    # 3 outputs: 32 mul + 31 add, plus bias
    add = 32                         # h + 1
    assert cost.ops == [conv + relu + linear, conv + relu + linear + add + linear]
    assert cost.macs == [32 * 9 + 96, 32 * 9 + 96 + 96]
    assert cost.normalised[-1] == 1.0


def test_paper_convention_charges_grouped_convs_per_group():
    dw = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False))
    exact = measure_exit_costs(dw, (4, 2, 2), convention="exact").ops[-1]
    paper = measure_exit_costs(dw, (4, 2, 2), convention="paper").ops[-1]
    assert exact == 16 * 17 and paper == 4 * exact


def test_unknown_architecture_is_a_one_line_error(capsys):
    assert main(["describe", "resnet9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture" in err and err.count("\n") == 1


def test_describe_a_trained_model_measures_the_same_architecture(capsys):
    """A zoo name describes that model (its own dataset): the same parameters and cost as its architecture;
    naming another dataset for it is a one-line error."""
    assert main(["describe", "resnet56_sdn_cifar10", "--json"]) == 0
    model = json.loads(capsys.readouterr().out)
    assert main(["describe", "resnet56", "--json"]) == 0
    arch = json.loads(capsys.readouterr().out)
    assert model["name"] == "resnet56_sdn_cifar10" and model["kind"] == "sdn" and model["dataset"] == "cifar10"
    for key in ("params", "cnn_params", "exits", "ops", "cumulative_cost"):
        assert model[key] == arch[key]
    assert main(["describe", "resnet56_sdn_cifar10", "--dataset", "tinyimagenet"]) == 2
    err = capsys.readouterr().err
    assert "is a cifar10 model" in err and err.count("\n") == 1
