"""Default IoT deployment parameters (docs/method.md §6), importable without torch (for --help)."""
DEVICE_GOPS = 4.0        # a Raspberry-Pi-class edge CPU
SERVER_GOPS = 1000.0     # a datacentre GPU at batch 1
BANDWIDTH_MBPS = 10.0    # cellular / Wi-Fi uplink
RTT_MS = 20.0            # network round trip
SPLIT_COST = 0.5         # the device runs the ICs up to half of the network's cost
