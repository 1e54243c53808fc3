"""Settings from the environment: defaults, overrides, one-line errors naming the variable."""

from __future__ import annotations

import re

import pytest

from stt_service.config import ConfigError, Settings, load_settings
from stt_service.session import SessionConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable of the contract leaks in from the environment the tests run in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)


def test_defaults_load() -> None:
    s = load_settings()
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.stt_input_subject == "ai.voice.stream"
    assert s.stt_output_subject == "ai.voice.transcription"
    assert s.stt_backend == "whisper"
    assert s.whisper_device == "auto"
    assert s.stt_buffer_size_bytes == 512_000
    assert s.max_utterance_samples == 256_000  # 16 s of 16 kHz mono int16
    assert s.stt_chunk_timeout == 0.8
    assert s.stt_enable_vad is True
    assert s.stt_vad_aggressiveness == 2
    assert s.stt_enable_interrupt_detection is True
    assert s.otel_enabled is True
    assert s.hyperdx_enabled is False


def test_valid_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_VAD_AGGRESSIVENESS", "3")
    monkeypatch.setenv("STT_CHUNK_TIMEOUT", "1.25")
    monkeypatch.setenv("STT_ENABLE_VAD", "false")
    monkeypatch.setenv("STT_ENABLE_INTERRUPT_DETECTION", "0")
    monkeypatch.setenv("STT_BUFFER_SIZE_BYTES", "64000")
    monkeypatch.setenv("WHISPER_DEVICE", "cpu")
    monkeypatch.setenv("STT_INPUT_SUBJECT", "my.voice.in")
    s = load_settings()
    assert s.stt_vad_aggressiveness == 3
    assert s.stt_chunk_timeout == 1.25
    assert s.stt_enable_vad is False
    assert s.stt_enable_interrupt_detection is False
    assert s.max_utterance_samples == 32_000
    assert s.whisper_device == "cpu"
    assert s.stt_input_subject == "my.voice.in"

    cfg = SessionConfig.from_settings(s)
    assert cfg.hangover_s == 1.25
    assert cfg.vad_enabled is False
    assert cfg.vad_aggressiveness == 3
    assert cfg.interrupt_enabled is False
    assert cfg.max_utterance_samples == 32_000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STT_VAD_AGGRESSIVENESS", "5"),
        ("STT_CHUNK_TIMEOUT", "abc"),
        ("STT_ENABLE_VAD", "maybe"),
        ("STT_BACKEND", "bogus"),
        ("DEEPGRAM_TRANSPORT", "carrier-pigeon"),
        ("DEEPGRAM_RETRY_BUDGET", "-1"),
        ("WHISPER_DEVICE", "tpu"),
        ("STT_INPUT_SUBJECT", "a.*"),
        ("STT_OUTPUT_SUBJECT", "a.>"),
        ("STT_BUFFER_SIZE_BYTES", "10"),
        ("STT_VAD", "rnnoise"),
        ("STT_VAD_THRESHOLD", "1.5"),
        ("STT_VAD_FRAME_MS", "32"),
        ("STT_VAD_BATCH_MS", "-5"),
        ("STT_INTERRUPT_MIN_WORDS", "-1"),
        ("STT_INTERRUPT_MIN_WORDS", "two"),
        ("STT_FALSE_INTERRUPT_TIMEOUT", "-0.5"),
    ],
)
def test_invalid_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text
    assert variable in text
    assert value in text  # the operator sees what they set


def test_flux_needs_an_endpoint_and_ordered_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_BACKEND", "flux")
    with pytest.raises(ConfigError, match="SAGEMAKER_ENDPOINT_NAME"):
        load_settings()
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", "my-flux")
    monkeypatch.setenv("FLUX_EOT_THRESHOLD", "0.6")
    monkeypatch.setenv("FLUX_EAGER_EOT_THRESHOLD", "0.8")
    with pytest.raises(ConfigError, match="FLUX_EAGER_EOT_THRESHOLD"):
        load_settings()
    monkeypatch.setenv("FLUX_EAGER_EOT_THRESHOLD", "0.4")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="AWS_CA_BUNDLE"):
        load_settings()
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert load_settings().sagemaker_endpoint_name == "my-flux"
    assert load_settings().resolved_deepgram_transport() == "sagemaker"


def test_deepgram_transport_follows_what_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_BACKEND", "nova")
    with pytest.raises(ConfigError, match=r"SAGEMAKER_ENDPOINT_NAME.*DEEPGRAM_API_KEY"):
        load_settings()
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-key")
    assert load_settings().resolved_deepgram_transport() == "websocket"
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", "my-nova")
    assert load_settings().resolved_deepgram_transport() == "sagemaker"
    monkeypatch.setenv("DEEPGRAM_TRANSPORT", "websocket")
    assert load_settings().resolved_deepgram_transport() == "websocket"
    monkeypatch.delenv("DEEPGRAM_API_KEY")
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        load_settings()


def test_lower_case_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("stt_vad_aggressiveness", "9")
    with pytest.raises(ConfigError, match="STT_VAD_AGGRESSIVENESS"):
        load_settings()


def test_voice_detection_and_barge_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    cfg = SessionConfig.from_settings(s)
    assert (cfg.vad, cfg.vad_threshold, cfg.frame_ms) == ("silero", 0.5, 32)
    assert cfg.interrupt_min_words == 0 and cfg.false_interrupt_timeout == 2.0
    assert "uh-huh" in cfg.backchannels and "yeah" in cfg.backchannels
    monkeypatch.setenv("STT_VAD", "webrtc")
    monkeypatch.setenv("STT_VAD_FRAME_MS", "20")
    monkeypatch.setenv("STT_INTERRUPT_MIN_WORDS", "2")
    monkeypatch.setenv("STT_FALSE_INTERRUPT_TIMEOUT", "0")
    monkeypatch.setenv("STT_BACKCHANNEL_WORDS", " uh-huh , sounds good,,")
    cfg = SessionConfig.from_settings(load_settings())
    assert (cfg.vad, cfg.frame_ms) == ("webrtc", 20)  # the old detector keeps its frame setting
    assert cfg.interrupt_min_words == 2 and cfg.false_interrupt_timeout == 0.0
    assert cfg.backchannels == ("uh-huh", "sounds good")


# durations named before the rule that a setting says its unit in its name: the names are the
# contract and stay (STT_CHUNK_TIMEOUT is seconds, and so on; docs/configuration.md says which)
UNIT_IN_THE_DESCRIPTION_ONLY = {
    "stt_chunk_timeout",
    "stt_eager_endpoint",
    "stt_turn_max_pause",
    "stt_partial_interval",
    "stt_false_interrupt_timeout",
    "stt_session_idle_timeout",
    "stt_drain_timeout",
    "stt_js_max_age",
    "whisper_http_timeout",
    "whisper_http_connect_timeout",
    "deepgram_initial_backoff",
    "deepgram_max_backoff",
    "deepgram_retry_budget",
}


def test_a_new_setting_says_its_unit_in_its_name() -> None:
    """A duration or size added from now on reads as what it is: ``..._MS``, ``..._S``,
    ``..._SECONDS``, ``..._BYTES``."""
    quantity = re.compile(r"^(seconds?|milliseconds?|bytes)\b|\bin (seconds|bytes)\b| \(ms\)")
    unnamed = [
        name
        for name, field in Settings.model_fields.items()
        if quantity.search(field.description or "")
        and not name.endswith(("_ms", "_s", "_seconds", "_bytes"))
        and name not in UNIT_IN_THE_DESCRIPTION_ONLY
    ]
    assert not unnamed, f"say the unit in the name: {unnamed}"
    # and the list of older ones holds only real settings that still lack it
    assert set(Settings.model_fields) >= UNIT_IN_THE_DESCRIPTION_ONLY
