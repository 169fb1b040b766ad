"""The partitioned IoT latency model (SPEC 6), by hand, and the `deepsloth latency` command."""
from __future__ import annotations

import json

import pytest

from deepsloth.cli.main import main
from deepsloth.errors import DeepslothError
from deepsloth.metrics.latency import (DEFAULT_BANDWIDTH_BPS, DEFAULT_DEVICE_OPS_PER_S, DEFAULT_RTT_S,
                                       DEFAULT_SERVER_OPS_PER_S, LatencyModel, default_split,
                                       split_tensor_bytes)
from deepsloth.models import create_model


def hand_model(split=1):
    # device 1 Gops/s, server 10 Gops/s; 1 MB over 8 Mbit/s = 1 s; RTT 0.1 s
    return LatencyModel.from_ops([1e9, 2e9, 4e9], device_ops_per_s=1e9, server_ops_per_s=1e10, split=split,
                                 tx_bytes=1_000_000, bandwidth_bps=8e6, rtt_s=0.1)


def test_exit_latency_by_hand():
    lat = hand_model()
    assert lat.upload_s == pytest.approx(1.0)
    # T(1) = 1 (device); T(2) = 1 + 1 + 0.1 + (0.2 - 0.1); T(3) = 1 + 1 + 0.1 + (0.4 - 0.1)
    assert lat.exit_latency() == pytest.approx([1.0, 2.2, 2.4])
    assert lat.expected_latency([2, 1, 1]) == pytest.approx((2 * 1 + 2.2 + 2.4) / 4)
    assert lat.amplification([2, 1, 1], lat.worst_case_counts()) == pytest.approx(2.4 / 1.65)
    assert lat.offload_fraction([2, 1, 1]) == 0.5
    on_device = hand_model(split=3)  # everything on the device: no network at all
    assert on_device.exit_latency() == pytest.approx([1.0, 2.0, 4.0])


def test_measured_times_and_defaults():
    lat = LatencyModel.from_measured([0.01, 0.02, 0.05], server_speedup=10, split=2, tx_bytes=0,
                                     bandwidth_bps=1e6, rtt_s=0.0)
    assert lat.exit_latency() == pytest.approx([0.01, 0.02, 0.02 + 0.003])
    assert lat.source == "measured"
    # documented defaults
    assert DEFAULT_DEVICE_OPS_PER_S == 4e9 and DEFAULT_SERVER_OPS_PER_S == 1e12
    assert DEFAULT_BANDWIDTH_BPS == 10e6 and DEFAULT_RTT_S == 0.02
    assert default_split([0.1, 0.3, 0.5, 0.7, 1.0]) == 3
    assert default_split([0.6, 1.0]) == 1


def test_split_tensor_is_the_block_output():
    model = create_model("resnet56", "cifar10", sdn=True, seed=0)
    # blocks 1-9: 16 x 32 x 32; blocks 10-18: 32 x 16 x 16; float32
    assert split_tensor_bytes(model, (3, 32, 32), 9) == 16 * 32 * 32 * 4
    assert split_tensor_bytes(model, (3, 32, 32), 13) == 32 * 16 * 16 * 4
    assert split_tensor_bytes(model, (3, 32, 32), 28) == 0


def test_invalid_parameters():
    with pytest.raises(DeepslothError):
        LatencyModel.from_ops([1, 2], split=3)
    with pytest.raises(DeepslothError):
        hand_model().expected_latency([1, 1])


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from test_evaluate import build_env  # the same synthetic setup, in its own directory
    return build_env(tmp_path_factory.mktemp("lat"))


def test_latency_cli_worst_case_and_adversarial(env, capsys):
    root, mdir = env
    base = ["latency", "--model", str(mdir), "--data-root", str(root / "data"), "--rad", "99",
            "--runtime-n", "3", "--threads", "1"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "worst case" in out and "amplification" in out and "measured here" in out

    assert main(base + ["--inputs", str(root / "uni"), "--json", "--measure", "--measure-n", "2",
                        "--split", "5", "--rtt-ms", "0"]) == 0
    r = json.loads(capsys.readouterr().out)
    lm = r["latency_model"]
    assert lm["split"] == 5 and lm["source"] == "measured" and lm["rtt_s"] == 0
    assert lm["tx_bytes"] == 16 * 32 * 32 * 4
    e = r["rad"]["99"]
    assert e["latency_amplification"] == pytest.approx(e["attacked"]["expected_latency_s"]
                                                       / e["clean"]["expected_latency_s"])
    assert "worst_case" not in e["attacked"] and e["measured"]["n"] == 3
    assert e["measured"]["slowdown"] == pytest.approx(e["measured"]["attacked_mean_s"]
                                                      / e["measured"]["clean_mean_s"])


def test_latency_cli_rejects_bad_split(env, capsys):
    root, mdir = env
    rc = main(["latency", "--model", str(mdir), "--data-root", str(root / "data"), "--split", "99",
               "--runtime-n", "0"])
    assert rc == 2 and "split" in capsys.readouterr().err
