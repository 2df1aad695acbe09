"""The Python API on its own: identical contents under two paths are computed once and reported twice."""
import shutil

import numpy as np

import audiofeat
from audiofeat.testing.media import make_audio


def test_the_same_content_under_two_paths_is_embedded_once(tmp_path, monkeypatch):
    from audiofeat import api

    clip = make_audio(tmp_path / "a.flac", seconds=1.5, sr=22050, source="chirp")
    copy = shutil.copy(clip, tmp_path / "copy.flac")
    given = {}  # what each extractor was asked to compute: one file, not three

    def counted(extractor, files, *args, **kwargs):
        given[extractor.name] = [f.content_key for f in files]
        return extract_files(extractor, files, *args, **kwargs)

    extract_files = api.extract_files
    monkeypatch.setattr(api, "extract_files", counted)
    result = audiofeat.extract([clip, copy, clip], extractors=["clap", "loudness"], cache={"dir": str(tmp_path / "c")},
                               clap={"checkpoint": "", "allow_random_weights": True})
    assert [m.status for m in result.manifests] == ["ok", "ok", "ok"]
    assert [m.source.path for m in result.manifests] == [str(clip), str(copy), str(clip)]
    assert np.array_equal(result.embeddings[0], result.embeddings[1]) and np.array_equal(result.embeddings[0],
                                                                                         result.embeddings[2])
    assert np.linalg.norm(result.embeddings[0]) > 0.99
    assert "features" not in result.manifests[0].blocks and result.manifests[0].blocks["loudness"]["true_peak_dbfs"]
    key = result.manifests[0].source.content_key
    assert given == {"clap": [key], "loudness": [key]}
    assert len(list((tmp_path / "c" / "artifacts" / "clap").rglob("*.npz"))) == 1
