"""scan_library over a generated library of good and bad files."""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from index.errors import LibraryNotFound
from index.library.scan import KnownLookup, ScanProgress, ScanResult, scan_library
from index.models import PhotoFile
from tests.support.badfiles import (
    EXIF_LAT,
    EXIF_LON,
    EXIF_PHOTO,
    EXIF_TAKEN_AT,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    encode,
    expected_photos,
    expected_skipped_paths,
    expected_skips,
    make_bad_library,
    permissions_enforced,
    unlock,
)

REPO = Path(__file__).resolve().parents[1]
Library = tuple[Path, dict[str, int]]  # root, skip counts make_bad_library promised


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    root = tmp_path / "library"
    counts = make_bad_library(root)
    yield root, counts
    unlock(root)


def scan(
    root: Path, *, known: KnownLookup | None = None, progress: ScanProgress | None = None
) -> ScanResult:
    return scan_library(
        root,
        max_file_bytes=MAX_FILE_BYTES,
        max_pixels=MAX_PIXELS,
        known=known,
        progress=progress,
    )


def by_rel_path(result: ScanResult) -> dict[str, PhotoFile]:
    return {photo.rel_path: photo for photo in result.photos}


def test_scan_lists_exactly_the_good_photos_with_their_displayed_size(library: Library) -> None:
    root, _ = library
    result = scan(root)
    found = {photo.rel_path: (photo.width, photo.height) for photo in result.photos}
    assert found == expected_photos(permissions_enforced=permissions_enforced(root))


def test_scan_counts_every_bad_file_by_reason(library: Library) -> None:
    root, counts = library
    enforced = permissions_enforced(root)
    result = scan(root)
    assert result.skipped == counts == expected_skips(permissions_enforced=enforced)
    assert dict(result.skipped_paths) == expected_skipped_paths(permissions_enforced=enforced)
    assert len(result.skipped_paths) == sum(result.skipped.values())


def test_scan_is_sorted_with_posix_relative_and_absolute_paths(library: Library) -> None:
    root, _ = library
    result = scan(root)
    rel_paths = [photo.rel_path for photo in result.photos]
    assert rel_paths == sorted(rel_paths)
    assert result.skipped_paths == sorted(result.skipped_paths)
    assert "nested/deeper/copy.jpg" in rel_paths
    for photo in result.photos:
        assert photo.path.is_absolute()
        assert photo.path == root.absolute() / photo.rel_path


def test_scan_reads_exif_time_and_gps(library: Library) -> None:
    root, _ = library
    photos = by_rel_path(scan(root))
    exif_photo = photos[EXIF_PHOTO]
    assert exif_photo.taken_at == EXIF_TAKEN_AT
    assert exif_photo.gps_lat == pytest.approx(EXIF_LAT, abs=1e-6)
    assert exif_photo.gps_lon == pytest.approx(EXIF_LON, abs=1e-6)
    assert photos["plain.png"].taken_at is None
    assert photos["plain.png"].gps_lat is None


def test_photo_id_is_sha256_of_the_bytes_and_shared_by_copies(library: Library) -> None:
    root, _ = library
    photos = by_rel_path(scan(root))
    exif_bytes = (root / EXIF_PHOTO).read_bytes()
    assert photos[EXIF_PHOTO].photo_id == hashlib.sha256(exif_bytes).hexdigest()
    assert photos["nested/deeper/copy.jpg"].photo_id == photos[EXIF_PHOTO].photo_id
    assert photos["link_to_plain.png"].photo_id == photos["plain.png"].photo_id
    assert photos["plain.png"].photo_id != photos[EXIF_PHOTO].photo_id
    assert photos[EXIF_PHOTO].size == len(exif_bytes)


def test_known_cache_reuses_the_record_without_opening_the_file(library: Library) -> None:
    root, _ = library
    first = by_rel_path(scan(root))
    target = root / "plain.png"
    before = target.stat()
    # Same size, same mtime, garbage content: only a scan that skips opening it still accepts it.
    target.write_bytes(os.urandom(before.st_size))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    calls: list[tuple[str, int, float]] = []

    def known(rel_path: str, size: int, mtime: float) -> PhotoFile | None:
        calls.append((rel_path, size, mtime))
        cached = first.get(rel_path)
        return cached if cached and (cached.size, cached.mtime) == (size, mtime) else None

    second = scan(root, known=known)
    reused = by_rel_path(second)["plain.png"]
    assert reused.photo_id == first["plain.png"].photo_id
    assert reused.path == target.absolute()
    assert ("plain.png", before.st_size, before.st_mtime) in calls
    assert "plain.png" not in dict(second.skipped_paths)
    assert dict(scan(root).skipped_paths)["plain.png"] == "corrupt"  # without the cache


def test_known_cache_record_moves_with_the_file(library: Library) -> None:
    root, _ = library
    stored = by_rel_path(scan(root))[EXIF_PHOTO]
    result = scan(root, known=lambda rel, size, mtime: stored if rel == EXIF_PHOTO else None)
    assert by_rel_path(result)[EXIF_PHOTO] == stored


def test_progress_reports_each_file_up_to_the_total(library: Library) -> None:
    root, _ = library
    reports: list[tuple[int, int]] = []
    result = scan(root, progress=lambda done, total: reports.append((done, total)))
    total = reports[0][1]
    assert reports == [(done, total) for done in range(total + 1)]
    # Every image file is one step; broken links and folders are skipped while walking.
    assert len(result.photos) < total < len(result.photos) + len(result.skipped_paths)


def test_each_skip_is_logged_with_its_relative_path(
    library: Library, caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = library
    with caplog.at_level(logging.WARNING, logger="index.library.scan"):
        scan(root)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("skipped bad/truncated.jpg: truncated") for m in messages)
    assert any(m.startswith("skipped bad/bomb.png: too_many_pixels") for m in messages)


def _library_with_links_out(tmp_path: Path) -> Path:
    """A library with a folder link and a file link leading outside, and links within."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "trip.png").write_bytes(encode(Image.new("RGB", (12, 10)), "PNG"))
    (outside / "secret.txt").write_text("not a photo")
    root = tmp_path / "library"
    (root / "real").mkdir(parents=True)
    (root / "real" / "home.png").write_bytes(encode(Image.new("RGB", (8, 6)), "PNG"))
    (root / "trips").symlink_to(outside, target_is_directory=True)
    (root / "trips_again").symlink_to(outside, target_is_directory=True)
    (root / "stolen.png").symlink_to(outside / "trip.png")
    (root / "notes.txt").symlink_to(outside / "secret.txt")  # no image extension: ignored
    (root / "up").symlink_to(tmp_path, target_is_directory=True)  # above the library
    (root / "inside").symlink_to("real", target_is_directory=True)  # within: fine
    (root / "home_again.png").symlink_to("real/home.png")
    return root


def test_symlinks_out_of_the_library_are_skipped_and_counted(tmp_path: Path) -> None:
    result = scan(_library_with_links_out(tmp_path))
    assert [photo.rel_path for photo in result.photos] == ["home_again.png", "real/home.png"]
    assert result.skipped == {"outside_library": 4}
    assert [path for path, _ in result.skipped_paths] == [
        "stolen.png",
        "trips",
        "trips_again",
        "up",
    ]


def test_symlinks_out_of_the_library_are_walked_when_the_setting_says_so(tmp_path: Path) -> None:
    root = _library_with_links_out(tmp_path)
    result = scan_library(
        root, max_file_bytes=MAX_FILE_BYTES, max_pixels=MAX_PIXELS, follow_external_links=True
    )
    paths = [photo.rel_path for photo in result.photos]
    assert paths == [
        "home_again.png",
        "real/home.png",
        "stolen.png",
        "trips/trip.png",  # trips_again and up/elsewhere: the same folder, walked once
    ]
    assert result.skipped == {"symlink_loop": 1}  # up/library leads back to the library


def test_missing_root_raises_library_not_found(tmp_path: Path) -> None:
    with pytest.raises(LibraryNotFound, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_file_as_root_raises_library_not_found(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(LibraryNotFound, match="not a folder"):
        scan(tmp_path / "photo.jpg")


def test_empty_library_scans_to_nothing(tmp_path: Path) -> None:
    result = scan(tmp_path)
    assert (result.photos, result.skipped, result.skipped_paths) == ([], {}, [])


_CHILD_SCAN = """
import json, sys
from pathlib import Path
from index.library.scan import scan_library
from tests.support.badfiles import MAX_FILE_BYTES, MAX_PIXELS
result = scan_library(Path(sys.argv[1]), max_file_bytes=MAX_FILE_BYTES, max_pixels=MAX_PIXELS)
found = {photo.rel_path: [photo.width, photo.height] for photo in result.photos}
json.dump({"photos": found, "skipped": result.skipped, "paths": dict(result.skipped_paths)},
          sys.stdout)
"""


def _drop_permission_override() -> None:
    """In the child before exec: remove CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) from
    the bounding set, so even root is held to file modes, as every ordinary user is."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # 24 = PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_and_folder_count_as_permission_denied(library: Library) -> None:
    root, _ = library
    if permissions_enforced(root):
        pytest.skip("covered by the scans above: this process cannot read chmod 000 files")
    # Root reads chmod 000 files, so run the same scan in a process that cannot.
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD_SCAN, str(root)],
            preexec_fn=_drop_permission_override,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop the permission-override capability here: {error}")
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    expected = expected_photos(permissions_enforced=True)
    assert report["photos"] == {rel: list(size) for rel, size in expected.items()}
    assert report["skipped"] == expected_skips(permissions_enforced=True)
    assert report["paths"] == expected_skipped_paths(permissions_enforced=True)
    assert report["paths"]["locked.jpg"] == report["paths"]["locked_dir"] == "permission_denied"


def test_a_photo_dated_in_the_future_is_indexed_with_no_time_and_counted(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "9999:01:01 00:00:00"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "clock-unset.jpg", exif=exif)
    Image.new("RGB", (64, 48), (40, 50, 60)).save(tmp_path / "no-exif.jpg")
    result = scan(tmp_path)
    assert [p.taken_at for p in result.photos] == [None, None]
    assert result.dates_ignored == 1
