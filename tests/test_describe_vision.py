"""`VisionDescriber` through the real `openai` client against the real local fake server."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image

from config.settings import IndexingSettings, VisionSettings
from index.describers.vision import (
    FACET_LABELS,
    VisionDescriber,
    clean_description,
    encode_for_vision,
)
from index.errors import DescribeFailed, PhotoUnreadable, Reason
from index.models import PhotoFile
from tests.support.fixtures import SleepRecorder
from tests.support.openai_server import FakeOpenAIServer

MAX_PIXELS = 120_000_000
BLUE = (30, 90, 220)
GREEN = (40, 160, 60)

pillow_heif.register_heif_opener()


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, ...], **save: object) -> Path:
    mode = "RGBA" if len(colour) == 4 else "RGB"
    Image.new(mode, size, colour).save(path, **save)  # type: ignore[arg-type]
    return path


def photo(path: Path) -> PhotoFile:
    data = path.read_bytes()
    with Image.open(path) as image:
        width, height = image.size
    return PhotoFile(
        photo_id=hashlib.sha256(data).hexdigest(),
        path=path,
        rel_path=path.name,
        size=len(data),
        mtime=path.stat().st_mtime,
        width=width,
        height=height,
    )


@pytest.fixture
def describer(
    fake_vision_settings: VisionSettings, recorded_sleeps: SleepRecorder
) -> VisionDescriber:
    return VisionDescriber(fake_vision_settings, max_pixels=MAX_PIXELS, sleep=recorded_sleeps)


def received_size(server: FakeOpenAIServer) -> tuple[int, int]:
    [request] = server.requests_of("vision")
    assert request.image_formats == ["JPEG"]
    [size] = request.image_sizes
    return size


def test_key_names_model_and_prompt_version(describer: VisionDescriber) -> None:
    assert describer.key == "fake-vl@v1"


def test_a_blue_photo_is_described_as_blue_in_labelled_lines(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    text = describer.describe(photo(write_image(tmp_path / "sea.jpg", (400, 300), BLUE)))
    assert "蓝" in text and "大海" in text
    labels = [line.split("：", 1)[0] for line in text.splitlines()]
    assert labels == list(FACET_LABELS)
    assert openai_server.calls["vision"] == 1


def test_the_request_carries_the_chinese_prompt_and_the_image(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    describer.describe(photo(write_image(tmp_path / "a.png", (64, 64), GREEN)))
    [request] = openai_server.requests_of("vision")
    system, user = request.body["messages"]
    assert system["role"] == "system"
    prompt = next(part["text"] for part in user["content"] if part["type"] == "text")
    for label in FACET_LABELS:
        assert f"{label}：" in prompt
    image_part = next(part for part in user["content"] if part["type"] == "image_url")
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_describe_bytes_describes_an_upload(
    describer: VisionDescriber, openai_server: FakeOpenAIServer
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 200), GREEN).save(buffer, format="PNG")
    text = describer.describe_bytes(buffer.getvalue())
    assert "绿" in text and "草地" in text and "竖幅" in text
    assert received_size(openai_server) == (120, 200)


def test_a_heic_photo_is_decoded_and_downscaled(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = write_image(tmp_path / "IMG_0001.HEIC", (1600, 1200), BLUE, format="HEIF")
    assert "蓝" in describer.describe(photo(path))
    assert received_size(openai_server) == (512, 384)


def test_a_huge_photo_is_downscaled_to_max_side(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = write_image(tmp_path / "huge.jpg", (6000, 4000), GREEN, quality=70)
    text = describer.describe(photo(path))
    assert received_size(openai_server) == (512, 341)
    assert "横幅" in text


def test_exif_orientation_is_applied_before_sending(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = write_image(tmp_path / "rotated.jpg", (300, 200), BLUE, exif=exif)
    describer.describe(photo(path))
    assert received_size(openai_server) == (200, 300)


def test_transparency_is_flattened_onto_white(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = write_image(tmp_path / "clear.png", (100, 100), (0, 0, 0, 0))
    assert "白" in describer.describe(photo(path))


def test_a_corrupt_file_is_unreadable_and_never_sent(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    good = write_image(tmp_path / "good.jpg", (200, 200), BLUE)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:40] + b"\x00garbage" * 50)
    with pytest.raises(PhotoUnreadable) as raised:
        describer.describe(photo_of_bad(bad))
    assert raised.value.reason == "corrupt"
    assert raised.value.path == str(bad)
    with pytest.raises(PhotoUnreadable):
        describer.describe_bytes(b"not an image at all")
    assert openai_server.calls["vision"] == 0


def photo_of_bad(path: Path) -> PhotoFile:
    return PhotoFile("0" * 64, path, path.name, path.stat().st_size, 0.0, 200, 200)


def test_a_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PhotoUnreadable) as raised:
        encode_for_vision(tmp_path / "gone.jpg", 512, max_pixels=MAX_PIXELS)
    assert raised.value.reason == Reason.NOT_FOUND  # as the scan says of a vanished file


def test_a_429_is_retried(
    describer: VisionDescriber,
    openai_server: FakeOpenAIServer,
    recorded_sleeps: SleepRecorder,
    tmp_path: Path,
) -> None:
    openai_server.set_mode("vision", fail_status=429, fail_times=1)
    assert "蓝" in describer.describe(photo(write_image(tmp_path / "a.jpg", (80, 80), BLUE)))
    assert openai_server.calls["vision"] == 2
    assert len(recorded_sleeps.waits) == 1


def test_500_on_every_try_fails_naming_the_photo(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    openai_server.set_mode("vision", fail_status=500, fail_times=10)
    path = write_image(tmp_path / "a.jpg", (80, 80), BLUE)
    with pytest.raises(DescribeFailed) as raised:
        describer.describe(photo(path))
    assert str(path) in str(raised.value) and "HTTP 500" in str(raised.value)
    assert openai_server.calls["vision"] == 3  # 1 try + max_retries=2


def test_a_timeout_fails(
    fake_vision_settings: VisionSettings, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # 1 s, not less: on a loaded machine a shorter timeout fired before the request reached
    # the server (the delay was never counted)
    settings = fake_vision_settings.model_copy(update={"timeout_s": 1.0, "max_retries": 0})
    openai_server.set_mode("vision", delay_s=2.5)
    with pytest.raises(DescribeFailed, match="timed out"):
        VisionDescriber(settings, max_pixels=MAX_PIXELS).describe(
            photo(write_image(tmp_path / "a.jpg", (80, 80), BLUE))
        )
    assert openai_server.injected["vision:delay"] == 1


def test_an_empty_answer_fails(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    openai_server.set_mode("vision", empty=True)
    with pytest.raises(DescribeFailed, match="empty"):
        describer.describe(photo(write_image(tmp_path / "a.jpg", (80, 80), BLUE)))


def test_markdown_in_the_answer_is_cleaned(
    describer: VisionDescriber, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    openai_server.vision_fn = lambda image: (
        f"- **主体:** 一只猫，{image.width}像素宽\n\n2. 场景: 客厅\n"
    )
    text = describer.describe(photo(write_image(tmp_path / "a.jpg", (90, 60), BLUE)))
    assert text == "主体：一只猫，90像素宽\n场景：客厅"


def test_clean_description_keeps_plain_lines() -> None:
    assert clean_description("  主体：海边  \n\n氛围：宁静 ") == "主体：海边\n氛围：宁静"


def test_encode_for_vision_keeps_small_images_and_makes_rgb_jpeg() -> None:
    buffer = io.BytesIO()
    Image.new("L", (100, 80), 128).save(buffer, format="PNG")
    with Image.open(
        io.BytesIO(encode_for_vision(buffer.getvalue(), 512, max_pixels=MAX_PIXELS))
    ) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (100, 80))


def png_header(width: int, height: int) -> bytes:
    """A PNG that is its header and nothing else: it claims `width` x `height` RGB pixels and
    holds none, so whatever tries to decode it fails."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_header_over_the_pixel_limit_is_refused_before_any_pixel_is_decoded(
    fake_vision_settings: VisionSettings, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    describer = VisionDescriber(fake_vision_settings, max_pixels=IndexingSettings().max_pixels)
    huge = png_header(11000, 12000)  # 132 million pixels, over the default 120 million
    path = tmp_path / "huge.png"
    path.write_bytes(huge)
    for source in (huge, path):
        with pytest.raises(PhotoUnreadable) as raised:
            if isinstance(source, bytes):
                describer.describe_bytes(source)
            else:
                describer.describe(photo_of_bad(source))
        assert raised.value.reason is Reason.TOO_MANY_PIXELS
        assert "11000x12000" in raised.value.detail
    # The same file within the limit reaches the decoder, which finds no pixels: the refusal
    # above came from the header alone.
    with pytest.raises(PhotoUnreadable) as decoded:
        describer.describe_bytes(png_header(100, 100))
    assert decoded.value.reason is Reason.CORRUPT
    assert openai_server.calls["vision"] == 0


def test_a_format_outside_the_allow_list_is_refused_as_the_scan_refuses_it(
    describer: VisionDescriber, openai_server: FakeOpenAIServer
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), BLUE).save(buffer, format="ICO")  # Pillow reads it; we do not
    with pytest.raises(PhotoUnreadable) as raised:
        describer.describe_bytes(buffer.getvalue())
    assert raised.value.reason is Reason.CORRUPT
    assert openai_server.calls["vision"] == 0
