"""Pixel data for WADO-RS frames and rendered images: frame bytes, windowing, encoding.

Frames are given as stored when the client takes the stored syntax (the compressed bitstream
of an encapsulated frame, the raw bytes of a native one) and decoded to native little endian
only when it asks for that. Rendering applies the modality LUT, then a VOI window (the one
asked for, else the first stored one, else the frame's range), then fits the viewport.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut


class PixelError(ValueError):
    """The instance has no usable pixel data, or the request does not fit it."""


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def is_encapsulated(ds: Dataset) -> bool:
    return bool(ds.file_meta.TransferSyntaxUID.is_compressed)


def check_frames(ds: Dataset, numbers: list[int]) -> None:
    if "PixelData" not in ds:
        raise PixelError("the instance has no pixel data")
    total = number_of_frames(ds)
    bad = [n for n in numbers if n < 1 or n > total]
    if bad:
        raise PixelError(
            f"frame {bad[0]} does not exist: the instance has {total} frame(s), numbered from 1"
        )


def stored_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    """The frames as stored: compressed bitstreams, or slices of native pixel data."""
    check_frames(ds, numbers)
    total = number_of_frames(ds)
    if is_encapsulated(ds):
        frames = list(generate_frames(ds.PixelData, number_of_frames=total))
        return [frames[n - 1] for n in numbers]
    data = ds.PixelData
    bits = int(ds.BitsAllocated)
    size_bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * bits
    if size_bits % 8:
        # 1-bit frames need not start on a byte: unpack and repack each one.
        bits_all = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return [
            np.packbits(bits_all[(n - 1) * size_bits : n * size_bits], bitorder="little").tobytes()
            for n in numbers
        ]
    size = size_bits // 8
    return [bytes(data[(n - 1) * size : n * size]) for n in numbers]


def native_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    """The frames decoded to native little-endian pixel values."""
    check_frames(ds, numbers)
    if not is_encapsulated(ds) and ds.file_meta.TransferSyntaxUID.is_little_endian:
        return stored_frames(ds, numbers)
    array = _all_frames(ds)
    return [
        np.ascontiguousarray(array[n - 1]).astype(array.dtype.newbyteorder("<")).tobytes()
        for n in numbers
    ]


def _all_frames(ds: Dataset) -> np.ndarray:
    try:
        array = ds.pixel_array
    except Exception as exc:  # decoders raise many kinds
        raise PixelError(f"the pixel data cannot be decoded: {exc}") from None
    if number_of_frames(ds) == 1:
        array = array[np.newaxis, ...]
    return array


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class RenderOptions:
    """The rendering parameters of PS3.18 8.3.5.1."""

    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90
    media_type: str = "image/jpeg"


def parse_window(value: str | None) -> tuple[float, float, str] | None:
    """``window=center,width[,function]`` (function linear, linear-exact or sigmoid)."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise PixelError("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise PixelError(f"window={value!r}: center and width must be numbers") from None
    function = (parts[2] if len(parts) == 3 else "linear").lower().replace("_", "-")
    if function not in ("linear", "linear-exact", "sigmoid"):
        raise PixelError(f"window function {function!r}: use linear, linear-exact or sigmoid")
    if width <= 0 or (function == "linear" and width < 1):
        raise PixelError("window width must be positive (at least 1 for linear)")
    return center, width, function


def parse_viewport(value: str | None) -> tuple[int, int] | None:
    """``viewport=vw,vh[,sx,sy,sw,sh]``; the source rectangle is not supported and ignored."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 6):
        raise PixelError("viewport must be vw,vh (optionally followed by sx,sy,sw,sh)")
    try:
        width, height = int(parts[0] or 0), int(parts[1] or 0)
    except ValueError:
        raise PixelError(f"viewport={value!r}: width and height must be whole numbers") from None
    if width < 0 or height < 0 or (width == 0 and height == 0) or max(width, height) > 8192:
        raise PixelError("viewport width and height must be between 1 and 8192")
    return width, height


def parse_quality(value: str | None) -> int:
    if not value:
        return 90
    try:
        quality = int(value)
    except ValueError:
        raise PixelError(f"quality={value!r} is not a whole number") from None
    if not 1 <= quality <= 100:
        raise PixelError("quality must be between 1 and 100")
    return quality


def _first(value: object) -> float | None:
    """The first value of a possibly multi-valued number (WindowCenter may hold several)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes | int | float):
        try:
            value = next(iter(value))  # type: ignore[call-overload]
        except (StopIteration, TypeError):
            return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    if function == "linear-exact":
        out = (values - center) / width + 0.5
    elif function == "sigmoid":
        out = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif width <= 1:  # linear with width 1: a threshold at center - 0.5
        out = (values > center - 0.5).astype(np.float64)
    else:  # linear, PS3.3 C.11.2.1.2.1
        out = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out * 255.0, 0, 255).astype(np.uint8)


def render_frame(ds: Dataset, number: int, options: RenderOptions) -> bytes:
    """One frame as a JPEG or PNG image."""
    check_frames(ds, [number])
    frame = _all_frames(ds)[number - 1]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        if frame.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            frame = (frame.astype(np.float64) * 255.0 / (2**bits - 1)).clip(0, 255)
        image = Image.fromarray(frame[..., :3].astype(np.uint8), "RGB")
    else:
        values = apply_modality_lut(frame, ds).astype(np.float64)
        window = options.window
        if window is None:
            center = _first(ds.get("WindowCenter"))
            width = _first(ds.get("WindowWidth"))
            if center is not None and width is not None and width >= 1:
                window = (center, width, str(ds.get("VOILUTFunction", "LINEAR")).lower())
                if window[2] not in ("linear", "linear-exact", "sigmoid"):
                    window = (center, width, "linear")
        if window is None:
            low, high = float(values.min()), float(values.max())
            window = ((low + high) / 2 + 0.5, max(high - low + 1, 1.0), "linear")
        pixels = _window(values, *window)
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
        image = Image.fromarray(pixels, "L")
    if options.viewport is not None:
        image = _fit(image, *options.viewport)
    buffer = io.BytesIO()
    if options.media_type == "image/png":
        image.save(buffer, format="PNG")
    elif options.media_type == "image/gif":
        image.save(buffer, format="GIF")
    else:
        image.save(buffer, format="JPEG", quality=options.quality)
    return buffer.getvalue()


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit inside the viewport, keeping the aspect ratio (0 = free dimension)."""
    scale_w = width / image.width if width else math.inf
    scale_h = height / image.height if height else math.inf
    scale = min(scale_w, scale_h)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)
