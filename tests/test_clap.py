"""CLAP: parity with laion-clap's own code, exact micro-batching, deterministic windows, aggregation,
checkpoint checks and the out-of-memory fall-back."""
import hashlib
import os
import threading

import librosa
import numpy as np
import pytest
import torch

import audiofeat.clap as clap_pkg
from audiofeat.clap import checkpoint, forward, laion
from audiofeat.clap import model as clap_model
from audiofeat.clap.embed import ClapEmbedder, max_batch_windows
from audiofeat.clap.windows import (Window, active_fraction, aggregate, geometric_median,
                                    model_inputs, plan_windows)

SR = 48000
L = clap_pkg.MODEL_INPUT_SAMPLES


def _clap(path: str, **settings):
    from audiofeat.extractors.clap import ClapSettings

    return ClapSettings(checkpoint=path, **settings)


def _cache(folder):
    from audiofeat.config.settings import CacheSettings

    return CacheSettings(dir=str(folder))


@pytest.fixture(scope="module")
def laion_reference(tmp_path_factory):
    """laion-clap's own CLAP model (audio tower + a local transformer text tower, seeded), and the same weights
    saved as a LAION-format checkpoint: ``{"state_dict": {"module.<key>": tensor}}``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from laion_clap.clap_module.model import CLAP

    cfg = laion.audio_config("HTSAT-tiny")
    torch.manual_seed(7)
    text_cfg = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=2, model_type="transformer")
    reference = CLAP(embed_dim=cfg["embed_dim"], audio_cfg=cfg["audio_cfg"], text_cfg=text_cfg).eval()
    path = tmp_path_factory.mktemp("ckpt") / "630k-test.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    return reference, cfg, path


@pytest.fixture(scope="module")
def loaded(laion_reference):
    _, _, path = laion_reference
    found, weights = checkpoint.resolve_weights(_clap(str(path)), _cache(path.parent))
    return clap_model.get_model("HTSAT-tiny", found, weights, device="cpu")


def _clips(real_recordings, espeak_wav, rng):
    clips = [librosa.load(str(p), sr=SR)[0] for p in (*real_recordings[:3], espeak_wav)]
    t = np.arange(int(2.5 * SR)) / SR
    clips += [(0.4 * np.sin(2 * np.pi * 523 * t)).astype(np.float32),
              (0.1 * rng.standard_normal(7 * SR)).astype(np.float32),
              (0.2 * rng.standard_normal(L)).astype(np.float32)]  # exactly 10 s
    return clips


def _parity(reference, cfg, model, clips) -> list:
    """laion-clap's embedding of each clip, after checking ``model`` gives it too; returns laion's."""
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    references = []
    for clip in clips:
        wave = torch.from_numpy(int16_to_float32(float32_to_int16(clip))).float()
        features = get_audio_features({}, wave, L, data_truncating="rand_trunc", data_filling="repeatpad",
                                      audio_cfg=cfg["audio_cfg"])
        with torch.no_grad():
            expected = reference.get_audio_embedding([features]).numpy()[0]
            got = model(torch.from_numpy(model_inputs(clip, plan_windows(len(clip), L, L // 2), L)))
        assert np.abs(expected - got.numpy()[0]).max() <= 1e-5  # measured up to 1.7e-6 (fused CPU kernels)
        assert float(np.dot(expected, got.numpy()[0])) >= 0.9999
        references.append(expected)
    return references


def test_parity_with_laion_preprocessing_and_forward(laion_reference, loaded, real_recordings, espeak_wav, rng):
    reference, cfg, _ = laion_reference
    assert loaded.weights.startswith("laion:sha256:")
    references = _parity(reference, cfg, loaded.model, _clips(real_recordings, espeak_wav, rng))
    # The negative control: the reference's embeddings of different clips are told apart by the same checks.
    worst = max(float(np.dot(a, b)) for i, a in enumerate(references) for b in references[i + 1:])
    assert worst < 0.9999 and min(np.abs(a - b).max() for i, a in enumerate(references)
                                  for b in references[i + 1:]) > 1e-5


def test_parity_with_laion_with_every_speedup_off(laion_reference, real_recordings, espeak_wav, rng, monkeypatch):
    from audiofeat import _speedups

    reference, cfg, path = laion_reference
    monkeypatch.setenv(_speedups.SWITCH, "off")  # built and run without any hook into other projects' internals
    tower = forward.build_audio_tower("HTSAT-tiny", initialise=False)
    checkpoint.load_audio_weights(tower, path)
    _parity(reference, cfg, tower, _clips(real_recordings, espeak_wav, rng)[:3])


def test_micro_batching_equals_one_window_at_a_time(loaded, rng):
    windows = (0.2 * rng.standard_normal((5, L))).astype(np.float32)
    one_by_one = ClapEmbedder(loaded, max_batch_windows=1).embed(windows)
    batched = ClapEmbedder(loaded, max_batch_windows=4).embed(windows)
    assert np.abs(one_by_one - batched).max() <= 1e-5
    # Across files: the stream regroups windows of many files and hands each file its own rows back.
    files = [("a", windows[:2]), ("b", windows[2:3]), ("c", windows[3:])]
    for workers in (1, 2):
        streamed = dict(ClapEmbedder(loaded, max_batch_windows=2, workers=workers).embed_stream(iter(files)))
        assert list(streamed) == ["a", "b", "c"]
        assert np.abs(np.concatenate([streamed[k] for k in "abc"]) - one_by_one).max() <= 1e-5
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_same_long_file_twice_gives_identical_embeddings(loaded, rng):
    y = (0.1 * rng.standard_normal(23 * SR)).astype(np.float32)
    windows = plan_windows(len(y), L, L // 2)
    embedder = ClapEmbedder(loaded, max_batch_windows=3)
    first = embedder.embed(model_inputs(y, windows, L))
    second = embedder.embed(model_inputs(y, windows, L))
    assert np.array_equal(first, second)


def test_window_boundaries_around_the_hop_grid():
    W, H = 10 * SR, 5 * SR
    assert plan_windows(W, W, H) == [Window(0, W)]
    assert plan_windows(3 * SR, W, H) == [Window(0, 3 * SR)]
    # On the grid: 20 s -> 0-10, 5-15, 10-20, and no duplicated tail window.
    assert plan_windows(20 * SR, W, H) == [Window(0, W), Window(H, H + W), Window(2 * H, 2 * H + W)]
    # Just under: the last grid window 5-15 misses the tail, so one window is aligned to the end.
    assert plan_windows(20 * SR - 1, W, H) == [Window(0, W), Window(H, H + W), Window(20 * SR - 1 - W, 20 * SR - 1)]
    # Just over: 0-10, 5-15, 10-20, then the end-aligned window.
    assert plan_windows(20 * SR + 1, W, H)[-2:] == [Window(2 * H, 2 * H + W), Window(20 * SR + 1 - W, 20 * SR + 1)]
    for n in (W + 1, 17 * SR + 3, 61 * SR):
        windows = plan_windows(n, W, H)
        assert windows[0].start == 0 and windows[-1].end == n
        assert all(w.end - w.start == W for w in windows)
        assert len({(w.start, w.end) for w in windows}) == len(windows)
        assert all(b.start - a.start <= H for a, b in zip(windows, windows[1:]))
    # Segmentation off: the one centred window.
    assert plan_windows(30 * SR, W, H, segment=False) == [Window(10 * SR, 20 * SR)]


@pytest.mark.parametrize("seconds", [3.0, 10.0 - 1 / SR, 10.0])
def test_short_clips_are_prepared_as_laion_does(seconds, rng):
    """Our preparation equals LAION's own (its int16 round trip, then ``get_audio_features`` with repeatpad) to
    the bit, for clipped input too."""
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    y = (0.6 * rng.standard_normal(int(round(seconds * SR)))).astype(np.float32)
    y[:100] = 1.7  # clipped
    cfg = laion.audio_config("HTSAT-tiny")["audio_cfg"]
    wave = torch.from_numpy(int16_to_float32(float32_to_int16(y))).float()
    expected = get_audio_features({}, wave, L, data_truncating="rand_trunc", data_filling="repeatpad",
                                  audio_cfg=cfg)["waveform"].numpy()
    prepared = model_inputs(y, [Window(0, len(y))], L)[0]
    assert np.array_equal(prepared, expected)


def test_aggregates_are_unit_vectors_and_behave_as_documented(rng):
    base = rng.standard_normal(512)
    windows = np.stack([base + 0.05 * rng.standard_normal(512) for _ in range(6)])
    windows /= np.linalg.norm(windows, axis=1, keepdims=True)
    outlier = -base / np.linalg.norm(base)
    with_outlier = np.vstack([windows, outlier])
    for mode in ("mean", "weighted", "robust"):
        vector, strategy = aggregate(with_outlier, mode, np.ones(len(with_outlier)))
        assert abs(np.linalg.norm(vector) - 1) < 1e-5 and strategy["mode"] == mode
    clean = aggregate(windows, "mean")[0]
    robust = aggregate(with_outlier, "robust")[0]
    mean = aggregate(with_outlier, "mean")[0]
    assert np.dot(robust, clean) > np.dot(mean, clean)  # the outlier pulls the mean, not the median
    assert np.dot(robust, clean) > 0.999
    # weighted: a silent window counts for nothing
    weighted, strategy = aggregate(with_outlier, "weighted", np.r_[np.ones(6), 0.0])
    assert np.allclose(weighted, clean, atol=1e-6) and strategy["weights"][-1] == 0.0
    points = np.array([[0.0, 0], [1, 0], [0, 1], [10, 10]])
    from scipy.optimize import minimize

    best = minimize(lambda m: np.linalg.norm(points - m, axis=1).sum(), points.mean(axis=0), method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10000}).x
    assert np.allclose(geometric_median(points), best, atol=1e-4)


def test_weighted_mode_ignores_a_silent_half(loaded, rng):
    sound = (0.3 * rng.standard_normal(10 * SR)).astype(np.float32)
    y = np.concatenate([sound, np.zeros(10 * SR, np.float32)])
    windows = plan_windows(len(y), L, L // 2)
    weights = np.array([active_fraction(y, w, L, SR) for w in windows])
    assert weights.tolist() == pytest.approx([1.0, 0.5, 0.0], abs=0.01)
    embeddings = ClapEmbedder(loaded, max_batch_windows=4).embed(model_inputs(y, windows, L))
    weighted = aggregate(embeddings, "weighted", weights)[0]
    mean = aggregate(embeddings, "mean")[0]
    sound_only = embeddings[0]
    assert np.dot(weighted, sound_only) > np.dot(mean, sound_only)


def test_checkpoint_with_a_missing_audio_key_is_refused(laion_reference, tmp_path):
    reference, _, _ = laion_reference
    state = {f"module.{k}": v for k, v in reference.state_dict().items()
             if k != "audio_branch.patch_embed.proj.weight"}
    state["module.audio_branch.extra_head.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, bad)
    tower = forward.build_audio_tower("HTSAT-tiny")
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load_audio_weights(tower, bad)
    message = str(info.value)
    assert "missing audio keys: audio_branch.patch_embed.proj.weight" in message
    assert "unexpected audio keys: audio_branch.extra_head.weight" in message


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/audiofeat-pwned",))


def test_checkpoint_with_a_pickled_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"module.audio_projection.0.weight": torch.zeros(1)}, "trap": _Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.read_audio_state(path)
    assert not os.path.exists("/tmp/audiofeat-pwned")


def test_a_file_that_is_no_checkpoint_is_refused_with_its_name(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_bytes(b"not a checkpoint at all\n" * 4)
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}: not a torch checkpoint"):
        checkpoint.read_audio_state(path)


def test_checkpoint_loading_skips_random_init_and_gives_the_same_model(tmp_path):
    """A tower built without random initialisation draws nothing from the generator and leaves torch.nn.init as
    it was; loaded from a checkpoint, it equals the seeded tower saved there (every tensor, bit for bit)."""
    uniform = torch.nn.init.uniform_
    torch.manual_seed(3)
    source = forward.build_audio_tower("HTSAT-tiny")
    path = tmp_path / "seeded.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(3)
    loaded = forward.build_audio_tower("HTSAT-tiny", initialise=False)
    after_build = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after_build, torch.rand(4))
    assert torch.nn.init.uniform_ is uniform
    checkpoint.load_audio_weights(loaded, path)
    expected, got = source.state_dict(), loaded.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_checkpoint_digest_is_remembered_by_stat_and_redone_when_the_file_changes(tmp_path):
    path, index = tmp_path / "weights.pt", tmp_path / "index"
    path.write_bytes(b"a" * 1000)
    first = checkpoint.checkpoint_sha256(path, index)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    st = path.stat()
    with open(path, "r+b") as handle:  # same size, inode and (restored) mtime: the remembered digest stands
        handle.write(b"b" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert checkpoint.checkpoint_sha256(path, index) == first
    assert checkpoint.checkpoint_sha256(path, None) == hashlib.sha256(b"b" * 1000).hexdigest()
    path.write_bytes(b"b" * 1001)  # a changed size: hashed again
    assert checkpoint.checkpoint_sha256(path, index) == hashlib.sha256(b"b" * 1001).hexdigest()


def test_no_weights_and_auto_without_network_fail_fast_naming_the_keys(tmp_path, monkeypatch):
    import urllib.error

    with pytest.raises(checkpoint.CheckpointError, match="clap.allow_random_weights"):
        checkpoint.resolve_weights(_clap(""), _cache(tmp_path))

    def no_network(url, timeout=None):
        assert timeout == 10.0  # the download never waits longer than this to start
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(checkpoint.urllib.request, "urlopen", no_network)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.resolve_weights(_clap("auto", allow_random_weights=True), _cache(tmp_path))
    assert str(info.value).startswith("clap.checkpoint: auto could not download https://")
    assert "set clap.checkpoint to its path" in str(info.value) and "clap.checkpoint: ''" in str(info.value)


def test_auto_downloads_once_records_its_sha256_and_fetches_again_when_damaged(tmp_path, monkeypatch):
    """``auto`` against a real HTTP server on this machine standing in for LAION's."""
    import functools
    import http.server

    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(1 << 20)
    (served / "630k-audioset-best.pt").write_bytes(payload)
    downloads = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            downloads.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/630k-audioset-best.pt"
    monkeypatch.setitem(checkpoint.PUBLISHED_CHECKPOINTS, "HTSAT-tiny", (url, "630k-audioset-best.pt"))
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"

    def auto():
        return checkpoint.resolve_weights(_clap("auto"), _cache(cache))

    try:
        path, weights = auto()
        assert weights == f"laion:sha256:{hashlib.sha256(payload).hexdigest()}" and len(downloads) == 1
        assert (cache / "checkpoints" / "630k-audioset-best.pt.sha256").read_text().strip() == weights.split(":")[-1]
        assert auto() == (path, weights) and len(downloads) == 1  # once
        with open(path, "r+b") as handle:  # damaged in the cache: its sha256 no longer matches
            handle.write(b"garbage")
        assert auto() == (path, weights) and len(downloads) == 2
        assert open(path, "rb").read() == payload
    finally:
        server.shutdown()


def test_out_of_memory_halves_the_batch_and_keeps_the_numbers(loaded, rng):
    windows = (0.2 * rng.standard_normal((5, L))).astype(np.float32)
    expected = ClapEmbedder(loaded, max_batch_windows=5).embed(windows)

    class FaultyEmbedder(ClapEmbedder):
        def _forward(self, samples, lengths):
            if len(samples) > 1:  # an injected CUDA out-of-memory for any batch above one window
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super()._forward(samples, lengths)

    faulty = FaultyEmbedder(loaded, max_batch_windows=5)
    assert np.abs(faulty.embed(windows) - expected).max() <= 1e-5
    # 2 + 2 + 1 windows (the CPU's per-pass cap), each pair halved to 1 + 1: two halvings
    assert faulty.stats.oom_retries == 2 and faulty.stats.batch_sizes == [1] * 5

    class AlwaysOOM(ClapEmbedder):
        def _forward(self, samples, lengths):
            if any(np.array_equal(w, windows[1]) for w in samples.numpy()):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return super()._forward(samples, lengths)

    files = [("ok1", windows[:1]), ("bad", windows[1:3]), ("ok2", windows[3:])]
    results = dict(AlwaysOOM(loaded, max_batch_windows=4).embed_stream(iter(files)))
    assert isinstance(results["bad"], torch.cuda.OutOfMemoryError)
    assert np.abs(results["ok1"] - expected[:1]).max() <= 1e-5
    assert np.abs(results["ok2"] - expected[3:]).max() <= 1e-5


def test_model_is_created_once_per_process_even_from_two_threads(monkeypatch):
    monkeypatch.setattr(clap_model, "_models", {})  # whatever earlier tests built
    built = []
    build = forward.build_audio_tower
    monkeypatch.setattr(clap_model, "build_audio_tower", lambda *a, **k: built.append(1) or build(*a, **k))
    got = []
    barrier = threading.Barrier(2)

    def ask():
        barrier.wait()
        got.append(clap_model.get_model("HTSAT-tiny", None, "random(seed=0)", device="cpu", warm_up=False))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] is got[1] and got[0].weights == "random(seed=0)" and len(built) == 1


def test_seeded_random_model_is_the_same_in_every_build():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(checkpoint.RANDOM_WEIGHTS_SEED)
        b = forward.build_audio_tower("HTSAT-tiny").state_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(checkpoint.RANDOM_WEIGHTS_SEED)
        c = forward.build_audio_tower("HTSAT-tiny").state_dict()
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_batch_limit_counts_windows_at_model_input_length():
    assert max_batch_windows(160) == 16
    assert max_batch_windows(5) == 1
    assert max_batch_windows(25) == 2


def test_front_end_stays_float32_under_half_precision_autocast(loaded):
    """A full-scale tone's STFT power (about 256 ** 2) overflows float16; AMP must not turn it into NaN."""
    t = np.arange(L) / SR
    tone = np.sin(2 * np.pi * 937.5 * t).astype(np.float32)  # on FFT bin 20 of 1,024 at 48 kHz
    x = torch.from_numpy(model_inputs(tone, [Window(0, L)], L))
    with torch.inference_mode():
        reference = loaded.model(x)
        with torch.autocast("cpu", dtype=torch.float16):
            assert not torch.isfinite(loaded.model.audio_branch.spectrogram_extractor(x)).all()  # the hazard
            half = loaded.model(x)
    assert torch.isfinite(half).all()
    assert float((half.float() * reference).sum()) > 0.99


def test_fft_front_end_equals_laions_convolution_stft(loaded, rng):
    branch = loaded.model.audio_branch
    x = torch.from_numpy(np.stack([(0.3 * rng.standard_normal(L)).astype(np.float32),
                                   np.zeros(L, np.float32)]))
    with torch.inference_mode():
        expected = branch.spectrogram_extractor(x)  # torchlibrosa: a 1,024-tap convolution
        got = forward.stft_power(branch.spectrogram_extractor.stft, x)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-4 * float(expected.abs().max())
    assert float(got[1].abs().max()) == 0.0  # silence stays exactly silent (no log-floor noise)


@pytest.mark.parametrize("layer, index", [(0, 0), (0, 1), (2, 3)])  # plain and shifted windows, two scales
def test_swin_block_equals_laions_block(loaded, rng, layer, index):
    block = loaded.model.audio_branch.layers[layer].blocks[index]
    height, width = block.input_resolution
    x = torch.from_numpy(rng.standard_normal((2, height * width, block.dim)).astype(np.float32))
    with torch.inference_mode():
        expected, _ = block(x)
        got = forward.swin_block(block, x)
    assert (block.shift_size > 0) == (index % 2 == 1)
    assert float((got - expected).abs().max()) <= 1e-4


def test_tower_constants_equal_librosas_and_no_heavy_imports():
    """The STFT window and mel filterbank built without librosa equal torchlibrosa's librosa-made ones, and
    building the tower imports none of torchvision, librosa.filters, numba or pyFFTW (checked in a fresh
    interpreter)."""
    import subprocess
    import sys

    cfg = laion.audio_config("HTSAT-tiny")["audio_cfg"]
    tower = forward.build_audio_tower("HTSAT-tiny")
    window = librosa.filters.get_window("hann", cfg["window_size"], fftbins=True)
    stft = tower.audio_branch.spectrogram_extractor.stft
    assert np.abs(stft.conv_real.weight[0, 0].detach().numpy() - window).max() <= 1e-6
    mel = librosa.filters.mel(sr=cfg["sample_rate"], n_fft=cfg["window_size"], n_mels=cfg["mel_bins"],
                              fmin=cfg["fmin"], fmax=cfg["fmax"]).T
    assert np.abs(tower.audio_branch.logmel_extractor.melW.detach().numpy() - mel).max() <= 1e-6 * mel.max()
    probe = ("import sys; from audiofeat.clap import forward; forward.build_audio_tower('HTSAT-tiny'); print(sorted(m "
             "for m in ('torchvision', 'librosa.filters', 'h5py', 'numba', 'pyfftw') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cpu_passes_hold_at_most_two_windows_per_worker(loaded, rng):
    from audiofeat.clap.embed import CPU_WINDOWS_PER_PASS

    windows = (0.1 * rng.standard_normal((7, L))).astype(np.float32)
    embedder = ClapEmbedder(loaded, max_batch_windows=16)
    embedder.embed(windows)
    assert CPU_WINDOWS_PER_PASS == 2 and embedder.stats.batch_sizes == [2, 2, 2, 1]


def test_glibc_keeps_freed_memory_when_asked():
    import platform

    from audiofeat._speedups import retain_freed_memory

    assert retain_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_a_cpu_clap_job_asks_glibc_to_keep_freed_memory(tmp_path, monkeypatch, rng):
    import json

    from audiofeat import _speedups
    from audiofeat.config.schema import validate_config
    from audiofeat.inputs.wav import wav_bytes
    from audiofeat.extractors.runner import run_extractor
    from audiofeat.config.settings import Settings

    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes((0.1 * rng.standard_normal(SR)).astype(np.float32), SR))
    table = tmp_path / "ingest.jsonl"
    table.write_text(json.dumps({"content_key": "ab" * 16, "path": "/in/a.wav", "status": "ok",
                                 "audio": {"wav": str(wav), "duration_s": 1.0}}) + "\n")
    from audiofeat.extractors import section_schemas

    settings = Settings.from_config(validate_config({
        "input_dir": str(tmp_path), "results_dir": str(tmp_path / "out"), "cache": {"dir": str(tmp_path / "cache")},
        "perf": {"device": "cpu"}, "clap": {"checkpoint": "", "allow_random_weights": True}},
        sections=section_schemas()))
    asked = []
    monkeypatch.setattr(_speedups, "retain_freed_memory", lambda: asked.append(True) or True)
    run_extractor("clap", str(table), str(tmp_path / "clap.jsonl"), str(tmp_path / "profile.json"), settings)
    assert asked == [True]
    assert json.loads((tmp_path / "clap.jsonl").read_text())["status"] == "ok"


def _wav_record(tmp_path, name: str, y: np.ndarray, sr: int = SR):
    from audiofeat.store.tables import DecodeRecord
    from audiofeat.inputs.wav import wav_bytes

    wav = tmp_path / f"{name}.wav"
    wav.write_bytes(wav_bytes(y, sr))
    return DecodeRecord(name, name, "ok", samples=len(y),
                        audio={"wav": str(wav), "target_sr": sr, "duration_s": len(y) / sr})


@pytest.mark.parametrize("processes", [0, 2])
def test_worker_processes_prepare_exactly_the_windows_of_the_whole_signal(tmp_path, rng, processes):
    """Windows read from the WAV a batch at a time, by worker processes or in the job's thread, are LAION's
    windows of the whole signal to the bit once the device pads them, and so are the weighted mode's weights;
    batches never exceed their size, and the tail is split evenly."""
    from audiofeat.clap.embed import device_model_inputs
    from audiofeat.clap.feeder import WindowFeeder
    from audiofeat.extractors.clap import file_plan

    signals = {}
    for name, seconds in (("long", 25.3), ("short", 2.1), ("exact", 10.0), ("tiny", 0.05)):
        y = (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
        y[: SR // 2] = 0.0  # a silent stretch, so that the weights differ
        signals[name] = y
    plans = [file_plan(_wav_record(tmp_path, n, y), 10 * SR, 5 * SR, segment=True, weighted=True)
             for n, y in signals.items()]
    feeder = WindowFeeder(plans, batch_windows=3, workers=processes, buffers=3, tail_workers=2)
    rows, sizes = {}, []
    for batch in feeder.batches():
        assert batch.samples.dtype == np.int16  # real samples only: the device repeats and pads
        ready = device_model_inputs(torch.from_numpy(batch.samples.copy()), torch.from_numpy(batch.lengths))
        rows.update(zip(batch.tags, ready.numpy()))
        sizes.append(len(batch.tags))
        batch.release()
    assert feeder.processes == processes and sizes == [3, 3, 1, 1]  # 8 windows: 3 + 3, then 2 split in two
    for plan, (name, y) in zip(plans, signals.items()):
        windows = plan_windows(len(y), 10 * SR, 5 * SR)
        assert list(plan.windows) == windows
        got = np.stack([rows[(name, i)] for i in range(len(windows))])
        assert np.array_equal(got, model_inputs(y, windows, L)), name
        assert feeder.weights[name] == [active_fraction(y, w, 10 * SR, SR) for w in windows]


def test_int16_samples_padded_on_the_device_embed_as_the_float_windows_did(loaded, tmp_path, rng):
    """What reaches the device is the real samples as int16; the embeddings equal those of the host-prepared
    float windows (the path before) within 1e-6."""
    from audiofeat.clap.feeder import WindowFeeder
    from audiofeat.extractors.clap import file_plan

    signals = [(0.3 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in (3.3, 14.0)]
    plans = [file_plan(_wav_record(tmp_path, str(i), y), 10 * SR, 5 * SR, segment=True, weighted=False)
             for i, y in enumerate(signals)]
    embedder = ClapEmbedder(loaded, max_batch_windows=2)
    fed = dict(embedder.embed_batches(WindowFeeder(plans, batch_windows=2, workers=1).batches()))
    floats = [(str(i), model_inputs(y, plan_windows(len(y), 10 * SR, 5 * SR), L)) for i, y in enumerate(signals)]
    before = dict(ClapEmbedder(loaded, max_batch_windows=2).embed_stream(iter(floats)))
    for name in before:
        assert fed[name].shape == before[name].shape
        assert np.abs(fed[name] - before[name]).max() <= 1e-6


def test_a_worker_that_dies_fails_the_job_in_one_line_and_leaves_no_process(tmp_path, rng):
    import signal

    from audiofeat.clap.feeder import WindowFeeder, WorkerDied
    from audiofeat.extractors.clap import file_plan
    from audiofeat.faults import fault_line, is_fault

    y = (0.3 * rng.standard_normal(60 * SR)).astype(np.float32)
    plans = [file_plan(_wav_record(tmp_path, str(i), y), 10 * SR, 5 * SR, segment=True, weighted=False)
             for i in range(3)]
    feeder = WindowFeeder(plans, batch_windows=2, workers=2, buffers=2)
    procs = list(feeder._pool.procs)
    batches = feeder.batches()
    next(batches).release()
    os.kill(procs[0].pid, signal.SIGKILL)
    with pytest.raises(WorkerDied) as died:
        for batch in batches:
            batch.release()
    assert is_fault(died.value)
    line = fault_line(died.value, {})
    assert "\n" not in line and f"worker {procs[0].pid} died (signal 9" in line
    assert all(proc.poll() is not None for proc in procs)  # every worker reaped: none left behind


def test_a_wav_that_cannot_be_read_is_that_files_verdict_and_a_missing_one_a_fault(tmp_path, rng):
    from audiofeat.clap.feeder import WindowFeeder
    from audiofeat.extractors.clap import file_plan
    from audiofeat.faults import is_fault

    good = file_plan(_wav_record(tmp_path, "good", np.zeros(SR, np.float32)), 10 * SR, 5 * SR, segment=True,
                     weighted=False)
    broken_wav = tmp_path / "broken.wav"
    broken_wav.write_bytes(b"RIFF not a wave at all")
    broken = type(good)("broken", str(broken_wav), good.windows, good.window)
    missing = type(good)("missing", str(tmp_path / "gone.wav"), good.windows, good.window)
    failed = {}
    for batch in WindowFeeder([good, broken, missing], batch_windows=4, workers=1).batches():
        failed.update({batch.tags[row][0]: exc for row, exc in batch.failed.items()})
        batch.release()
    assert set(failed) == {"broken", "missing"}
    assert not is_fault(failed["broken"]) and is_fault(failed["missing"])


def _small_tower():
    """An HTSAT of laion-clap's own modules at a small size (one block per stage, 16 channels): what a compile
    test can afford on CI's CPU."""
    import types

    from audiofeat import _speedups

    cfg = laion.audio_config("HTSAT-tiny")
    audio_cfg = types.SimpleNamespace(**cfg["audio_cfg"])
    torch.manual_seed(3)
    with _speedups.torchlibrosa_constants():
        branch = laion.laion_module("htsat").HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=audio_cfg.class_num, embed_dim=16,
            depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=8, config=audio_cfg, enable_fusion=False,
            fusion_type="None")

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_branch = branch

        def forward(self, waveform):
            return torch.nn.functional.normalize(forward.htsat_embedding(self.audio_branch, waveform), dim=-1)

    return Small().eval()


def test_a_compiled_forward_equals_eager_and_keeps_one_shape(tmp_path, rng, monkeypatch):
    """``clap.compile``: the compiled graph gives the eager numbers within 1e-5, the last batch is padded to the
    fixed shape (so the graph is never rebuilt) and only its real rows come back; graphs go under the cache."""
    from audiofeat.clap.model import LoadedModel, compiled_forward

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    tower = _small_tower()
    windows = (0.2 * rng.standard_normal((3, L))).astype(np.float32)
    eager = ClapEmbedder(LoadedModel(tower, "small", "random", "cpu"), max_batch_windows=2).embed(windows)
    shapes = []

    def recorded(x):
        shapes.append(tuple(x.shape))
        return compiled(x)

    compiled = compiled_forward(tower, str(tmp_path / "torch-compile"))
    embedder = ClapEmbedder(LoadedModel(tower, "small", "random", "cpu", recorded), max_batch_windows=2,
                            fixed_shape=True)
    out = embedder.embed(windows)
    assert shapes == [(2, L), (2, L)] and out.shape == eager.shape == (3, 128)
    assert np.abs(out - eager).max() <= 1e-5
    assert any((tmp_path / "torch-compile" / "inductor").rglob("*.py"))  # the graph's code, for later jobs


def test_bf16_autocast_stays_within_cosine_0999_of_fp32_on_real_audio(loaded, real_recordings, espeak_wav, rng):
    clips = _clips(real_recordings, espeak_wav, rng)
    windows = np.concatenate([model_inputs(y, plan_windows(len(y), L, L // 2), L) for y in clips])
    fp32 = ClapEmbedder(loaded, max_batch_windows=4).embed(windows)
    bf16 = ClapEmbedder(loaded, max_batch_windows=4, precision="bf16")
    assert bf16.precision == "bf16-autocast"
    half = bf16.embed(windows)
    cosine = np.sum(fp32 * half, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() >= 0.999 and np.abs(fp32 - half).max() > 1e-6  # close, and really computed in bf16


def test_precision_is_part_of_the_clap_key_and_auto_keeps_the_seeds_keys():
    from audiofeat.config.settings import load_settings
    from audiofeat.extractors import section_schemas
    from audiofeat.extractors.clap import ClapExtractor

    def key(**clap):
        settings = load_settings(sections=section_schemas(), overrides={"perf": {"device": "cpu"}, "clap": {"allow_random_weights": True,
                                                                                  **clap}})
        return ClapExtractor.from_settings(settings, job=True)

    auto, fp32, bf16 = key(), key(precision="fp32"), key(precision="bf16")
    assert auto.params.precision == fp32.params.precision == "fp32" and bf16.params.precision == "bf16-autocast"
    assert auto.key("ab" * 16) == fp32.key("ab" * 16) != bf16.key("ab" * 16)
