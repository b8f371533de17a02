"""The structure library: source resolution, downloads (local HTTP server), cache, fallbacks, CLI."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from napari_shrec.cli import main
from napari_shrec.core.structure_sources import (
    StructureDownloadError,
    download_structure,
    find_structure_file,
)
from napari_shrec.core.structures import (
    StructureFallbackWarning,
    StructureLibrary,
    StructureParams,
    StructureUnavailableError,
)
from napari_shrec.io.structures import write_structure_maps


class _Server:
    """A threaded HTTP server on 127.0.0.1 serving files from a folder, optionally failing the
    first ``fail_first`` requests with 503; it counts requests."""

    def __init__(self, folder: Path, fail_first: int = 0) -> None:
        server = self
        self.requests = 0
        self.fail_first = fail_first

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests += 1
                if server.requests <= server.fail_first:
                    self.send_error(503, "busy")
                    return
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, pattern: str) -> str:
        return f"http://127.0.0.1:{self.port}/{pattern}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pdb_server(structures_dir: Path) -> Iterator[_Server]:
    server = _Server(structures_dir / "pdb")
    yield server
    server.close()


def test_download_by_pdb_id_from_a_local_server(pdb_server: _Server, structures_dir: Path,
                                                tmp_path: Path) -> None:
    path = download_structure("1S3X", tmp_path, url_template=pdb_server.url("{pdb_id}.pdb"))
    assert path == tmp_path / "downloads" / "1s3x.pdb"
    assert path.read_bytes() == (structures_dir / "pdb" / "1s3x.pdb").read_bytes()
    # A second call reuses the file without asking the server.
    requests = pdb_server.requests
    assert download_structure("1s3x", tmp_path, url_template=pdb_server.url("{pdb_id}.pdb")) \
        == path
    assert pdb_server.requests == requests


def test_download_retries_transient_errors(structures_dir: Path, tmp_path: Path) -> None:
    server = _Server(structures_dir / "pdb", fail_first=2)
    try:
        path = download_structure("3qm1", tmp_path, url_template=server.url("{pdb_id}.pdb"),
                                  retries=3, backoff_s=0.01)
    finally:
        server.close()
    assert server.requests == 3
    assert path.stat().st_size == (structures_dir / "pdb" / "3qm1.pdb").stat().st_size


def test_download_errors_are_clear_and_fast(pdb_server: _Server, tmp_path: Path) -> None:
    with pytest.raises(StructureDownloadError, match=r"could not download 9zzz .*404"):
        download_structure("9zzz", tmp_path, url_template=pdb_server.url("{pdb_id}.pdb"))
    assert pdb_server.requests == 1  # a missing entry is not retried
    start = time.perf_counter()
    with pytest.raises(StructureDownloadError, match="offline"):
        download_structure("1s3x", tmp_path, url_template="http://127.0.0.1:9/{pdb_id}.cif",
                           backoff_s=1.0)
    assert time.perf_counter() - start < 0.9  # refused connection: no waiting for retries
    assert not (tmp_path / "downloads" / "1s3x.cif").exists()
    with pytest.raises(ValueError, match="not a PDB id"):
        download_structure("../../etc", tmp_path)


def test_library_downloads_when_no_file_is_local(pdb_server: _Server, tmp_path: Path) -> None:
    library = StructureLibrary(cache_dir=tmp_path, url_template=pdb_server.url("{pdb_id}.pdb"))
    assert library.locate("1s3x").kind == "download"
    structure_map = library.get("1s3x")
    assert structure_map.kind == "atomic-model"
    assert structure_map.provenance["detail"] == "downloaded"
    assert library.locate("1s3x").detail == "downloaded earlier"


def test_gzipped_mmcif_style_names_are_found(structures_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "1S3X.pdb.gz").write_bytes(gzip.compress(
        (structures_dir / "pdb" / "1s3x.pdb").read_bytes()))
    (folder / "1s3x.mrc").write_bytes(b"")  # a map of the same id loses to the atomic model
    assert find_structure_file("1s3x", folder) == folder / "1S3X.pdb.gz"
    library = StructureLibrary([folder], cache_dir=tmp_path / "cache", download=False)
    assert library.get("1s3x").provenance["model_mass_kda"] == pytest.approx(42.1, abs=0.2)


def test_resolution_order_and_missing_reasons(structures_dir: Path, tmp_path: Path) -> None:
    pdb = structures_dir / "pdb"
    maps = structures_dir / "polnet_maps_10A"
    library = StructureLibrary([maps, pdb], files={"1bxn": pdb / "1bxn.pdb"},
                               cache_dir=tmp_path, download=False)
    assert library.locate("1bxn").kind == "atomic-model"  # explicit file first
    assert library.locate("1s3x").kind == "map"  # first folder wins
    assert library.locate("4cr2").kind == "map"
    assert library.locate("4d8q").kind == "surrogate"
    strict = StructureLibrary([pdb], cache_dir=tmp_path, download=False, surrogates=False)
    with pytest.raises(StructureUnavailableError, match="downloads are off; surrogates are off"):
        strict.get("4d8q")
    with pytest.raises(StructureUnavailableError, match="not a PDB id"):
        strict.get("vesicle")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StructureLibrary([tmp_path / "nowhere"])


def test_offline_library_falls_back_once_and_warns(structures_dir: Path, tmp_path: Path) -> None:
    library = StructureLibrary([structures_dir / "pdb"], cache_dir=tmp_path,
                               url_template="http://127.0.0.1:9/{pdb_id}.cif")
    with pytest.warns(StructureFallbackWarning, match="using its offline surrogate") as record:
        maps = library.build(["4cr2", "4d8q", "1s3x"])
    assert [str(w.message)[:4] for w in record] == ["4cr2", "4d8q"]
    assert [m.kind for m in maps.values()] == ["surrogate", "surrogate", "atomic-model"]
    assert maps["4cr2"].provenance["detail"].startswith("offline: could not download 4cr2")
    assert maps["4d8q"].is_surrogate and not maps["1s3x"].is_surrogate
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: no warning at all
        assert library.build(["4d8q"], warn=False)["4d8q"].is_surrogate


def test_all_twelve_classes_are_available_and_cached(structures_dir: Path,
                                                     tmp_path: Path) -> None:
    sources = [structures_dir / "pdb", structures_dir / "polnet_maps_10A"]
    library = StructureLibrary(sources, cache_dir=tmp_path, download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFallbackWarning)
        first = library.build()
        assert len(first) == 12
        kinds = {name: m.kind for name, m in first.items()}
        assert kinds["4cr2"] == "map" and kinds["4d8q"] == "surrogate"
        assert sum(kind == "atomic-model" for kind in kinds.values()) == 10
        # The map source is in volts: scaled to the 26S proteasome's 1309 kDa.
        assert first["4cr2"].metrics.integrated_potential_v_nm3 == pytest.approx(
            9.76 * 1309.28, rel=1e-3)
        second = StructureLibrary(sources, cache_dir=tmp_path, download=False).build()
    for name, structure_map in second.items():
        assert "cache" in structure_map.provenance, name
        np.testing.assert_array_equal(structure_map.potential, first[name].potential)
        assert structure_map.metrics == first[name].metrics
    # Other parameters, other cache entry.
    half = library.get("1s3x", StructureParams(voxel_size_nm=0.5))
    assert "cache" not in half.provenance and half.voxel_size_nm == 0.5
    assert half.potential.shape[0] > first["1s3x"].potential.shape[0]


def test_written_folder_round_trips_as_a_source(structures_dir: Path, tmp_path: Path) -> None:
    library = StructureLibrary([structures_dir / "pdb"], cache_dir=tmp_path / "c",
                               download=False)
    with pytest.warns(StructureFallbackWarning):
        maps = library.build(["1s3x", "4d8q"])
    out = tmp_path / "out"
    written = write_structure_maps(maps, out)
    assert [p.name for p in written] == ["1s3x.mrc", "4d8q.mrc", "structures.json"]
    index = json.loads((out / "structures.json").read_text())
    assert index["maps"]["4d8q"]["surrogate"] is True
    assert index["maps"]["1s3x"]["table1"]["volume_ratio"] == pytest.approx(1.0, abs=0.1)
    reread = StructureLibrary([out], cache_dir=tmp_path / "c2", download=False,
                              surrogates=False).build(["1s3x", "4d8q"])
    for name in ("1s3x", "4d8q"):
        assert reread[name].kind == "map"
        np.testing.assert_array_equal(reread[name].potential, maps[name].potential)
    assert reread["4d8q"].is_surrogate  # the label survives the round trip
    before = (out / "1s3x.mrc").read_bytes()
    with pytest.raises(FileExistsError, match="1s3x.mrc"):
        write_structure_maps(maps, out)
    assert (out / "1s3x.mrc").read_bytes() == before


def test_cli_build_list_show(structures_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps"
    pdb = str(structures_dir / "pdb")
    assert main(["structures", "build", "--source", pdb, "--out", str(out), "--no-download",
                 "--classes", "1s3x,3qm1,4d8q"]) == 0
    captured = capsys.readouterr()
    assert "surrogates: 4d8q" in captured.err and "4d8q: using its offline surrogate" in \
        captured.err
    rows = {line.split()[0]: line.split() for line in captured.out.splitlines()[1:]}
    assert rows["1s3x"][1] == "atomic-model" and rows["4d8q"][1] == "surrogate"
    assert sorted(p.name for p in out.iterdir()) == ["1s3x.mrc", "3qm1.mrc", "4d8q.mrc",
                                                     "structures.json"]
    from napari_shrec.io.mrc import read_mrc

    assert read_mrc(out / "1s3x.mrc").voxel_size_nm == pytest.approx((1.0, 1.0, 1.0))
    # A second build refuses to overwrite before doing any work.
    assert main(["structures", "build", "--source", pdb, "--out", str(out), "--no-download",
                 "--classes", "1s3x"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["structures", "build", "--source", pdb, "--out", str(out),
                 "--classes", "1abc"]) == 2
    assert "unknown class" in capsys.readouterr().err

    assert main(["structures", "list", "--source", pdb, "--no-download"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("atomic-model") == 10 and listing.count("surrogate") == 2

    assert main(["structures", "show", str(structures_dir / "pdb" / "1bxn.pdb"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["provenance"]["assembly"] == "1"
    assert record["metrics"]["volume_nm3"] == pytest.approx(978.9, rel=0.1)
    assert main(["structures", "show", "4d8q", "--no-download", "--no-surrogates"]) == 2
    assert "surrogates are off" in capsys.readouterr().err
