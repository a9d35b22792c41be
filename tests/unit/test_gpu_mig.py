"""MIG instances as units of allocation (tables, no engine).

The ``nvidia-smi -L`` outputs in tests/unit/data are written down from NVIDIA's MIG user guide (the A100 listing
of drivers R470 and later, and the ``MIG-GPU-<uuid>/<gi>/<ci>`` spelling of R450/R460) and, for the H200, from
its profile table (1g.18gb, 1g.18gb+me, 3g.71gb ...) in the same layout; no GPU machine was lent to this project
to print one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devdock_spawner.gpu import (
    GPU,
    PROBE_SEPARATOR,
    WHOLE,
    GPUAllocator,
    NotEnoughGPUs,
    check_inventory,
    device_config,
    parse_nvidia_smi_list,
    parse_probe,
)
from devdock_spawner.profiles import form_rows, load_profiles

DATA = Path(__file__).parent / "data"


def listing(name: str) -> list[GPU]:
    return parse_nvidia_smi_list((DATA / name).read_text())


def test_mig_listing_of_a_current_driver_gives_gpus_and_their_instances():
    units = listing("nvidia-smi-L-a100-mig.txt")
    assert [(u.label, u.kind, u.uuid) for u in units] == [
        ("0", "gpu", "GPU-e86cb44c-6756-fd30-cd4a-1e6da3caf9b0"),
        ("0/MIG 3g.20gb #0", "3g.20gb", "MIG-c7384736-a75d-5afc-978f-d2f1294409fd"),
        ("0/MIG 2g.10gb #1", "2g.10gb", "MIG-a28ad590-3fda-56dd-84fc-0a0b96edc58d"),
        ("0/MIG 1g.5gb #2", "1g.5gb", "MIG-4c4e0b55-7a8e-5f3c-8f9f-0e2b3c4d5e6f"),
        ("1", "gpu", "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"),
    ]
    assert {u.parent for u in units[1:4]} == {"GPU-e86cb44c-6756-fd30-cd4a-1e6da3caf9b0"}
    assert units[1].memory_mib == 20 * 1024 and units[0].name == "NVIDIA A100-SXM4-40GB"


def test_mig_listing_of_an_old_driver_and_compute_instance_profiles():
    units = listing("nvidia-smi-L-r450-mig.txt")
    assert [u.uuid for u in units[1:]] == [
        "MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/7/0",
        "MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/8/0",
        "MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0",
    ]
    assert [u.kind for u in units] == ["gpu", "1g.5gb", "1g.5gb", "1c.3g.20gb"]


def test_mig_listing_of_an_h200_with_media_extension_profiles():
    units = listing("nvidia-smi-L-h200-mig.txt")
    kinds = [u.kind for u in units]
    assert kinds == ["gpu", "3g.71gb", "1g.18gb", "1g.18gb", "1g.18gb+me", "gpu"]
    assert GPUAllocator(units).kinds() == ["gpu", "1g.18gb", "1g.18gb+me", "3g.71gb"]


def test_plain_listing_has_no_instances_and_probe_output_merges_memory():
    probe = (
        (DATA / "nvidia-smi-L-plain.txt").read_text()
        + PROBE_SEPARATOR
        + "\n0, GPU-8f3c0e4a-2b1d-4c6e-9a7f-1e2d3c4b5a69, NVIDIA H100 80GB HBM3, 81559\n"
        + "1, GPU-1b2d9c77-3e4f-4a5b-8c9d-0e1f2a3b4c5d, NVIDIA H100 80GB HBM3, 81559\n"
    )
    units = parse_probe(probe)
    assert [(u.index, u.kind, u.memory_mib) for u in units] == [(0, "gpu", 81559), (1, "gpu", 81559)]


H200 = listing("nvidia-smi-L-h200-mig.txt")
WHOLE0, BIG, SMALL_A, SMALL_B, MEDIA, WHOLE1 = (u.uuid for u in H200)


@pytest.mark.parametrize(
    ("steps",),
    [
        # (key, count, kind, expected uuids or error text)
        ([("a", 1, "1g.18gb", [SMALL_A]), ("b", 1, "1g.18gb", [SMALL_B]), ("c", 1, "1g.18gb", "only 0 of 2")],),
        # whole GPUs: the one not split into instances comes first; with a slice held, GPU 0 is not given whole
        ([("a", 1, "1g.18gb", [SMALL_A]), ("b", 1, WHOLE, [WHOLE1]), ("c", 1, WHOLE, "only 0 of 2")],),
        # and the other way round: GPU 0 held whole, none of its slices can be had
        ([("a", 2, WHOLE, [WHOLE1, WHOLE0]), ("b", 1, "3g.71gb", "only 0 of 1"), ("c", 1, "1g.18gb+me", "0 of 1")],),
        # a server that held a slice may take its own GPU whole at its next start (it gives the slice up)
        ([("a", 1, "3g.71gb", [BIG]), ("a", 2, WHOLE, [WHOLE1, WHOLE0]), ("b", 1, "3g.71gb", "only 0 of 1")],),
        ([("a", "all", "1g.18gb", [SMALL_A, SMALL_B])],),
        ([("a", 1, "7g.141gb", "no MIG 7g.141gb GPU slices to hand out")],),
        ([("a", 1, "1g.18gb", [SMALL_A]), ("a", 1, "1g.18gb", [SMALL_A])],),
    ],
    ids=[
        "slices-exclusive",
        "slice-blocks-whole",
        "whole-blocks-slices",
        "own-slice-to-whole",
        "all-of-kind",
        "unknown-kind",
        "reuse-own-slice",
    ],  # fmt: skip
)
def test_mig_allocation_never_gives_a_gpu_whole_and_in_slices_at_once(steps):
    allocator = GPUAllocator(H200)
    for key, count, kind, expected in steps:
        if isinstance(expected, str):
            with pytest.raises(NotEnoughGPUs, match=expected):
                allocator.allocate(key, count, kind=kind)
        else:
            assert allocator.allocate(key, count, kind=kind) == expected


def test_mig_free_and_total_per_kind_follow_holders():
    allocator = GPUAllocator(H200)
    assert [(k, allocator.free(kind=k), allocator.total_of(k)) for k in allocator.kinds()] == [
        ("gpu", 2, 2),
        ("1g.18gb", 2, 2),
        ("1g.18gb+me", 1, 1),
        ("3g.71gb", 1, 1),
    ]
    allocator.allocate("x/", 1, kind="1g.18gb")
    assert allocator.free(kind="gpu") == 1 and allocator.free(kind="1g.18gb") == 1
    assert allocator.allocated("1g.18gb") == 1 and allocator.allocated() == 0
    allocator.release("x/")
    assert allocator.free(kind="gpu") == 2


def test_mig_unhealthy_gpu_takes_its_slices_out_of_the_pool_and_holders_keep_theirs():
    allocator = GPUAllocator(H200)
    assert allocator.allocate("a/", 1, kind="3g.71gb") == [BIG]
    allocator.set_unhealthy({WHOLE0: "XID 79: GPU has fallen off the bus."})
    with pytest.raises(NotEnoughGPUs, match=r"only 0 of 2 are free right now \(2 out of service for errors\)"):
        allocator.allocate("b/", 1, kind="1g.18gb")
    assert allocator.allocate("c/", 1) == [WHOLE1]  # the healthy GPU still goes
    assert allocator.allocate("a/", 1, kind="3g.71gb") == [BIG]  # its holder keeps it (restarts included)
    assert allocator.health_of([BIG, WHOLE1]) == {BIG: "XID 79: GPU has fallen off the bus."}
    allocator.set_unhealthy({})
    assert allocator.allocate("b/", 1, kind="1g.18gb") == [SMALL_A]


def test_mig_per_person_cap_counts_slices():
    allocator = GPUAllocator(H200)
    allocator.allocate("ann/one", 1, kind="1g.18gb", per_owner=1)
    with pytest.raises(NotEnoughGPUs, match="at most 1 per person"):
        allocator.allocate("ann/two", 1, kind="1g.18gb", per_owner=1)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"index": 0, "uuid": "MIG-1", "mig_profile": "1g.18gb"}], "needs a 'MIG-...' uuid, its GPU's uuid"),
        ([{"index": 0, "uuid": "GPU-1", "parent": "GPU-0", "mig_profile": "1g.18gb"}], "needs a 'MIG-...' uuid"),
        ([{"index": 0, "uuid": "MIG-1", "parent": "GPU-0", "mig_profile": "big"}], "not a MIG profile name"),
        ([{"index": 0, "uuid": "GPU-0"}, {"index": 0, "uuid": "GPU-0"}], "GPU-0 more than once"),
        ([{"index": 0, "uuid": "MIG-1", "parent": "GPU-9", "mig_profile": "1g.18gb"}], "name a parent GPU"),
    ],
)
def test_mig_inventory_mistakes_are_refused_with_a_sentence(entries, message):
    with pytest.raises(ValueError, match=message):
        check_inventory([GPU.from_config(e) for e in entries])


def test_mig_instances_in_requests_nvidia_and_cdi_but_never_device_nodes():
    slice_ = next(u for u in H200 if u.uuid == SMALL_A)
    nvidia = device_config([slice_], "nvidia")
    assert nvidia["device_requests"][0]["DeviceIDs"] == [SMALL_A]
    assert nvidia["env"]["NVIDIA_VISIBLE_DEVICES"] == SMALL_A == nvidia["env"]["CUDA_VISIBLE_DEVICES"]
    assert device_config([slice_], "cdi")["device_requests"][0]["DeviceIDs"] == [f"nvidia.com/gpu={SMALL_A}"]
    with pytest.raises(ValueError, match="MIG instances need gpu_mode 'nvidia' or 'cdi'"):
        device_config([slice_], "devices")


def test_mig_profiles_validate_and_the_form_shows_free_of_total_per_kind():
    profiles = load_profiles(
        [
            {"slug": "desktop", "display_name": "Desktop", "default": True},
            {"slug": "small", "display_name": "Small", "gpus": 1, "mig": "1g.18gb"},
            {"slug": "gpu", "display_name": "Whole", "gpus": 1},
        ]
    )
    assert profiles[1].gpu_label == "1 MIG 1g.18gb GPU slice" and profiles[1].gpu_kind == "1g.18gb"
    allocator = GPUAllocator(H200)
    allocator.allocate("bob/", 2, kind="1g.18gb")
    rows = {r["slug"]: r for r in form_rows(profiles, allocator, "ann/", None)}
    assert (rows["small"]["free"], rows["small"]["total"], rows["small"]["available"]) == (0, 2, False)
    assert rows["small"]["reason"] == "Not enough free MIG 1g.18gb GPU slices right now (0 free)."
    assert (rows["gpu"]["free"], rows["gpu"]["total"], rows["gpu"]["available"]) == (1, 2, True)
    bad_entries = (({"mig": "huge"}, "mig must name a MIG profile"), ({"mig": "1g.18gb", "gpus": 0}, "needs gpus"))
    for bad, message in bad_entries:
        with pytest.raises(ValueError, match=message):
            load_profiles([{"slug": "x", **bad}])
