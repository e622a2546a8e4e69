"""Raw-file lookup and download with checksum verification (file:// URLs stand in for the web)."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import pytest

from ranker.data.sources import SourceFile, digest_of, locate
from ranker.errors import DataError

PAYLOAD = b"1\t2\t5\t881250949\n3\t4\t1\t881250950\n"
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RANKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_download_from_a_zip_member_is_verified_and_cached(dirs: Path) -> None:
    archive = dirs / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", PAYLOAD)
    src = SourceFile("movielens-100k", "u.data", SHA, archive.as_uri(), member="ml-100k/u.data")
    path = locate(src)
    assert path == dirs / "cache" / "raw" / "movielens-100k" / "u.data"
    assert path.read_bytes() == PAYLOAD
    archive.unlink()  # the second lookup finds the cached copy, no download
    assert locate(src) == path


def test_gzipped_download_and_git_sha1_checksum(dirs: Path) -> None:
    served = dirs / "census.gz"
    served.write_bytes(gzip.compress(PAYLOAD))
    blob = digest_of(PAYLOAD, "git-sha1").split(":")[1]
    src = SourceFile("census", "census.test", None, served.as_uri(), gzipped_at_url=True, git_sha1=blob)
    assert locate(src).read_bytes() == PAYLOAD


def test_git_sha1_matches_git_hash_object() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert digest_of(b"hello\n", "git-sha1") == "git-sha1:ce013625030ba8dba906f756967f9e9ca394464a"


def test_download_with_a_wrong_checksum_is_refused_and_not_cached(dirs: Path) -> None:
    served = dirs / "u.data"
    served.write_bytes(PAYLOAD + b"tampered")
    src = SourceFile("movielens-100k", "u.data", SHA, served.as_uri())
    with pytest.raises(DataError, match=r"u.data has sha256:[0-9a-f]+, expected sha256:" + SHA):
        locate(src)
    assert not (dirs / "cache" / "raw" / "movielens-100k" / "u.data").exists()


def test_local_gz_copy_is_found_and_checked(dirs: Path) -> None:
    folder = dirs / "data" / "movielens-100k"
    folder.mkdir(parents=True)
    (folder / "u.data.gz").write_bytes(gzip.compress(PAYLOAD))
    src = SourceFile("movielens-100k", "u.data", SHA, "")
    assert locate(src) == folder / "u.data.gz"
    (folder / "u.data.gz").write_bytes(gzip.compress(PAYLOAD[:-3]))
    with pytest.raises(DataError, match="u.data.gz: checksum of the content is"):
        locate(src)


def test_unreachable_url_names_the_file_and_the_folder_to_use(dirs: Path) -> None:
    src = SourceFile("frappe", "frappe.test.libfm", SHA, (dirs / "nowhere").as_uri())
    with pytest.raises(DataError, match=r"frappe/frappe.test.libfm: not found locally .* \$RANKER_DATA_DIR/frappe/"):
        locate(src)
