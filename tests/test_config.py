"""Config: schema defaults, errors that name the key, environment overrides and their precedence."""
import pytest

from audiofeat.config.schema import ConfigError, apply_env_overrides, resolve_threads
from audiofeat.config.schema import validate_config as validate_base
from audiofeat.extractors import build_extractors, section_schemas


def validate_config(config, **kwargs):
    """As the workflow validates: the base schema with every extractor's own sections."""
    return validate_base(config, sections=section_schemas(), **kwargs)


def test_defaults_are_filled_from_the_schema():
    config = validate_config({"input_dir": "x"})
    assert config["audio"]["target_sr"] == 48000
    assert config["segment"] == {"enabled": True, "window_seconds": 10, "hop_seconds": 5, "aggregate_mode": "mean",
                                 "save_segments": False}
    assert config["cache"]["enabled"] is True and config["perf"]["device"] == "auto"


@pytest.mark.parametrize("bad, words", [
    ({"segment": {"aggregate_mode": "median"}}, ["segment.aggregate_mode", "mean, weighted, robust"]),
    ({"audio": {"target_sr": "fast"}}, ["audio.target_sr"]),
    ({"perf": {"device": "tpu"}}, ["perf.device"]),
    ({"clap": {"modle": "HTSAT-tiny"}}, ["modle", "allowed keys", "checkpoint"]),
    ({"segment": {"window_seconds": 20}}, ["segment.window_seconds"]),
    ({"segment": {"window_seconds": 4, "hop_seconds": 5}}, ["segment.hop_seconds"]),
    ({"loudnes": {}}, ["loudnes", "allowed keys", "features, flags, input_dir"]),
])
def test_errors_name_the_key_and_allowed_values(bad, words):
    from audiofeat.config.settings import Settings

    with pytest.raises(ConfigError) as info:  # the schema's, or an extractor's own check as the run builds it
        build_extractors(Settings.from_config(validate_config({"input_dir": "x", **bad})))
    for word in words:
        assert word in str(info.value)


def test_an_extractors_section_is_declared_by_the_extractor_alone():
    """A section the registry does not declare is an unknown key; each registered one has its defaults."""
    with pytest.raises(ConfigError, match="allowed keys"):
        validate_base({"input_dir": "x", "features": {}}, sections={})
    assert set(section_schemas()) == {"features", "clap", "segment", "speech", "pitch", "speaker",
                                     "spectral"}
    assert validate_config({"input_dir": "x"})["features"]["n_mfcc"] == 20


def test_inputs_are_required():
    with pytest.raises(ConfigError, match="input_dir and/or input_list"):
        validate_config({})


def test_environment_overrides_and_command_line_precedence():
    env = {"PERF_THREADS": "3", "AUDIO_TARGET_SR": "16000", "CLAP_ENABLE_AMP": "false",
           "CLAP_MAX_BATCH_AUDIO_SECONDS": "40", "SEGMENT_WINDOW_SECONDS": "8", "SEGMENT_HOP_SECONDS": "4",
           "SEGMENT_AGGREGATE_MODE": "robust", "CACHE_DIR": "/tmp/c", "CACHE_TTL_HOURS": "12",
           "CACHE_ENABLED": "0"}
    config = validate_config(apply_env_overrides({"input_dir": "x"}, env))
    assert config["perf"]["threads"] == 3 and config["audio"]["target_sr"] == 16000
    assert config["clap"]["enable_amp"] is False and config["clap"]["max_batch_audio_seconds"] == 40
    assert config["segment"]["window_seconds"] == 8 and config["segment"]["aggregate_mode"] == "robust"
    assert config["cache"] == {"dir": "/tmp/c", "ttl_hours": 12, "enabled": False, "max_gb": 0, "gc_grace_hours": 1}
    # A key given with --config wins over the environment.
    protected = {"audio": {"target_sr": 44100}}
    config = validate_config(apply_env_overrides({"input_dir": "x", **protected}, env, protected=protected))
    assert config["audio"]["target_sr"] == 44100 and config["perf"]["threads"] == 3


def test_bad_environment_values_are_named():
    with pytest.raises(ConfigError, match="CACHE_ENABLED='maybe'"):
        apply_env_overrides({}, {"CACHE_ENABLED": "maybe"})
    with pytest.raises(ConfigError, match="PERF_THREADS='many'"):
        apply_env_overrides({}, {"PERF_THREADS": "many"})


def test_thread_default_is_min_8_cores():
    assert resolve_threads(0, cpu_count=2) == 2
    assert resolve_threads(0, cpu_count=64) == 8
    assert resolve_threads(5, cpu_count=2) == 5


def test_untyped_command_line_strings_are_coerced_by_the_schema():
    config = validate_config({"input_dir": "x", "clap": {"enable_amp": "false", "max_batch_audio_seconds": "40"},
                              "perf": {"threads": "3"}, "features": {"fmax": "null", "n_mfcc": "13"}})
    assert config["clap"]["enable_amp"] is False and config["clap"]["max_batch_audio_seconds"] == 40.0
    assert config["perf"]["threads"] == 3 and config["features"]["fmax"] is None
    assert config["features"]["n_mfcc"] == 13
    with pytest.raises(ConfigError, match="perf.threads"):
        validate_config({"input_dir": "x", "perf": {"threads": "many"}})


def test_settings_round_trip_and_the_console_script_reads_config_as_the_workflow_does(tmp_path, monkeypatch, capsys):
    import dataclasses

    from audiofeat.cli import main
    from audiofeat.config.settings import Settings
    from audiofeat.config.settings import load_settings as load_base

    def load_settings(path=None):
        return load_base(path, sections=section_schemas())

    config = tmp_path / "config.yaml"
    config.write_text("input_dir: media\ncache: {dir: from-file, max_gb: 2}\nextractors: [loudness, features]\n")
    monkeypatch.setenv("CACHE_TTL_HOURS", "5")
    monkeypatch.setenv("AUDIOFEAT_EXTRACTORS", "features,loudness")
    settings = load_settings(config)
    assert settings.extractors == ("features", "loudness") and settings.cache.max_gb == 2
    assert Settings.from_config(settings.to_dict()) == settings
    from audiofeat.extractors.clap import ClapSettings

    assert dataclasses.asdict(settings.of(ClapSettings)) == settings.of(ClapSettings).to_dict()
    assert main(["cache", "stats", "--config", str(config)]) == 0
    assert "ttl_hours=5.0, max_gb=2" in capsys.readouterr().out  # the environment applies here too
    config.write_text("cache: {max_gb: -1}\n")
    with pytest.raises(SystemExit, match="cache.max_gb"):  # validated, as the workflow validates
        main(["cache", "stats", "--config", str(config)])
    monkeypatch.setenv("AUDIOFEAT_EXTRACTORS", "features,mfcc")
    with pytest.raises(ConfigError, match="'mfcc' unknown; allowed values: features, clap, loudness, speech, speech_quality"):
        build_extractors(load_settings())  # the registry knows the names, not the schema
