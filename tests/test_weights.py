import json

import pytest
import torch
from safetensors.torch import save_file

from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.weights import build_encoder, encoder_spec, fingerprint, load_encoder, read_weights, save_encoder

SPEC = {"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 16}


def test_spec_fills_every_argument():
    spec = encoder_spec(SPEC, spatial_dims=1, in_channels=3)
    assert spec["name"] == "resnet" and spec["spatial_dims"] == 1 and spec["in_channels"] == 3
    assert spec["stem_kernel"] == 5 and spec["channels"] == [4, 8]
    assert json.loads(json.dumps(spec)) == spec
    with pytest.raises(ConfigError, match="unknown key 'encoder.depth'"):
        encoder_spec({**SPEC, "depth": 3}, spatial_dims=1)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_round_trip_reproduces_outputs(tmp_path, dims):
    torch.manual_seed(0)
    spec = encoder_spec(SPEC, spatial_dims=dims, in_channels=1)
    encoder = build_encoder(spec).eval()
    path = tmp_path / "enc.safetensors"
    fp = save_encoder(path, encoder, spec)
    loaded, loaded_spec, loaded_fp = load_encoder(path)
    assert loaded_spec == spec and loaded_fp == fp
    x = torch.randn(2, 1, *(16,) * dims)
    assert torch.equal(loaded.eval()(x), encoder(x))
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_fingerprint_follows_architecture_and_weights():
    spec = encoder_spec(SPEC, spatial_dims=2, in_channels=1)
    torch.manual_seed(0)
    a = build_encoder(spec).state_dict()
    assert fingerprint(spec, a) == fingerprint(spec, {k: v.clone() for k, v in a.items()})
    changed = {k: v.clone() for k, v in a.items()}
    changed["head.2.bias"] += 1e-3
    assert fingerprint(spec, changed) != fingerprint(spec, a)
    assert fingerprint({**spec, "embedding_dim": 17}, a) != fingerprint(spec, a)


def test_wrong_architecture_is_a_one_line_error_naming_both(tmp_path):
    spec = encoder_spec(SPEC, spatial_dims=2, in_channels=1)
    path = tmp_path / "resnet.safetensors"
    save_encoder(path, build_encoder(spec), spec)
    expected = encoder_spec({"name": "vgg", "channels": [4], "convs": [1]}, spatial_dims=2, in_channels=1)
    with pytest.raises(ModelMismatchError) as err:
        load_encoder(path, expected)
    message = str(err.value)
    assert "holds weights for resnet(" in message and "the recipe builds vgg(" in message and "\n" not in message


def test_foreign_state_dicts_are_checked_key_by_key(tmp_path):
    spec = encoder_spec(SPEC, spatial_dims=2, in_channels=1)
    state = {k: v.clone() for k, v in build_encoder(spec).state_dict().items()}
    state["head.2.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelMismatchError, match=r"head.2.weight has shape \(3, 3\), expected \(16, 8\)"):
        load_encoder(tmp_path / "plain.safetensors", spec)
    with pytest.raises(ModelMismatchError, match="no convgen encoder header"):
        load_encoder(tmp_path / "plain.safetensors")


def test_unreadable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="weights file not found"):
        read_weights(tmp_path / "missing.safetensors")
    with pytest.raises(DataError, match="is not a file"):
        read_weights(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(DataError, match="not a readable safetensors weights file"):
        read_weights(bad)


def test_checking_an_encoder_that_loads_its_own_weights_prints_no_torch_warning():
    """The bug: every command on an encoder that ships its weights (the ECG plugin's pretrained one) printed
    dozens of torch warnings ('copying from a non-meta parameter ... to a meta parameter ... no-op')."""
    import warnings

    from convgen.weights import _skeleton

    shipped = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}

    def factory():
        layer = torch.nn.Linear(3, 2)
        layer.load_state_dict(shipped)
        return layer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skeleton = _skeleton(factory, {})
    assert skeleton is not None and skeleton.weight.is_meta
    assert not [w for w in caught if "meta" in str(w.message)], [str(w.message) for w in caught]
