"""Model files: round trips, safe loading of hostile or broken files, atomic saving."""

from __future__ import annotations

import json
import pathlib
import pickle
import struct

import numpy as np
import pytest
import torch

from core_helpers import tiny_model
from napari_unet.core.io import atomic
from napari_unet.core.network.model_file import FORMAT_VERSION, ModelFileError, load_model, read_description, save_model


@pytest.fixture
def model():
    m = tiny_model(padding="same", depth=2, base_features=4, seed=21, name="round trip", description="for tests")
    m.description.training_history.append(
        {"data": "nuclei/train", "epochs": 3, "metrics": {"val_iou": 0.71, "loss": [0.9, 0.5, 0.3]}, "note": None}
    )
    m.description.pixel_size_um = 0.325
    return m


@pytest.fixture
def saved(tmp_path, model):
    return save_model(model, tmp_path / "model.unet.safetensors")


def _outputs(model, seed=0):
    x = torch.from_numpy(np.random.default_rng(seed).random((1, 1, 32, 40)).astype(np.float32))
    with torch.no_grad():
        return model.network.eval()(x)


def _split(path):
    """(JSON header, tensor bytes) of a safetensors file."""
    raw = pathlib.Path(path).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def _join(path, header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    if len(text) % 256 == 0x80:  # keep clear of the bug shown by test_files_load_whatever_the_length_of_their_header
        text += b" " * 8
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + body)


def _edit_description(path, **changes):
    header, body = _split(path)
    doc = json.loads(header["__metadata__"]["napari_unet"])
    doc.update(changes)
    header["__metadata__"]["napari_unet"] = json.dumps(doc)
    _join(path, header, body)


# --- another instance rule ------------------------------------------------------------------


def test_with_instance_rule_shares_the_network_and_leaves_the_model_alone(model, saved):
    from napari_unet.core.network.model_file import load_model as load

    loaded = load(saved)
    rule = loaded.description.instance_rule.with_seed_threshold(0.9)
    twin = loaded.with_instance_rule(rule)
    assert twin.description.instance_rule.seed_threshold == 0.9
    assert loaded.description.instance_rule.seed_threshold is None  # the model keeps its own rule
    assert twin.network is loaded.network  # no copy of the weights
    assert twin.source == loaded.source == saved
    assert twin.description.name == loaded.description.name
    with pytest.raises(ValueError, match="class 7"):
        loaded.with_instance_rule(type(rule)("components", [7]))


# --- round trips ----------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs(model, saved):
    loaded = load_model(saved)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert not loaded.network.training


def test_round_trip_keeps_every_weight(model, saved):
    original = model.network.state_dict()
    loaded = load_model(saved).network.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)


def test_loaded_model_remembers_its_file(saved):
    assert load_model(saved).source == saved


def test_files_load_whatever_the_length_of_their_header(tmp_path, model):
    # safetensors pads the header length to a multiple of 8: stepping the name by 8
    # characters walks its low byte through all 32 possible values
    lengths = set()
    for i in range(32):
        model.description.name = "m" * (8 * i + 1)
        path = save_model(model, tmp_path / f"m{i}.unet.safetensors")
        (size,) = struct.unpack("<Q", path.read_bytes()[:8])
        lengths.add(size % 256)
        assert read_description(path).name == model.description.name, f"header length {size} refused"
    assert 128 in lengths  # its first byte is 0x80, the first byte of a pickle


def test_half_precision_file_is_smaller_and_close(tmp_path, model, saved):
    half = save_model(model, tmp_path / "half.unet.safetensors", half=True)
    assert half.stat().st_size < 0.75 * saved.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    reference = torch.softmax(_outputs(model), 1)
    assert (torch.softmax(_outputs(loaded), 1) - reference).abs().max() < 1e-2


def test_description_round_trip_including_training_history(model, saved):
    assert read_description(saved) == model.description
    assert load_model(saved).description == model.description
    assert read_description(saved).training_history[0]["metrics"]["loss"] == [0.9, 0.5, 0.3]


def test_description_is_readable_without_loading_weights(saved):
    header, _ = _split(saved)
    doc = json.loads(header["__metadata__"]["napari_unet"])
    assert doc["format"] == "napari-unet-model" and doc["weights_dtype"] == "float32"
    assert read_description(saved).name == "round trip"


def test_saving_does_not_change_the_model(model, tmp_path):
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    save_model(model, tmp_path / "a.unet.safetensors", half=True)
    assert all(torch.equal(v, model.network.state_dict()[k]) for k, v in before.items())
    assert next(model.network.parameters()).dtype == torch.float32


# --- refusing files --------------------------------------------------------------------------


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist; check the path"):
        load_model(tmp_path / "nope.unet.safetensors")


def test_folder_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder, not a model file"):
        load_model(tmp_path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.unet.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty or truncated"):
        load_model(path)


def test_file_truncated_in_the_weights_is_refused(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(saved)


def test_file_truncated_in_the_header_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(saved)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.unet.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFileError, match="not a napari-unet model file"):
        load_model(path)


def test_small_header_with_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.unet.safetensors"
    path.write_bytes(struct.pack("<Q", 16) + b"\xff\xfe not json!!" + b"\0" * 64)
    with pytest.raises(ModelFileError, match="unreadable header"):
        load_model(path)


def test_safetensors_file_without_napari_unet_description_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"producer": "another tool"})
    with pytest.raises(ModelFileError, match="no napari-unet description; it was made by another tool"):
        load_model(path)
    with pytest.raises(ModelFileError, match="made by another tool"):
        read_description(path)


def test_newer_format_version_is_refused(saved):
    _edit_description(saved, format_version=99)
    with pytest.raises(ModelFileError, match="format version 99, newer than .* update napari-unet"):
        load_model(saved)


def test_description_from_another_format_is_refused(saved):
    _edit_description(saved, format="something-else")
    with pytest.raises(ModelFileError, match="not a napari-unet model file"):
        load_model(saved)


def test_incomplete_description_is_refused(saved):
    header, body = _split(saved)
    doc = json.loads(header["__metadata__"]["napari_unet"])
    del doc["architecture"]["depth"]
    header["__metadata__"]["napari_unet"] = json.dumps(doc)
    _join(saved, header, body)
    with pytest.raises(ModelFileError, match="incomplete or invalid"):
        load_model(saved)


def test_weights_not_matching_the_architecture_are_refused(saved):
    header, body = _split(saved)
    doc = json.loads(header["__metadata__"]["napari_unet"])
    doc["architecture"]["base_features"] = 8
    header["__metadata__"]["napari_unet"] = json.dumps(doc)
    _join(saved, header, body)
    with pytest.raises(ModelFileError, match="shape .* expected"):
        load_model(saved)


def test_weights_with_nan_are_refused(tmp_path, model):
    with torch.no_grad():
        next(model.network.parameters())[0].fill_(float("nan"))
    path = save_model(model, tmp_path / "nan.unet.safetensors")
    with pytest.raises(ModelFileError, match="NaN or Inf; the model is broken"):
        load_model(path)


def test_torch_save_pickle_is_refused(tmp_path, model):
    path = tmp_path / "model.pt"
    torch.save(model.network.state_dict(), path)
    with pytest.raises(ModelFileError, match="pickle/torch.save file; napari-unet never loads those"):
        load_model(path)


def test_legacy_torch_save_pickle_is_refused(tmp_path, model):
    path = tmp_path / "model.pth"
    torch.save(model.network.state_dict(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="never loads those"):
        load_model(path)


class _Touch:
    """Unpickling this creates ``marker``: a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("writer", ["pickle", "pickle-protocol-0", "torch.save", "torch.save-legacy"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"state_dict": _Touch(marker)}
    path = tmp_path / "evil.unet.safetensors"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    elif writer == "pickle-protocol-0":
        path.write_bytes(pickle.dumps(payload, protocol=0))
    elif writer == "torch.save":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    # the payload really is armed: unpickling it would create the marker
    assert not marker.exists()
    with pytest.raises(ModelFileError):
        load_model(path)
    with pytest.raises(ModelFileError):
        read_description(path)
    assert not marker.exists()


def test_the_malicious_pickle_would_run_if_unpickled(tmp_path):
    # guards the test above: its payload is not a dud
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Touch(marker)))  # noqa: S301 - on purpose
    assert marker.exists()


# --- atomic saving -----------------------------------------------------------------------------


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_full_disk_keeps_the_previous_file_and_leaves_no_temporary(monkeypatch, tmp_path, model, saved):
    before = saved.read_bytes()

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with torch.no_grad():
        next(model.network.parameters()).add_(1.0)
    with pytest.raises(OSError, match="disk is full"):
        save_model(model, saved)
    assert saved.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failing_rename_keeps_the_previous_file_and_leaves_no_temporary(monkeypatch, tmp_path, model, saved):
    before = saved.read_bytes()

    def broken_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="nothing was written"):
        save_model(model, saved, half=True)
    assert saved.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_interrupted_save_keeps_the_previous_file(monkeypatch, tmp_path, model, saved):
    before = saved.read_bytes()

    def interrupt(fd):  # Ctrl-C after the bytes went out, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, saved, half=True)
    assert saved.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_saving_into_a_missing_folder_says_so(tmp_path, model):
    with pytest.raises(OSError, match="does not exist; create it"):
        save_model(model, tmp_path / "missing" / "m.unet.safetensors")


def test_successful_save_leaves_no_temporary(tmp_path, model, saved):
    save_model(model, saved)  # overwrite
    assert _leftovers(tmp_path) == []
    assert load_model(saved).description == model.description


# --- every refusal says what to do ------------------------------------------------------------

#: Phrases that tell the user what to do about a refused file.
_ADVICE = (
    "check the path",
    "copy or download it again",
    "choose a model file saved by napari-unet",
    "update napari-unet",
    "Ask for a napari-unet model file",
)


def _break(kind, path, model):
    """Turn the saved model file ``path`` into a broken file of ``kind``; returns the path to load."""
    raw = path.read_bytes()
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-weights":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "truncated-header":
        path.write_bytes(raw[:100])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "another-tool":
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(2)}, str(path), metadata={"producer": "another tool"})
    elif kind == "newer-version":
        _edit_description(path, format_version=FORMAT_VERSION + 1)
    elif kind == "another-format":
        _edit_description(path, format="something-else")
    elif kind == "nan-weights":
        with torch.no_grad():
            next(model.network.parameters()).fill_(float("nan"))
        save_model(model, path)
    elif kind == "pickle":
        torch.save(model.network.state_dict(), path)
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty",
        "truncated-weights",
        "truncated-header",
        "random-bytes",
        "another-tool",
        "newer-version",
        "another-format",
        "nan-weights",
        "pickle",
    ],
)
def test_every_refused_file_gets_a_message_that_says_what_to_do(saved, model, kind):
    path = _break(kind, saved, model)
    with pytest.raises(ModelFileError) as refused:
        load_model(path)
    message = str(refused.value)
    assert any(advice in message for advice in _ADVICE), message
    assert "Traceback" not in message


def test_the_format_version_written_is_the_oldest_that_holds_the_file(tmp_path, model):
    def version(m):
        header, _ = _split(save_model(m, tmp_path / "v.unet.safetensors"))
        return json.loads(header["__metadata__"]["napari_unet"])["format_version"]

    assert version(model) == 1
    model.description.object_diameter_px = 20.0
    assert version(model) == 2
    model.description.instance_rule = model.description.instance_rule.with_foreground_threshold(0.7)
    assert version(model) == 3 == FORMAT_VERSION
    assert load_model(tmp_path / "v.unet.safetensors").description.instance_rule.foreground_threshold == 0.7
