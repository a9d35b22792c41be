"""GPU use per server and GPU health: parsing nvidia-smi, cgroups and kernel-log XIDs, and the decisions (tables).

The nvidia-smi outputs in tests/unit/data follow the CSV of ``--query-gpu`` / ``--query-compute-apps`` with
``--format=csv,noheader,nounits`` as nvidia-smi documents it, with its ``[N/A]`` and ``[GPU is lost]`` values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devdock_spawner.gpu_monitor import (
    GPUProcess,
    GPUReading,
    Health,
    ServerGPUUse,
    container_id_from_cgroup,
    decide_health,
    normal_bus_id,
    parse_compute_apps,
    parse_gpu_query,
    parse_xid,
    use_by_server,
)

DATA = Path(__file__).parent / "data"
A, B, C, D = (
    "GPU-8f3c0e4a-2b1d-4c6e-9a7f-1e2d3c4b5a69",
    "GPU-1b2d9c77-3e4f-4a5b-8c9d-0e1f2a3b4c5d",
    "GPU-2f7a1c0e-8b3d-4e59-a1c6-7d9e0b4f3a21",
    "GPU-9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a",
)
CID = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"


def test_gpu_query_reads_use_ecc_retirements_and_lost_gpus():
    readings = parse_gpu_query((DATA / "nvidia-smi-query-gpu.txt").read_text())
    assert readings[A] == GPUReading(A, "0000:1b:00", 87, 30720, 81559, 0, False, False)
    assert readings[B].ecc_uncorrected == 2 and readings[B].retired_pending is True
    assert readings[C].utilization is None and readings[C].ecc_uncorrected is None  # MIG mode, no ECC reading
    assert readings[D].lost is True and readings[D].bus_id == "0000:9d:00"


def test_gpu_compute_apps_are_host_pids_with_their_memory():
    assert parse_compute_apps((DATA / "nvidia-smi-query-apps.txt").read_text()) == [
        GPUProcess(A, 41234, 20480),
        GPUProcess(A, 41300, 10240),
        GPUProcess(B, 5150, 512),
    ]
    assert parse_compute_apps("No running processes found\n") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"0::/system.slice/docker-{CID}.scope\n", CID),  # cgroup v2, systemd driver
        (f"0::/docker/{CID}\n", CID),  # cgroup v2, cgroupfs driver
        (f"12:memory:/docker/{CID}\n11:cpu:/docker/{CID}\n", CID),  # cgroup v1
        (f"0::/docker/{CID}/init.scope\n", CID),  # a sub-cgroup of the container's
        ("0::/user.slice/user-1000.slice/session-3.scope\n", ""),  # a process outside any container
        ("0::/docker/not-an-id\n", ""),
    ],
    ids=["v2-systemd", "v2-cgroupfs", "v1", "nested", "host", "junk"],
)
def test_gpu_process_cgroup_names_its_container(text, expected):
    assert container_id_from_cgroup(text) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            "3,1234,5678901,-;NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
            "GPU has fallen off the bus.",
            ("0000:3b:00", 79, "GPU has fallen off the bus."),
        ),
        (
            "4,99,1,-;NVRM: Xid (PCI:0000:1b:00): 48, pid=2281, name=python3, An uncorrectable double bit error",
            ("0000:1b:00", 48, "An uncorrectable double bit error"),
        ),
        (
            "NVRM: Xid (PCI:0000:1B:00): 13, Graphics SM Warp Exception",
            ("0000:1b:00", 13, "Graphics SM Warp Exception"),
        ),  # noqa: E501
        (
            "4,5512,88231904,-,caller=C3;NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
            "GPU has fallen off the bus.",
            ("0000:3b:00", 79, "GPU has fallen off the bus."),
        ),  # a kernel built with CONFIG_PRINTK_CALLER adds a field to the header
        (
            "4,7,1,-;NVRM: Xid (PCI:0000:1b:00.0): 94, pid=77, name=train, Contained: SM (0x1). RST: No, D-RST: No",
            ("0000:1b:00", 94, "Contained: SM (0x1). RST: No, D-RST: No"),
        ),  # with the function number
        (
            "4,8,1,-;NVRM: Xid (PCI:0000:1b:00 GPU-I:01 GPU-CI:00): 43, pid=77, name=train, Ch 0000000a",
            ("0000:1b:00", 43, "Ch 0000000a"),
        ),  # a MIG instance
        ("4,9,1,-;NVRM: Xid (0000:02:00): 13, 0003 00000000 0000a097", ("0000:02:00", 13, "0003 00000000 0000a097")),
        (
            "4,10,1,-;NVRM: Xid (PCI:00000001:00:00): 79, GPU has fallen off the bus.",
            ("0001:00:00", 79, "GPU has fallen off the bus."),
        ),  # noqa: E501
        (
            "4,11,1,-;NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
            " SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n",
            ("0000:3b:00", 79, "GPU has fallen off the bus."),
        ),  # fmt: skip
        ("6,1,1,-;usb 1-1: new high-speed USB device", None),
        # Forged: a user names a file after the driver's line and runs an invalid opcode from it (or makes it
        # crash); the kernel's trap and segfault messages carry the file's name, and its first 15 characters as
        # the process name.
        (
            "6,4711,9081726354,-;traps: NVRM: Xid (PCI:[1234] trap invalid opcode ip:401000 sp:7ffd0c1e2a40 "
            "error:0 in NVRM: Xid (PCI:0000:3b:00): 79, x[401000+1000]",
            None,
        ),
        (
            "6,4712,9081726355,-;NVRM: Xid (PCI:[1234]: segfault at 0 ip 0000000000401000 sp 00007ffd0c1e2a40 "
            "error 4 in NVRM: Xid (PCI:0000:3b:00): 79, x[401000+1000] likely on CPU 3 (core 3, socket 0)",
            None,
        ),
        ("6,4713,1,-;NVRM: Xid ([1234]: NVRM: Xid (PCI:0000:3b:00): 79, x", None),
        ("6,4714,1,-;x NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.", None),
        ("12,4715,1,-;audit: NVRM: Xid (PCI:0000:3b:00): 48, An uncorrectable double bit error", None),
        ("6,4716,1,-;a;NVRM: Xid (PCI:0000:3b:00): 79, header-like text in the message", None),
        ("[ 1234.5678] traps: x[1] NVRM: Xid (PCI:0000:3b:00): 79, x", None),
    ],
    ids=[
        "xid-79",
        "xid-48-with-process",
        "xid-13",
        "caller-field",
        "function-number",
        "mig-instance",
        "old-driver",
        "eight-digit-domain",
        "continuation-lines",
        "not-an-xid",
        "forged-in-a-trap-message",
        "forged-in-a-segfault-message",
        "forged-by-a-process-name",
        "not-at-the-start",
        "forged-in-audit",
        "second-semicolon",
        "dmesg-style-line",
    ],  # fmt: skip
)
def test_gpu_xid_only_from_the_drivers_own_kernel_log_record(record, expected):
    xid = parse_xid(record)
    assert (None if xid is None else (xid.bus_id, xid.code, xid.message)) == expected


def test_gpu_bus_ids_of_nvidia_smi_and_the_kernel_log_match():
    assert normal_bus_id("00000000:3B:00.0") == normal_bus_id("PCI:0000:3b:00") == "0000:3b:00"


def reading(uuid, bus, ecc=0, lost=False, pending=False, util=10):
    return GPUReading(uuid, bus, util, 100, 1000, ecc, pending, lost)


def xid(bus, code, message=""):
    return parse_xid(f"NVRM: Xid (PCI:{bus}): {code}, {message}")


READ = {A: reading(A, "0000:1b:00"), B: reading(B, "0000:3b:00")}

# (id, readings, xids, cleared, previous health, GPUs out afterwards {uuid: reason substring})
HEALTH = [
    ("healthy", READ, [], set(), Health(), {}),
    ("xid-79", READ, [xid("0000:3b:00", 79, "GPU has fallen off the bus.")], set(), Health(), {B: "XID 79"}),
    ("application-xid-ignored", READ, [xid("0000:3b:00", 13), xid("0000:3b:00", 43)], set(), Health(), {}),
    ("xid-of-another-bus", READ, [xid("0000:99:00", 79)], set(), Health(), {}),
    ("xid-stays", READ, [], set(), Health(xid={B: "XID 79"}), {B: "XID 79"}),
    ("xid-cleared", READ, [], {B}, Health(xid={B: "XID 79"}, out={B: "XID 79"}), {}),
    ("ecc", {**READ, A: reading(A, "0000:1b:00", ecc=3)}, [], set(), Health(), {A: "3 uncorrectable ECC errors"}),
    ("ecc-cleared", {**READ, A: reading(A, "0000:1b:00", ecc=3)}, [], {A}, Health(), {}),
    (
        "ecc-after-clear",
        {**READ, A: reading(A, "0000:1b:00", ecc=4)},
        [],
        set(),
        Health(ecc_accepted={A: 3}),
        {A: "1 uncorrectable ECC error"},
    ),  # fmt: skip
    ("ecc-reset", {**READ, A: reading(A, "0000:1b:00", ecc=0)}, [], set(), Health(ecc_accepted={A: 3}), {}),
    ("retirement", {**READ, B: reading(B, "0000:3b:00", pending=True)}, [], set(), Health(), {B: "GPU reset"}),
    ("lost", {**READ, B: reading(B, "0000:3b:00", lost=True)}, [], set(), Health(), {B: "fell off the bus"}),
    ("missing-from-listing", {A: READ[A]}, [], set(), Health(), {B: "fell off the bus"}),
    ("nothing-read-is-not-lost", {}, [], set(), Health(), {}),
    ("back-when-readable", READ, [], set(), Health(out={B: "it fell off the bus"}), {}),
]


@pytest.mark.parametrize(
    ("readings", "xids", "cleared", "previous", "expected"), [h[1:] for h in HEALTH], ids=[h[0] for h in HEALTH]
)
def test_gpu_health_decisions(readings, xids, cleared, previous, expected):
    health = decide_health(previous, [A, B], readings, xids, cleared)
    assert set(health.out) == set(expected)
    for uuid, words in expected.items():
        assert words in health.out[uuid]


def test_gpu_use_per_server_from_processes_and_holders():
    readings = {A: reading(A, "0000:1b:00", util=87), B: reading(B, "0000:3b:00", util=40)}
    processes = [GPUProcess(A, 10, 2048), GPUProcess(A, 11, 1024), GPUProcess(B, 20, 512), GPUProcess(B, 99, 64)]
    server_of_pid = {10: "ann/", 11: "ann/", 20: "bob/"}  # 99: a process of no server (the host's own)
    held = {"ann/": [A], "bob/": [B], "cy/": [B]}
    holders = {A: ["ann/"], B: ["bob/", "cy/"]}
    use = use_by_server(processes, server_of_pid, readings, held, holders)
    assert use["ann/"] == ServerGPUUse(3072, 87.0, 2)
    assert use["bob/"] == ServerGPUUse(512, None, 1)  # B is shared: its utilisation is not bob's alone
    assert use["cy/"] == ServerGPUUse(0, None, 0)


def test_gpu_use_of_a_mig_slice_has_memory_but_no_utilisation():
    mig = "MIG-1e2d3c4b-5a69-5788-96a5-b4c3d2e1f0a9"
    use = use_by_server(
        [GPUProcess(C, 7, 4096)], {7: "ann/"}, {C: reading(C, "0000:5c:00", util=55)}, {"ann/": [mig]},
        {mig: ["ann/"]}, parent_of={mig: C},
    )  # fmt: skip
    assert use["ann/"] == ServerGPUUse(4096, None, 1)
