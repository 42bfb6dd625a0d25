"""Model files that would exhaust memory, and malformed descriptions: every one is a ModelFileError.

The header is checked before anything is allocated: the architecture is bounded, the
weights' names, shapes and dtypes must match the described network (built on the meta
device) and the bytes the header promises must be in the file.
"""

from __future__ import annotations

import copy
import json
import pathlib
import struct
import subprocess
import sys
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_helpers import tiny_model
from napari_unet.core.network import file_header, model_file
from napari_unet.core.network.model_file import (
    FORMAT_VERSION,
    ModelFileError,
    load_model,
    read_description,
    save_model,
)
from napari_unet.core.network.registry import models_folder
from napari_unet.core.network.unet import MAX_CLASSES, MAX_DEPTH, MAX_IN_CHANNELS, MAX_WIDEST_FEATURES, UNet, UNetConfig

SRC = pathlib.Path(model_file.__file__).resolve().parents[3]


def _split(path):
    raw = pathlib.Path(path).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def _join(path, header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + body)
    return pathlib.Path(path)


def _doc(header):
    return json.loads(header["__metadata__"]["napari_unet"])


def _with_doc(header, doc):
    header = dict(header)
    header["__metadata__"] = {"napari_unet": json.dumps(doc)}
    return header


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """(header, body) of a small valid model file."""
    model = tiny_model(padding="same", depth=2, base_features=4, seed=3, name="valid", description="for tests")
    return _split(save_model(model, tmp_path_factory.mktemp("valid") / "m.unet.safetensors"))


def _matching_header(config, doc):
    """A header whose tensors match ``config`` exactly (float32), and the size of the data it promises."""
    with torch.device("meta"):
        state = UNet(config).state_dict()
    header, offset = {}, 0
    for key, value in state.items():
        size = value.numel() * (4 if value.is_floating_point() else 8)
        dtype = "F32" if value.is_floating_point() else "I64"
        header[key] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + size]}
        offset += size
    doc = {**doc, "architecture": config.to_dict()}
    return _with_doc(header, doc), offset


# --- the limits of the architecture --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("in_channels", MAX_IN_CHANNELS + 1, MAX_IN_CHANNELS),
        ("n_classes", MAX_CLASSES + 1, MAX_CLASSES),
        ("depth", MAX_DEPTH + 1, MAX_DEPTH),
        ("base_features", 100_000, MAX_WIDEST_FEATURES),
    ],
)
def test_each_setting_beyond_its_limit_is_refused_naming_it(field, value, limit):
    with pytest.raises(ValueError, match=f"{field} must be between 1 and {limit}, got {value}"):
        UNetConfig(**{field: value})


def test_the_deepest_level_is_bounded():
    UNetConfig(depth=5, base_features=MAX_WIDEST_FEATURES // 16)  # exactly at the limit
    with pytest.raises(ValueError, match=f"more than the limit of {MAX_WIDEST_FEATURES}"):
        UNetConfig(depth=8, base_features=32)


def test_the_shipped_models_and_the_paper_are_well_inside_the_limits():
    for path in models_folder().glob("*.unet.safetensors"):
        config = read_description(path).config
        assert config.base_features * 2 ** (config.depth - 1) * 4 <= MAX_WIDEST_FEATURES
    assert UNetConfig(depth=5, base_features=64).features[-1] * 2 == MAX_WIDEST_FEATURES


@pytest.mark.parametrize("depth", range(1, MAX_DEPTH + 1))
def test_the_largest_network_within_the_limits_has_at_most_125_million_parameters(depth):
    config = UNetConfig(
        in_channels=MAX_IN_CHANNELS,
        n_classes=MAX_CLASSES,
        depth=depth,
        base_features=MAX_WIDEST_FEATURES // 2 ** (depth - 1),
        norm="batch",
    )
    with torch.device("meta"):
        network = UNet(config, initialise=False)
    assert sum(p.numel() for p in network.parameters()) <= 125_000_000


@pytest.mark.parametrize("value", [True, 2.0, "4", None])
def test_settings_of_the_wrong_type_are_refused(value):
    with pytest.raises(ValueError, match="base_features must be a whole number"):
        UNetConfig(base_features=value)


def test_group_norm_with_features_it_cannot_split_is_refused():
    UNetConfig(norm="group", base_features=4, depth=2)  # 4, 8: groups of min(8, c)
    with pytest.raises(ValueError, match="norm 'group' needs base_features below 8 or a multiple of 8"):
        UNetConfig(norm="group", base_features=12, depth=2)


def test_a_group_norm_file_that_torch_cannot_build_is_a_model_file_error(tmp_path, valid):
    header, body = valid
    doc = _doc(header)
    doc["architecture"].update(norm="group", base_features=3, depth=3)  # 3, 6, 12: 12 channels in 8 groups
    path = _join(tmp_path / "g.unet.safetensors", _with_doc(header, doc), body)
    with pytest.raises(ModelFileError, match="norm 'group' needs"):
        load_model(path)


# --- crafted headers: refused before anything is allocated ----------------------------------------


def test_huge_base_features_is_refused_naming_the_field(tmp_path, valid):
    header, body = valid
    doc = _doc(header)
    doc["architecture"]["base_features"] = 100_000
    path = _join(tmp_path / "huge.unet.safetensors", _with_doc(header, doc), body)
    with pytest.raises(ModelFileError, match="base_features must be between 1 and 2048, got 100000"):
        load_model(path)


def test_weights_not_matching_are_refused_before_the_network_is_built(tmp_path, valid, monkeypatch):
    header, body = valid
    doc = _doc(header)
    doc["architecture"].update(depth=8, base_features=16)  # within the limits: ~125 M parameters
    path = _join(tmp_path / "deep.unet.safetensors", _with_doc(header, doc), body)
    built, real = [], model_file.UNet

    def spy(config, **options):
        network = real(config, **options)
        if next(network.parameters()).device.type != "meta":
            built.append(config)
        return network

    monkeypatch.setattr(model_file, "UNet", spy)
    with pytest.raises(ModelFileError, match="do not match the described architecture"):
        load_model(path)
    assert built == []


def test_a_file_shorter_than_its_header_says_is_refused_as_truncated(tmp_path, valid):
    header, promised = _matching_header(UNetConfig(depth=8, base_features=16, padding="same"), _doc(valid[0]))
    doc = _doc(header)
    doc.update(
        channel_names=["ch0"], class_names=["a", "b"], instance_rule={"method": "none", "foreground_classes": []}
    )
    path = _join(tmp_path / "short.unet.safetensors", _with_doc(header, doc), b"\0" * 1_000_000)
    with pytest.raises(ModelFileError, match=f"truncated: its header describes {promised} bytes"):
        load_model(path)


def test_bytes_after_the_weights_are_refused(tmp_path, valid):
    header, body = valid
    path = _join(tmp_path / "long.unet.safetensors", header, body + b"\0" * 64)
    with pytest.raises(ModelFileError, match="64 bytes after its weights"):
        load_model(path)


def test_a_wrong_dtype_is_refused(tmp_path, valid):
    header, body = valid
    header = copy.deepcopy(header)
    key = next(k for k in header if k != "__metadata__" and header[k]["dtype"] == "F32")
    header[key]["dtype"] = "I32"  # same size, not a float
    path = _join(tmp_path / "dtype.unet.safetensors", header, body)
    with pytest.raises(ModelFileError, match=f"weight {key} is stored as 'I32'"):
        load_model(path)


def test_overlapping_weights_are_refused(tmp_path, valid):
    header, body = valid
    header = copy.deepcopy(header)
    keys = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    first, second = header[keys[0]], header[keys[1]]
    if first["data_offsets"][1] - first["data_offsets"][0] == second["data_offsets"][1] - second["data_offsets"][0]:
        second["data_offsets"] = list(first["data_offsets"])
    else:
        second["data_offsets"] = [x - 4 for x in second["data_offsets"]]
    path = _join(tmp_path / "overlap.unet.safetensors", header, body)
    with pytest.raises(ModelFileError, match="overlap or leave a gap|byte range"):
        load_model(path)


def test_too_many_tensors_are_refused(tmp_path, valid):
    header, body = valid
    header = dict(header)
    for i in range(file_header.MAX_TENSORS + 1):
        header[f"junk.{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    path = _join(tmp_path / "many.unet.safetensors", header, body)
    with pytest.raises(ModelFileError, match=f"lists {file_header.MAX_TENSORS + len(valid[0])} tensors"):
        load_model(path)


def test_a_header_beyond_the_limit_is_refused(tmp_path, valid):
    header, body = valid
    doc = _doc(header)
    doc["description"] = "x" * (file_header.MAX_HEADER_BYTES + 1)
    path = _join(tmp_path / "big.unet.safetensors", _with_doc(header, doc), body)
    with pytest.raises(ModelFileError, match=f"more than the {file_header.MAX_HEADER_BYTES} a model file may have"):
        read_description(path)


def test_a_deeply_nested_header_is_refused(tmp_path, valid):
    _, body = valid
    path = tmp_path / "nested.unet.safetensors"
    text = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)
    with pytest.raises(ModelFileError, match="unreadable header"):
        load_model(path)


_MEASURE = """
import json, resource, sys, time
from napari_unet.core.network.model_file import ModelFileError, load_model
start = time.perf_counter()
try:
    load_model(sys.argv[1])
    outcome = "loaded"
except ModelFileError as exc:
    outcome = "refused: " + str(exc)
seconds = time.perf_counter() - start
print(json.dumps({"outcome": outcome, "seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _measure(path):
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_crafted_files_are_refused_within_a_second_and_100_mb(tmp_path, valid):
    header, body = valid
    crafted = []
    doc = _doc(header)
    doc["architecture"]["base_features"] = 100_000
    crafted.append(_join(tmp_path / "wide.unet.safetensors", _with_doc(header, doc), b"\0" * 1_000_000))
    doc = _doc(header)
    doc["architecture"].update(depth=8, base_features=16)
    crafted.append(_join(tmp_path / "deep.unet.safetensors", _with_doc(header, doc), b"\0" * 1_000_000))
    deep, _ = _matching_header(UNetConfig(depth=8, base_features=16, padding="same"), _doc(header))
    doc = _doc(deep)
    doc.update(
        channel_names=["ch0"], class_names=["a", "b"], instance_rule={"method": "none", "foreground_classes": []}
    )
    crafted.append(_join(tmp_path / "short.unet.safetensors", _with_doc(deep, doc), b"\0" * 1_000_000))
    normal = _measure(models_folder() / "nuclei.unet.safetensors")
    assert normal["outcome"] == "loaded"
    for path in crafted:
        assert path.stat().st_size < 1_200_000
        result = _measure(path)
        assert result["outcome"].startswith("refused: "), (path.name, result)
        assert result["seconds"] < 1.0, (path.name, result)
        assert result["rss_kb"] - normal["rss_kb"] < 100 * 1024, (path.name, result, normal)


# --- fuzzing the description --------------------------------------------------------------------

_NOT_INT = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=5), st.lists(st.integers(), max_size=3)
)
_NOT_TEXT = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(st.text(max_size=3), max_size=3))
_NESTED = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=10,
)
_HUGE = st.integers(min_value=10**6, max_value=10**30)
_NEGATIVE = st.integers(max_value=-1)
_BAD_FRACTION = st.one_of(
    st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(float("nan")), st.text(max_size=3), st.none()
)


def _other_than(value):
    return st.integers(min_value=-(10**30), max_value=10**30).filter(lambda v: v != value)


def _mutations(doc):
    """Strategy of (path, new value or DELETE) pairs that each make ``doc`` invalid."""
    arch = doc["architecture"]
    n_classes = arch["n_classes"]
    bad = [
        *[
            (("architecture", key), st.one_of(_NOT_INT, _other_than(arch[key])))
            for key in ("in_channels", "n_classes", "depth", "base_features")
        ],
        (
            ("architecture", "padding"),
            st.one_of(_NOT_TEXT, st.text(max_size=6).filter(lambda t: t not in ("valid", "same"))),
        ),
        (("architecture", "norm"), st.one_of(_NOT_TEXT, st.text(max_size=6).filter(lambda t: t != arch["norm"]))),
        (
            ("architecture", "dropout"),
            st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.text(max_size=3), st.none()),
        ),
        (
            ("normalization", "kind"),
            st.one_of(_NOT_TEXT, st.text(max_size=6).filter(lambda t: t not in ("percentile", "range", "zscore"))),
        ),
        (
            ("normalization", "low"),
            st.one_of(st.floats(min_value=99.8), _NEGATIVE, st.just(float("nan")), st.text(max_size=3), st.none()),
        ),
        (
            ("normalization", "high"),
            st.one_of(st.floats(min_value=100.001), st.floats(max_value=1.0), st.text(max_size=3)),
        ),
        (
            ("channel_names",),
            st.one_of(
                _NOT_TEXT.filter(lambda v: not isinstance(v, list)),
                st.lists(st.text(), min_size=2, max_size=4),
                st.lists(_NOT_TEXT, min_size=1, max_size=1),
            ),
        ),
        (
            ("class_names",),
            st.one_of(
                _NOT_TEXT.filter(lambda v: not isinstance(v, list)),
                st.lists(st.text(), max_size=2),
                st.lists(_NOT_TEXT, min_size=n_classes, max_size=n_classes),
            ),
        ),
        (
            ("instance_rule", "method"),
            st.one_of(
                _NOT_TEXT, st.text(max_size=6).filter(lambda t: t not in ("seeded_watershed", "components", "none"))
            ),
        ),
        (
            ("instance_rule", "foreground_classes"),
            st.one_of(
                st.lists(st.integers(min_value=n_classes), min_size=1, max_size=3),
                st.lists(_NEGATIVE, min_size=1, max_size=2),
                st.lists(_NOT_INT.filter(lambda v: v is not None), min_size=1, max_size=2),
                _NOT_INT.filter(lambda v: not isinstance(v, list)),
                st.just([]),
            ),
        ),
        (
            ("instance_rule", "seed_classes"),
            st.one_of(
                st.lists(st.integers(min_value=n_classes), min_size=1, max_size=3),
                st.just([]),
                _NESTED.filter(lambda v: not isinstance(v, list)),
            ),
        ),
        (
            ("instance_rule", "min_size"),
            st.one_of(_NEGATIVE, _HUGE.map(lambda v: v * 10**10), st.floats(), st.text(max_size=3), st.booleans()),
        ),
        (("instance_rule", "seed_threshold"), _BAD_FRACTION.filter(lambda v: v is not None)),
        (("name",), _NOT_TEXT),
        (("description",), _NOT_TEXT.filter(lambda v: v is not None)),
        (("saved",), _NOT_TEXT.filter(lambda v: v is not None)),
        (("weights_dtype",), _NOT_TEXT.filter(lambda v: v is not None)),
        (
            ("pixel_size_um",),
            st.one_of(
                st.floats(max_value=0.0),
                st.just(float("inf")),
                st.just(float("nan")),
                st.text(max_size=3),
                st.lists(st.integers(), max_size=2),
            ),
        ),
        (
            ("object_diameter_px",),
            st.one_of(
                st.floats(max_value=0.0),
                st.just(float("inf")),
                st.just(float("nan")),
                st.text(max_size=3),
                st.lists(st.integers(), max_size=2),
            ),
        ),
        (
            ("training_history",),
            st.one_of(
                st.text(max_size=3),
                st.integers(),
                st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), min_size=1, max_size=3),
                st.just([{"deep": json.loads("[" * 40 + "]" * 40)}]),
            ),
        ),
        (("format_version",), st.one_of(_NOT_INT, st.integers(max_value=0), st.integers(min_value=FORMAT_VERSION + 1))),
        (("format",), st.one_of(_NOT_TEXT, st.text(max_size=8).filter(lambda t: t != "napari-unet-model"))),
        (("architecture",), _NESTED.filter(lambda v: v != arch)),
        (("normalization",), _NESTED),
        (("instance_rule",), _NESTED),
    ]
    required = [
        ("format",),
        ("format_version",),
        ("architecture",),
        ("normalization",),
        ("channel_names",),
        ("class_names",),
        ("instance_rule",),
        ("architecture", "depth"),
        ("architecture", "norm"),
        ("normalization", "kind"),
        ("normalization", "low"),
        ("instance_rule", "method"),
        ("instance_rule", "foreground_classes"),
    ]
    extra = [
        (("junk",), _NESTED),
        (("architecture", "junk"), _NESTED),
        (("normalization", "junk"), _NESTED),
        (("instance_rule", "junk"), _NESTED),
    ]
    changes = st.sampled_from(bad + extra).flatmap(lambda pair: st.tuples(st.just(pair[0]), pair[1]))
    deletions = st.sampled_from(required).map(lambda path: (path, DELETE))
    return st.one_of(changes, deletions)


DELETE = object()


def _apply(doc, path, value):
    doc = copy.deepcopy(doc)
    where = doc
    for key in path[:-1]:
        where = where[key]
    if value is DELETE:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return doc


@pytest.fixture(scope="module")
def fuzz_target(valid):
    header, body = valid
    doc = _doc(header)
    doc["instance_rule"]["seed_threshold"] = 0.5  # present, so that mutating it is a change
    return header, body, doc


def test_the_unmutated_fuzz_target_loads(fuzz_target, tmp_path):
    header, body, doc = fuzz_target
    model = load_model(_join(tmp_path / "m.unet.safetensors", _with_doc(header, doc), body))
    assert model.description.instance_rule.seed_threshold == 0.5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_malformed_description_is_a_model_file_error(fuzz_target, data):
    header, body, doc = fuzz_target
    path, value = data.draw(_mutations(doc))
    broken = _apply(doc, path, value)
    with tempfile.TemporaryDirectory() as folder:
        file = _join(pathlib.Path(folder) / "m.unet.safetensors", _with_doc(header, broken), body)
        with pytest.raises(ModelFileError) as refused:
            load_model(file)
    assert "Traceback" not in str(refused.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_malformed_tensor_entry_is_a_model_file_error(valid, data):
    header, body = valid
    header = copy.deepcopy(header)
    key = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "entry", "delete", "add"]))
    if field == "delete":
        del header[key]
    elif field == "add":
        header[data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in header))] = header[key]
    elif field == "entry":
        header[key] = data.draw(_NESTED.filter(lambda v: v != header[key]))
    else:
        original = json.dumps(header[key][field])
        header[key][field] = data.draw(
            st.one_of(_NESTED, st.lists(st.one_of(st.integers(), st.floats(), st.booleans()), max_size=4)).filter(
                lambda v: json.dumps(v) != original
            )
        )
    with tempfile.TemporaryDirectory() as folder:
        file = _join(pathlib.Path(folder) / "m.unet.safetensors", header, body)
        with pytest.raises(ModelFileError):
            load_model(file)
