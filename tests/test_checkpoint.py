from __future__ import annotations

import pytest
import torch

from ratcli.errors import CheckpointError
from ratcli.models import RATConfig, build_rat, load_checkpoint, save_checkpoint
from ratcli.models.checkpoint import sha256_file

CFG = RATConfig(width=8, num_heads=2, num_groups=1, layers_per_group=1)


def test_round_trip_fp32_and_meta(tmp_path):
    torch.manual_seed(0)
    model = build_rat(CFG)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    meta = {"task": "ct", "norm": {"offset": -1024.0, "scale": 4096.0}, "steps": 3}
    digest = save_checkpoint(tmp_path / "m.pt", model, CFG, meta)
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.config == CFG and ck.meta == meta and ck.sha256 == digest
    assert digest == sha256_file(tmp_path / "m.pt")
    x = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(ck.build()(x), model.eval()(x))


def test_half_storage_is_close(tmp_path):
    model = build_rat(CFG)
    save_checkpoint(tmp_path / "h.pt", model, CFG, half=True)
    ck = load_checkpoint(tmp_path / "h.pt")
    assert all(v.dtype == torch.float16 for v in ck.state_dict.values() if v.is_floating_point())
    assert next(ck.build().parameters()).dtype == torch.float32


def test_loads_with_weights_only(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "m.pt", build_rat(CFG), CFG)
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(tmp_path / "m.pt")
    assert seen.get("weights_only") is True


def test_bad_files_raise_one_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a rat checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoints_from_before_sca_window_pool_their_old_tile(tmp_path):
    # written without the field, as every checkpoint before it: denoising models pooled
    # 256-px tiles, SR models 512 output px; a config that has the field keeps it
    from ratcli.models.checkpoint import FORMAT, save_tagged

    for scale, expected in ((1, 256), (2, 512), (4, 512)):
        config = RATConfig(width=8, num_heads=2, scale=scale).to_dict()
        del config["sca_window"]
        save_tagged(tmp_path / "old.pt", FORMAT, {"config": config, "state_dict": {},
                                                   "meta": {}})
        assert load_checkpoint(tmp_path / "old.pt").config.sca_window == expected
    new = RATConfig(width=8, num_heads=2, sca_window=64).to_dict()
    save_tagged(tmp_path / "new.pt", FORMAT, {"config": new, "state_dict": {}, "meta": {}})
    assert load_checkpoint(tmp_path / "new.pt").config.sca_window == 64
