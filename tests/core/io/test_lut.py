"""Label TIFFs carry a glasbey-like LUT that ImageJ reads: black background, distinct colours."""

from __future__ import annotations

import struct

import numpy as np
import tifffile

from napari_unet.core.io.lut import _lab, glasbey_lut
from napari_unet.core.io.tiff import write_labels


def test_the_colours_are_far_apart_and_the_background_is_black():
    lut = glasbey_lut()
    assert lut[:, 0].tolist() == [0, 0, 0]
    lab = _lab(lut[:, 1:].T.astype(float))
    distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1)[np.triu_indices(255, 1)]
    assert distances.min() > 10  # measured 12.5 (CIELAB); 255 random colours: about 1.3
    assert lab[:, 0].min() >= 35  # none too dark to see on the black background


def _ij_metadata_counts(path):
    """The IJMetadataByteCounts and the IJMetadata bytes, as Fiji's TiffDecoder reads them."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        counts = page.tags[50838].value
        fh = tif.filehandle
        fh.seek(page.tags[50839].valueoffset)
        raw = fh.read(sum(counts))
        return counts, raw, tif.byteorder


def test_label_tiffs_embed_the_lut_as_imagej_writes_it(tmp_path):
    labels = np.zeros((3, 32, 32), np.uint16)
    labels[1, 4:9, 4:9] = 300
    path = write_labels(tmp_path / "l.tif", labels, scale=(2.0, 0.5, 0.5)).path
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
        assert np.array_equal(np.asarray(meta["LUTs"]).reshape(3, 256), glasbey_lut())
        assert (meta["min"], meta["max"], meta["mode"]) == (0.0, 300.0, "color")
        assert meta["spacing"] == 2.0  # calibration kept
    counts, raw, order = _ij_metadata_counts(path)
    # header: magic "IJIJ", then (type, count) pairs as 32-bit ints in the file's byte order;
    # type "luts" with one 768-byte table (256 x R, then G, then B)
    header = struct.unpack(f"{order}{counts[0] // 4}I", raw[: counts[0]])
    assert header[0] == int.from_bytes(b"IJIJ", "big")
    pairs = dict(zip(header[1::2], header[2::2]))
    assert pairs[int.from_bytes(b"luts", "big")] == 1 and counts[1] == 768
    assert np.array_equal(np.frombuffer(raw[counts[0] : counts[0] + 768], np.uint8).reshape(3, 256), glasbey_lut())
    assert np.array_equal(tifffile.imread(path), labels)


def test_few_labels_map_one_to_one_onto_the_lut(tmp_path):
    labels = np.arange(40, dtype=np.uint8).reshape(5, 8)
    path = write_labels(tmp_path / "l.tif", labels).path
    with tifffile.TiffFile(path) as tif:
        assert (tif.imagej_metadata["min"], tif.imagej_metadata["max"]) == (0.0, 255.0)  # label k shows entry k


def test_no_lut_when_asked(tmp_path):
    path = write_labels(tmp_path / "l.tif", np.eye(8, dtype=np.uint8), lut=False).path
    with tifffile.TiffFile(path) as tif:
        assert "LUTs" not in tif.imagej_metadata
