"""load_image and list_images: every odd image kind made here, and real DICOM files
(pydicom's test files and pydicom-data's CR, CT, MR and ultrasound images)."""
from __future__ import annotations

import io
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcap.data import is_dicom, list_images, load_image
from medcap.errors import MedcapError


def _save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def _px(im: Image.Image, xy) -> tuple[int, int, int]:
    assert im.mode == "RGB"
    return im.getpixel(xy)


# --------------------------------------------------------------------------- ordinary formats
@pytest.mark.parametrize("fmt,ext,kw", [
    ("JPEG", ".jpg", {"quality": 95}), ("PNG", ".png", {}), ("TIFF", ".tif", {}), ("BMP", ".bmp", {}),
    ("WEBP", ".webp", {"lossless": True}), ("GIF", ".gif", {}),
])
def test_common_formats_load_as_rgb_with_their_pixels(tmp_path, fmt, ext, kw):
    im = Image.new("RGB", (40, 30), (200, 30, 30))
    im.paste((20, 20, 220), (0, 0, 20, 30))
    out = load_image(_save(im, tmp_path / f"a{ext}", fmt, **kw))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.allclose(_px(out, (30, 15)), (200, 30, 30), atol=12)
    assert np.allclose(_px(out, (5, 15)), (20, 20, 220), atol=12)


def test_grayscale_and_bilevel_images_become_gray_rgb(tmp_path):
    out = load_image(_save(Image.new("L", (8, 8), 77), tmp_path / "g.jpg"))
    assert out.mode == "RGB" and np.allclose(_px(out, (3, 3)), (77, 77, 77), atol=2)
    out = load_image(_save(Image.new("1", (8, 8), 1), tmp_path / "b.png"))
    assert _px(out, (0, 0)) == (255, 255, 255)


def test_16_bit_png_is_scaled_by_its_own_min_and_max(tmp_path):
    # A 12-bit image stored in 16 bits: full-range scaling would make it almost black.
    arr = np.linspace(100, 4000, 64 * 16).reshape(16, 64).astype(np.uint16)
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    out = load_image(_save(src, tmp_path / "deep.png"))
    a = np.asarray(out)
    assert out.mode == "RGB" and a.min() == 0 and a.max() == 255
    expected = (arr.astype(float) - 100) / 3900 * 255
    assert np.abs(a[:, :, 0] - expected).max() <= 1  # linear in between


def test_float_and_32_bit_tiff_are_scaled_to_8_bits(tmp_path):
    f = np.linspace(-1.5, 2.5, 32 * 8, dtype=np.float32).reshape(8, 32)
    out = load_image(_save(Image.fromarray(f), tmp_path / "f.tif"))
    assert np.asarray(out)[:, :, 0].min() == 0 and np.asarray(out).max() == 255
    i32 = Image.fromarray(np.full((4, 4), 70000, dtype=np.int32))
    assert np.asarray(load_image(_save(i32, tmp_path / "const.tif"))).max() == 0  # constant: no division by zero


def test_palette_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 5, 10))  # left half: index 0, declared transparent
    out = load_image(_save(im, tmp_path / "p.png", transparency=0))
    assert _px(out, (2, 5)) == (255, 255, 255)
    assert _px(out, (7, 5)) == (255, 0, 0)
    plain = load_image(_save(im, tmp_path / "q.png"))  # no transparency: palette colours as they are
    assert _px(plain, (2, 5)) == (0, 0, 0)


def test_rgba_and_la_are_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    im.putpixel((0, 0), (0, 0, 255, 0))
    out = load_image(_save(im, tmp_path / "a.png"))
    assert _px(out, (0, 0)) == (255, 255, 255)
    assert np.allclose(_px(out, (2, 2)), (255, 127, 127), atol=2)
    la = Image.new("LA", (4, 4), (0, 255))
    la.putpixel((1, 1), (0, 0))
    out = load_image(_save(la, tmp_path / "la.png"))
    assert _px(out, (0, 0)) == (0, 0, 0) and _px(out, (1, 1)) == (255, 255, 255)


def test_alpha_that_hides_everything_is_ignored_not_turned_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (10, 200, 30, 0))
    assert _px(load_image(_save(im, tmp_path / "a.png")), (1, 1)) == (10, 200, 30)


def test_cmyk_jpeg_becomes_the_right_rgb_colour(tmp_path):
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(_save(im, tmp_path / "c.jpg", quality=95))
    r, g, b = _px(out, (8, 8))
    assert r > 220 and g < 40 and b < 40


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (20, 0, 40, 20))  # right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(_save(im, tmp_path / "phone.jpg", exif=exif, quality=95))
    assert out.size == (20, 40)
    assert sum(_px(out, (10, 5))) < 60 and sum(_px(out, (10, 35))) > 700  # left half went to the top


def test_bytes_load_the_same_as_the_file(tmp_path):
    p = _save(Image.new("RGB", (9, 7), (1, 2, 3)), tmp_path / "x.png")
    assert np.array_equal(np.asarray(load_image(p.read_bytes())), np.asarray(load_image(p)))


def test_draft_size_decodes_jpeg_at_a_reduced_scale_but_not_below_the_request(tmp_path):
    p = _save(Image.new("RGB", (800, 600), (90, 90, 90)), tmp_path / "big.jpg")
    assert load_image(p).size == (800, 600)
    small = load_image(p, draft_size=100)
    assert small.size == (200, 150) and min(small.size) >= 100


# --------------------------------------------------------------------------- refusals
def _png_claiming_size(path: Path, w: int, h: int) -> Path:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    p = _save(Image.new("RGB", (64, 64)), tmp_path / "a.png")
    with pytest.raises(MedcapError, match=r"a.png: image is 64x64 = 4,096 pixels, over the limit of 1,000"):
        load_image(p, max_pixels=1000)
    assert load_image(p, max_pixels=4096).size == (64, 64)


def test_decompression_bomb_header_is_refused_quickly_as_a_medcap_error(tmp_path):
    p = _png_claiming_size(tmp_path / "bomb.png", 60000, 60000)
    t = time.perf_counter()
    with pytest.raises(MedcapError, match="bomb"):
        load_image(p)
    assert time.perf_counter() - t < 2.0


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    data = _save(im, tmp_path / "full.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedcapError) as e:
        load_image(cut)
    assert str(e.value).startswith(f"{cut}: image data is truncated or corrupt")


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    with pytest.raises(MedcapError, match=r"notes.jpg: not an image file that can be read"):
        load_image(p)


def test_missing_image_file_and_folder_are_errors(tmp_path):
    with pytest.raises(MedcapError, match="nope.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(MedcapError, match="found a folder"):
        load_image(tmp_path)


# --------------------------------------------------------------------------- DICOM
def dicom_file(name: str) -> Path:
    """A file of pydicom's test set or of pydicom-data, never downloaded."""
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def _raw(name: str):
    import pydicom

    return pydicom.dcmread(dicom_file(name))


@pytest.mark.parametrize("name,size", [
    ("RG1_UNCR.dcm", (1841, 1955)),   # CR chest, MONOCHROME1, 15 bits
    ("RG3_UNCR.dcm", (1760, 1760)),   # CR extremity, MONOCHROME1
    ("MR2_UNCR.dcm", (1024, 1024)),   # MR with rescale and window
    ("693_UNCR.dcm", (512, 512)),     # CT head, HU window 40/100
    ("US1_UNCR.dcm", (640, 480)),     # ultrasound, RGB
    ("CT_small.dcm", (128, 128)),     # CT, no window
    ("MR_small.dcm", (64, 64)),
    ("OBXXXX1A.dcm", (800, 600)),     # ultrasound, PALETTE COLOR
])
def test_real_dicom_files_load_as_rgb_images_with_contrast(name, size):
    out = load_image(dicom_file(name))
    a = np.asarray(out)
    assert out.mode == "RGB" and out.size == size
    assert a.std() > 20 and int(a.max()) - int(a.min()) > 150


def test_ct_window_maps_hounsfield_units_as_dicom_defines():
    ds = _raw("693_UNCR.dcm")  # window centre 40, width 100, intercept -1024
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = np.asarray(load_image(dicom_file("693_UNCR.dcm")))[:, :, 0]
    assert (out[hu <= -10] == 0).all()     # below c - 0.5 - (w - 1)/2
    assert (out[hu > 90] == 255).all()     # above c - 0.5 + (w - 1)/2
    inside = (hu > 0) & (hu < 80)
    expected = (((hu[inside] - 39.5) / 99 + 0.5) * 255).round()
    assert np.abs(out[inside] - expected).max() <= 1


def test_monochrome1_is_inverted_so_the_brightest_stored_value_is_dark():
    ds = _raw("RG1_UNCR.dcm")
    raw = ds.pixel_array
    out = np.asarray(load_image(dicom_file("RG1_UNCR.dcm")))[:, :, 0]
    # Window 15000/30000 over 15 stored bits: the extremes land near, not at, black and white.
    assert out[raw == raw.max()].max() < 40 and out[raw == raw.min()].min() > 220


def test_same_data_as_monochrome2_gives_the_inverse_image(tmp_path):
    ds = _raw("RG3_UNCR.dcm")
    mono1 = np.asarray(load_image(dicom_file("RG3_UNCR.dcm")))
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "m2.dcm")
    mono2 = np.asarray(load_image(tmp_path / "m2.dcm"))
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))


def test_rescale_intercept_is_applied_before_the_window(tmp_path):
    ds = _raw("CT_small.dcm")  # intercept -1024, no window
    ds.WindowCenter, ds.WindowWidth = 0, 2  # a threshold at 0 HU
    ds.save_as(tmp_path / "w.dcm")
    hu = ds.pixel_array.astype(np.float64) - 1024
    out = np.asarray(load_image(tmp_path / "w.dcm"))[:, :, 0]
    assert (out[hu <= -1] == 0).all() and (out[hu >= 1] == 255).all()


def test_multi_frame_dicom_gives_its_middle_frame():
    ds = _raw("emri_small.dcm")  # 10 frames
    frame = ds.pixel_array[5].astype(np.float64)
    expected = np.round((frame - frame.min()) / (frame.max() - frame.min()) * 255)
    out = np.asarray(load_image(dicom_file("emri_small.dcm")))[:, :, 0]
    assert np.abs(out - expected).max() <= 1


def test_jpeg2000_dicom_decodes_like_the_uncompressed_original():
    pytest.importorskip("pydicom")
    j2k, unc = dicom_file("693_J2KR.dcm"), dicom_file("693_UNCR.dcm")
    try:
        a = np.asarray(load_image(j2k))
    except MedcapError as e:
        if "decoder is installed" in str(e):
            pytest.skip("no JPEG 2000 decoder here")
        raise
    assert np.array_equal(a, np.asarray(load_image(unc)))


def test_ybr_and_rgb_dicom_become_rgb():
    out = load_image(dicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    ref = load_image(dicom_file("SC_rgb.dcm"))
    assert out.size == ref.size == (100, 100)
    assert np.abs(np.asarray(out).astype(int) - np.asarray(ref).astype(int)).mean() < 8


def test_missing_dicom_decoder_names_the_decoder_and_the_pip_packages():
    import importlib.util

    if importlib.util.find_spec("libjpeg") or importlib.util.find_spec("gdcm"):
        pytest.skip("a JPEG lossless decoder is installed here")
    path = dicom_file("JPEG-LL.dcm")
    with pytest.raises(MedcapError) as e:
        load_image(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: no JPEG lossless decoder is installed")
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in msg and "\n" not in msg


def test_dicom_is_recognised_by_its_marker_whatever_the_name(tmp_path):
    src = dicom_file("CT_small.dcm")
    for name in ("scan", "scan.jpg"):
        shutil.copy(src, tmp_path / name)
        assert is_dicom(tmp_path / name)
        assert load_image(tmp_path / name).size == (128, 128)
    assert load_image(src.read_bytes()).size == (128, 128)


def test_dicom_without_pixel_data_or_over_the_limit_is_refused(tmp_path):
    ds = _raw("CT_small.dcm")
    with pytest.raises(MedcapError, match="over the limit"):
        load_image(dicom_file("CT_small.dcm"), max_pixels=100)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(MedcapError, match="nopix.dcm: DICOM file holds no image"):
        load_image(tmp_path / "nopix.dcm")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(MedcapError, match="fake.dcm: "):
        load_image(tmp_path / "fake.dcm")


# --------------------------------------------------------------------------- list_images
def test_list_images_sorted_by_name_with_every_extension_and_extensionless_dicom(tmp_path):
    for n in ("b.JPG", "a.png", "c.dcm", "d.tiff", "e.webp", "f.bmp", "notes.txt", ".hidden.jpg", "README"):
        (tmp_path / n).write_bytes(b"x")
    shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "scan0001")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.jpg").write_bytes(b"x")
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.png", "b.JPG", "c.dcm", "d.tiff", "e.webp", "f.bmp", "scan0001"]
    assert [p.name for p in list_images(tmp_path, recursive=True)][-1] == "z.jpg"


def test_list_images_keeps_the_order_of_named_files_and_drops_repeats(tmp_path):
    for n in ("a.jpg", "b.jpg"):
        (tmp_path / n).write_bytes(b"x")
    got = list_images([tmp_path / "b.jpg", tmp_path / "a.jpg", tmp_path])
    assert got == [tmp_path / "b.jpg", tmp_path / "a.jpg"]


def test_list_images_errors_when_nothing_or_a_missing_path_is_given(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MedcapError, match="no images found in .* \\(looked for .jpg"):
        list_images(tmp_path)
    with pytest.raises(MedcapError, match="nope: no such file or folder"):
        list_images(tmp_path / "nope")
