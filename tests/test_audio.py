"""Audio normalisation: byte carry, downmix, streaming resampling, framing, WAV reading."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from stt_service.audio import AudioNormalizer, FrameSplitter, WavAudio, read_wav
from tests.speech import sox_convert, utterance


def push_in_pieces(norm: AudioNormalizer, pcm: bytes, sizes: list[int]) -> np.ndarray:
    """Push ``pcm`` cut at the given byte sizes (cycled), then flush."""
    out = []
    i = k = 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        out.append(norm.push(pcm[i : i + n]))
        i += n
        k += 1
    out.append(norm.flush())
    return np.concatenate(out)


def irregular_sizes(seed: int, count: int = 400) -> list[int]:
    """Chunk sizes in bytes of every parity and alignment: 1 byte to ~100 ms of 48 kHz stereo."""
    rng = np.random.default_rng(seed)
    return [int(n) for n in rng.integers(1, 20_000, size=count)]


# --- byte carry -----------------------------------------------------------------------------------
def test_odd_trailing_byte_is_carried_into_the_next_chunk() -> None:
    pcm = utterance("0880").audio.pcm
    whole = AudioNormalizer(16000, 1).push(pcm)

    norm = AudioNormalizer(16000, 1)
    first = norm.push(pcm[:3201])
    assert first.size == 1600  # the 3201st byte is half a sample: held back
    assert norm.pending_bytes == 1
    second = norm.push(pcm[3201:])
    assert norm.pending_bytes == 0
    assert np.array_equal(np.concatenate([first, second]), whole)


@pytest.mark.parametrize("channels", [1, 2])
def test_any_byte_split_gives_the_same_samples_as_one_chunk(channels: int) -> None:
    mono = utterance("0930").samples
    interleaved = np.repeat(mono, channels)  # identical L and R: the downmix is the signal itself
    pcm = interleaved.tobytes()
    whole = AudioNormalizer(16000, channels).push(pcm)
    assert np.array_equal(whole, mono)
    pieces = push_in_pieces(AudioNormalizer(16000, channels), pcm, [1, 2, 3, 5, 7, 641, 4097])
    assert np.array_equal(pieces, whole)


def test_dangling_byte_at_the_end_is_dropped_on_flush() -> None:
    norm = AudioNormalizer(16000, 1)
    assert norm.push(b"\x01\x00\x02").tolist() == [1]
    assert norm.pending_bytes == 1
    assert norm.flush().size == 0
    assert norm.pending_bytes == 0
    # the dropped byte does not leak into a later chunk
    assert norm.push(b"\x03\x00").tolist() == [3]


# --- stereo ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("left", "right", "mean"),
    [(1000, 3000, 2000), (-3000, 1000, -1000), (32767, 32767, 32767), (-32768, -32768, -32768)],
)
def test_stereo_is_downmixed_to_the_mean_of_both_channels(left: int, right: int, mean: int) -> None:
    frames = np.empty(2 * 800, dtype=np.int16)
    frames[0::2] = left
    frames[1::2] = right
    out = AudioNormalizer(16000, 2).push(frames.tobytes())
    assert out.dtype == np.int16
    assert out.size == 800
    assert np.all(out == mean)


def test_stereo_downmix_of_speech_in_one_channel_keeps_the_speech() -> None:
    speech = utterance("0880").samples
    frames = np.zeros(2 * speech.size, dtype=np.int16)
    frames[1::2] = speech  # right channel only
    out = AudioNormalizer(16000, 2).push(frames.tobytes())
    assert out.size == speech.size
    assert np.corrcoef(out, speech)[0, 1] > 0.999


# --- resampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate", "channels"), [(48000, 1), (8000, 1), (44100, 1), (48000, 2), (22050, 2)]
)
def test_resampling_in_irregular_chunks(rate: int, channels: int) -> None:
    source = utterance("0880")
    audio = sox_convert(source.audio, rate, channels)
    expected = audio.duration * 16000

    whole_norm = AudioNormalizer(rate, channels)
    whole = np.concatenate([whole_norm.push(audio.pcm), whole_norm.flush()])
    chunked = push_in_pieces(AudioNormalizer(rate, channels), audio.pcm, irregular_sizes(rate))

    for out in (whole, chunked):
        assert out.dtype == np.int16
        assert abs(out.size - expected) <= 16 * 3  # within 3 ms
    assert chunked.size == whole.size
    assert np.abs(chunked.astype(np.int32) - whole).max() <= 4  # chunking leaves no clicks

    # and it is still the same speech, in time with the 16 kHz original
    n = min(chunked.size, source.samples.size)
    floor = 0.95 if rate == 8000 else 0.999  # 8 kHz has lost everything above 4 kHz
    assert np.corrcoef(chunked[:n], source.samples[:n])[0, 1] > floor


def test_16k_mono_is_passed_through_unchanged() -> None:
    speech = utterance("0930").samples
    norm = AudioNormalizer(16000, 1)
    assert np.array_equal(norm.push(speech.tobytes()), speech)
    assert norm.flush().size == 0


# --- framing --------------------------------------------------------------------------------------
def test_frame_splitter_yields_fixed_frames_and_pads_the_last() -> None:
    samples = np.arange(1, 1501, dtype=np.int16)
    split = FrameSplitter(480)
    frames = split.push(samples[:1000])
    assert [f.size for f in frames] == [480, 480]
    frames += split.push(samples[1000:1001])
    assert len(frames) == 2
    frames += split.push(samples[1001:])
    assert [f.size for f in frames] == [480, 480, 480]
    assert np.array_equal(np.concatenate(frames), samples[:1440])

    last = split.flush()
    assert last is not None
    assert last.size == 480
    assert np.array_equal(last[:60], samples[1440:])
    assert not last[60:].any()
    assert split.flush() is None


def test_frame_splitter_exact_multiple_leaves_nothing_to_flush() -> None:
    split = FrameSplitter(160)
    frames = split.push(np.ones(480, dtype=np.int16))
    assert len(frames) == 3
    assert split.flush() is None


def test_frames_are_not_views_of_later_buffers() -> None:
    split = FrameSplitter(4)
    frames = split.push(np.array([1, 2, 3, 4, 5, 6], dtype=np.int16))
    frames += split.push(np.array([7, 8], dtype=np.int16))
    assert [f.tolist() for f in frames] == [[1, 2, 3, 4], [5, 6, 7, 8]]


# --- WAV files ------------------------------------------------------------------------------------
def test_read_wav_reads_16_bit_pcm(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    data = np.array([1, -1, 2, -2, 3, -3], dtype=np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(data.tobytes())
    audio = read_wav(path)
    assert audio == WavAudio(data.tobytes(), 44100, 2)
    assert audio.duration == pytest.approx(3 / 44100)


def test_read_wav_of_a_non_wav_file_says_to_use_ffmpeg(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00 definitely not a RIFF header" * 10)
    with pytest.raises(ValueError, match="ffmpeg") as info:
        read_wav(path)
    assert str(path) in str(info.value)


def test_read_wav_of_8_bit_pcm_says_to_use_ffmpeg(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)))
    with pytest.raises(ValueError, match="ffmpeg"):
        read_wav(path)
