"""Image loading that never surprises: every file becomes an 8-bit RGB ``PIL.Image``.

ImageCLEFmedical images are PubMed Central figures (REFERENCE §5), almost all JPEG, but users
bring their own: PNG/TIFF/BMP/WebP/GIF, grayscale, 16-bit, palette, transparency, CMYK,
phone photos with an EXIF rotation, and DICOM straight from a scanner. The rules:

* **One decode per call.** A file is opened once and decoded once; JPEGs can be decoded
  at a reduced DCT scale with ``draft_size`` (the training hot path needs 224 px, not 2000).
* **Orientation**: the EXIF orientation tag is applied (``ImageOps.exif_transpose``).
* **16-bit and float images** (PIL modes ``I;16``, ``I``, ``F``) are scaled to 8 bits by
  their *actual* minimum and maximum. Medical 16-bit PNG/TIFF files usually hold 10-12
  significant bits, which a full-range scaling would render almost black.
* **Transparency** (``RGBA``, ``LA``, palette with a transparent colour) is composited on
  **white**: a transparent area of a published figure is the page it sits on. An alpha
  channel that is zero everywhere (a common export bug) is ignored instead of giving a
  blank image.
* **CMYK** goes through PIL's conversion (Adobe-inverted JPEGs are handled by PIL).
* **Decompression bombs**: an image with more than ``max_pixels`` pixels (default
  :data:`MAX_PIXELS`, PIL's own warning level) raises :class:`MedcapError` before any
  pixel is decoded. PIL refuses images above twice its ``Image.MAX_IMAGE_PIXELS`` itself;
  that refusal is reported the same way.
* **DICOM** is recognised by the ``DICM`` marker at byte 128 (or a ``.dcm``/``.dicom``
  name) and read with pydicom: the modality LUT (rescale slope/intercept), then the VOI
  LUT or the first window (centre/width, DICOM PS3.3 C.11.2), else the pixel range;
  ``MONOCHROME1`` is inverted so that air is dark, as on ``MONOCHROME2``; a multi-frame
  image gives its middle frame (decoded alone); RGB, YBR and palette colour become RGB.
  Compressed pixel data whose decoder plugin is missing raises :class:`MedcapError` that
  names the decoder and the pip packages that provide it.
* Anything unreadable (truncated data, a text file called ``.jpg``) raises
  :class:`MedcapError` naming the file.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Union

from ..errors import MedcapError
from .csvio import open_input

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageSource", "is_dicom", "list_images", "load_image"]

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

# File name endings taken as images by list_images (case-insensitive). Files without an
# extension are taken too when they carry the DICOM marker.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".dcm", ".dicom")
_DICOM_EXTENSIONS = (".dcm", ".dicom")

# Largest image (width x height) load_image accepts by default: PIL's own warning level,
# 89.5 million pixels; a PubMed figure is far smaller. Change it here or per call.
MAX_PIXELS = 89_478_485

# Transfer syntax UID -> (decoder, pip packages that provide one), for the error raised
# when pydicom has no plugin for compressed pixel data.
_J_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_J_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
_DICOM_DECODERS = {
    "1.2.840.10008.1.2.4.50": ("JPEG baseline", _J_LIBJPEG),
    "1.2.840.10008.1.2.4.51": ("JPEG extended", _J_LIBJPEG),
    "1.2.840.10008.1.2.4.57": ("JPEG lossless", _J_LIBJPEG),
    "1.2.840.10008.1.2.4.70": ("JPEG lossless", _J_LIBJPEG),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS", _J_LIBJPEG),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS", _J_LIBJPEG),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000", _J_OPENJPEG),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", _J_OPENJPEG),
    "1.2.840.10008.1.2.4.201": ("High-Throughput JPEG 2000", _J_OPENJPEG),
    "1.2.840.10008.1.2.4.202": ("High-Throughput JPEG 2000", _J_OPENJPEG),
    "1.2.840.10008.1.2.4.203": ("High-Throughput JPEG 2000", _J_OPENJPEG),
    "1.2.840.10008.1.2.5": ("RLE lossless", "pylibjpeg pylibjpeg-rle"),
}


def is_dicom(source: ImageSource) -> bool:
    """True when the file or bytes carry the DICOM marker ``DICM`` at byte 128."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[128:132]) == b"DICM"
    try:
        with open(source, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    draft_size: int | None = None,
    name: str | None = None,
    max_side: int | None = None,
) -> "Image.Image":
    """Load an image file (or its bytes) as an 8-bit ``RGB`` ``PIL.Image``.

    ``max_pixels``: the decompression-bomb limit (default :data:`MAX_PIXELS`).
    ``draft_size``: for JPEGs, decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps
    both sides at least this many pixels; the caller resizes afterwards. ``None`` decodes
    at full size. ``name`` labels bytes in error messages (e.g. the image ID).
    ``max_side``: shrink (keeping the aspect ratio) so that no side is longer, as soon as the
    pixels are decoded and before any conversion (the web app: no full-size RGB copy is made).
    Raises :class:`MedcapError` naming the file for anything unreadable.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<image bytes>"
        fp = io.BytesIO(source)
        dicom = bytes(source[128:132]) == b"DICM"
        force = False
    else:
        path = Path(source)
        label = name or str(path)
        fp = open_input(path, "image file", label)
        head = fp.read(132)
        fp.seek(0)
        # A .dcm file without the 128-byte preamble (old ACR-NEMA style) is still tried.
        force = path.suffix.lower() in _DICOM_EXTENSIONS
        dicom = head[128:132] == b"DICM" or force
    with fp:
        if dicom:
            image = _load_dicom(fp, label, limit, force)
            if max_side:
                image.thumbnail((max_side, max_side))
            return image
        image = _load_pil(fp, label, limit, draft_size, max_side)
    if max_side:
        image.thumbnail((max_side, max_side))
    return image


# --------------------------------------------------------------------------- PIL formats
def _load_pil(fp, label: str, limit: int, draft_size: int | None, max_side: int | None = None) -> "Image.Image":
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Our own limit below decides; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise MedcapError(f"image refused as a possible decompression bomb ({e})", file=label) from None
    except UnidentifiedImageError:
        raise MedcapError("not an image file that can be read (expected JPEG, PNG, TIFF, BMP, WebP, GIF or DICOM)",
                          file=label) from None
    except MemoryError:
        raise
    except Exception as e:  # PIL raises many types for a broken header
        raise MedcapError(f"cannot read image header: {_why(e)}", file=label) from None

    w, h = im.size
    if w * h > limit:
        raise MedcapError(f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
                          "(a decompression bomb?); raise medcap.data.images.MAX_PIXELS if it is genuine",
                          file=label)
    if draft_size and im.format == "JPEG":
        im.draft(None, (draft_size, draft_size))
    try:
        im.load()
    except MemoryError:
        raise
    except Exception as e:
        raise MedcapError(f"image data is truncated or corrupt: {_why(e)}", file=label) from None
    if max_side and max(im.size) > max_side and im.mode in ("L", "LA", "RGB", "RGBA"):
        im.thumbnail((max_side, max_side))  # other modes are shrunk after their conversion to RGB
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # an unreadable EXIF block only loses the orientation hint
        pass
    return _pil_to_rgb(im)


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__


def is_image_object(x) -> bool:
    """A PIL image or a numpy array (an image in memory, not a path)?"""
    import numpy as np
    from PIL import Image

    return isinstance(x, (Image.Image, np.ndarray))


def to_rgb_image(x, name: str = "<array>") -> "Image.Image":
    """A PIL image (any mode) or a numpy array (H x W gray, H x W x 3|4, or 3 x H x W; uint8 as is,
    floats in [0, 1] times 255, anything else scaled by its own range, as 16-bit files are) ->
    8-bit RGB, by the rules of :func:`load_image`."""
    import numpy as np
    from PIL import Image

    if isinstance(x, Image.Image):
        return _pil_to_rgb(x)
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # channels first (torch's layout)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or 0 in a.shape:
        raise MedcapError(f"{name}: expected an image array of shape H x W, H x W x 3|4 or 3 x H x W, "
                          f"got {a.shape}")
    if a.dtype != np.uint8:
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        unit = a.dtype.kind == "f" and finite.size and finite.min() >= 0 and finite.max() <= 1
        a = _scale_to_uint8(a, 0.0, 1.0) if unit else _scale_to_uint8(a)
    if a.ndim == 2:
        return _gray_to_rgb(np.ascontiguousarray(a))
    return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(a), "RGBA" if a.shape[-1] == 4 else "RGB"))


def _pil_to_rgb(im: "Image.Image") -> "Image.Image":
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I", "F") or mode.startswith("I;16"):
        import numpy as np

        return _gray_to_rgb(_scale_to_uint8(np.asarray(im)))
    if mode in ("P", "PA"):
        if mode == "PA" or "transparency" in im.info:
            im = im.convert("RGBA")
        else:
            return im.convert("RGB")
    if mode in ("La", "RGBa"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
    if im.mode in ("RGBA", "LA"):
        alpha = im.getchannel("A")
        if alpha.getextrema()[1] == 0:  # fully transparent everywhere: an export bug, ignore alpha
            return im.convert("RGB")
        # Composite on white: a transparent area of a figure is the page behind it.
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im.convert("RGB"), mask=alpha)
        return out
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(arr: "np.ndarray", lo: float | None = None, hi: float | None = None) -> "np.ndarray":
    """Map [lo, hi] (default: the array's own min/max) linearly onto 0..255."""
    import numpy as np

    a = arr.astype(np.float32, copy=False)
    if a.dtype.kind == "f" and not np.isfinite(a).all():  # float image: NaN -> min, +/-inf -> max/min
        finite = a[np.isfinite(a)]
        a = np.nan_to_num(a, nan=finite.min() if finite.size else 0.0,
                          posinf=finite.max() if finite.size else 0.0,
                          neginf=finite.min() if finite.size else 0.0)
    if lo is None or hi is None:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (a - lo) * np.float32(255.0 / (hi - lo))
    np.clip(out, 0, 255, out=out)
    return (out + 0.5).astype(np.uint8)


def _gray_to_rgb(u8: "np.ndarray") -> "Image.Image":
    from PIL import Image

    return Image.fromarray(u8).convert("RGB")


# --------------------------------------------------------------------------- DICOM
def _load_dicom(fp, label: str, limit: int, force: bool) -> "Image.Image":
    import numpy as np
    import pydicom
    from PIL import Image

    try:
        ds = pydicom.dcmread(fp, force=force)
    except MemoryError:
        raise
    except Exception as e:
        raise MedcapError(f"cannot read DICOM file: {_why(e)}", file=label) from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise MedcapError("DICOM file holds no image (no Pixel Data element)", file=label)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise MedcapError("DICOM file lacks valid Rows/Columns", file=label) from None
    if rows * cols > limit:
        raise MedcapError(f"image is {cols}x{rows} = {rows * cols:,} pixels, over the limit of {limit:,} "
                          "(a decompression bomb?); raise medcap.data.images.MAX_PIXELS if it is genuine",
                          file=label)
    try:
        if frames > 1:
            ds.pixel_array_options(index=frames // 2)  # decode the middle frame only
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as e:
        raise _dicom_decode_error(ds, e, label) from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        bits = 8 if rgb.dtype == np.uint8 else 16
        return Image.fromarray(_scale_to_uint8(rgb, 0, 2**bits - 1), "RGB")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        # RGB, or YBR already converted to RGB by pydicom / the JPEG 2000 decoder.
        arr = arr[..., :3]
        if arr.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 16) or 16)
            arr = _scale_to_uint8(arr, 0, 2**bits - 1)
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.ndim != 2:
        raise MedcapError(f"unexpected DICOM pixel array shape {arr.shape}", file=label)
    u8 = _dicom_grayscale(arr, ds)
    if photometric == "MONOCHROME1":
        np.subtract(255, u8, out=u8)  # MONOCHROME1: high values are dark
    return _gray_to_rgb(u8)


def _dicom_grayscale(arr: "np.ndarray", ds) -> "np.ndarray":
    """Stored values -> modality values -> VOI (LUT, else window, else range) -> uint8."""
    import numpy as np
    from pydicom.pixels import apply_modality_lut, apply_voi

    values = apply_modality_lut(arr, ds)  # rescale slope/intercept or Modality LUT (PS3.3 C.11.1)
    voi = ds.get("VOILUTSequence")
    if voi:
        try:
            item = voi[0]
            depth = int(item.LUTDescriptor[2])
            ints = values if np.issubdtype(values.dtype, np.integer) else np.rint(values).astype(np.int64)
            return _scale_to_uint8(apply_voi(ints, ds, index=0), 0, 2**depth - 1)
        except Exception:  # a broken VOI LUT: fall back to the window or the range
            pass
    window = _first_window(ds)
    if window is not None:
        center, width = window
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
        v = values.astype(np.float32, copy=False)
        if function == "SIGMOID":  # PS3.3 C.11.2.1.3.1
            y = 1.0 / (1.0 + np.exp(-4.0 * (v - center) / width))
        else:
            if function != "LINEAR_EXACT":  # PS3.3 C.11.2.1.2.1: LINEAR uses c - 0.5 and w - 1
                center, width = center - 0.5, width - 1.0
            y = (v - center) / width + 0.5  # then clipped to [0, 1] below
        return _scale_to_uint8(y, 0.0, 1.0)
    return _scale_to_uint8(values)


def _first_window(ds) -> tuple[float, float] | None:
    """The first (centre, width) pair (PS3.3 C.11.2: several are alternatives), or None
    when absent or unusable."""
    from pydicom.multival import MultiValue

    def first(v):
        return float(v[0] if isinstance(v, (MultiValue, list, tuple)) else v)

    try:
        c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
        if c is None or w is None:
            return None
        center, width = first(c), first(w)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 1.0 else None


def _dicom_decode_error(ds, e: Exception, label: str) -> MedcapError:
    msg = _why(e)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    ts_uid = str(ts) if ts is not None else ""
    ts_name = getattr(ts, "name", ts_uid) if ts is not None else "unknown transfer syntax"
    missing = "missing dependencies" in msg or "no pixel data decoders" in msg.lower() or "plugin" in msg.lower()
    if missing:
        decoder, packages = _DICOM_DECODERS.get(ts_uid, (ts_name, _J_LIBJPEG))
        return MedcapError(f"no {decoder} decoder is installed for this DICOM file ({ts_name}); "
                           f"install one with: pip install {packages}  (or python-gdcm)", file=label)
    return MedcapError(f"cannot decode DICOM pixel data ({ts_name}): {msg.splitlines()[0]}", file=label)


# --------------------------------------------------------------------------- listing
def list_images(paths: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """The image files in a folder (or among given files and folders), in a stable order.

    Files are taken by extension (:data:`IMAGE_EXTENSIONS`, any case); a file without an
    extension is taken when it carries the DICOM marker. Hidden files (``.name``) are
    skipped. Folders are listed in sorted name order (``recursive`` descends into
    sub-folders); files named explicitly keep the order given. Raises
    :class:`MedcapError` for a path that does not exist or when no image is found.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    items = [Path(p) for p in paths]
    if not items:
        raise MedcapError("no image files or folders given")
    out: list[Path] = []
    seen: set[Path] = set()
    for p in items:
        if p.is_dir():
            found = _images_in_dir(p, recursive)
        elif p.is_file():
            found = [p]
        else:
            raise MedcapError("no such file or folder", file=p)
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    if not out:
        where = ", ".join(str(p) for p in items)
        raise MedcapError(f"no images found in {where} (looked for {' '.join(IMAGE_EXTENSIONS)} "
                          "and extension-less DICOM files)")
    return out


def _is_image_name(entry_path: Path) -> bool:
    suffix = entry_path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    return suffix == "" and is_dicom(entry_path)


def _images_in_dir(folder: Path, recursive: bool) -> list[Path]:
    from ..fileio import scan_dir, walk_dirs

    files: list[Path] = []
    # walk_dirs / scan_dir: a link loop or an unreadable folder is one line naming it
    for d in walk_dirs(folder) if recursive else [folder]:
        files.extend(p for p, kind in scan_dir(d) if kind == "file" and _is_image_name(p))
    return files
