"""``stt-service send --mic``: a microphone as a session, through PortAudio (``sounddevice``).

The device is opened at its own rate, mono, 16-bit; the service resamples (``start`` says the
rate), exactly as for a WAV file. Reads block until the device has the next chunk, so the audio
goes out at the device's own pace. Any problem opening it (no ``sounddevice``, no PortAudio, no
such device) is a :class:`MicrophoneError` whose ``str()`` is one line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack
from nats.aio.client import Client as NATS

from .client import StreamTiming

log = logging.getLogger(__name__)
RATES = (8000, 48000)  # what `start` accepts


class MicrophoneError(RuntimeError):
    """The microphone cannot be used; ``str()`` says why in one line."""


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError:
        raise MicrophoneError(
            "the microphone needs the sounddevice package: pip install 'stt-service[mic]'"
        ) from None
    except OSError as exc:  # the package is there, the PortAudio library is not
        raise MicrophoneError(
            f"{exc}: install PortAudio (Debian/Ubuntu: apt-get install libportaudio2; "
            "Fedora: dnf install portaudio; macOS and Windows: it comes with sounddevice)"
        ) from None
    return sounddevice


class Microphone:
    """The capture device ``device`` (a name, part of one, or an index; None: the default)."""

    def __init__(self, device: str | None = None, chunk_ms: int = 100) -> None:
        self._sd = _sounddevice()
        which: int | str | None = int(device) if device and device.isdigit() else device
        try:
            info = self._sd.query_devices(which, "input")
        except (ValueError, self._sd.PortAudioError) as exc:
            names = self.inputs()
            wanted = f" {device!r}" if device else ""
            if not names:
                raise MicrophoneError(
                    f"no microphone{wanted}: PortAudio finds no audio input on this machine"
                ) from None
            raise MicrophoneError(
                f"no microphone{wanted}: {exc}; inputs: {', '.join(names)}"
            ) from None
        self.device = which if which is not None else int(info["index"])
        self.name = str(info["name"])
        rate = int(info["default_samplerate"] or 16000)
        self.rate = min(max(rate, RATES[0]), RATES[1])
        self.block = self.rate * chunk_ms // 1000

    def inputs(self) -> list[str]:
        try:
            devices = self._sd.query_devices()
        except Exception:
            return []
        return [f"{d['index']}: {d['name']}" for d in devices if d["max_input_channels"] > 0]

    async def stream(
        self,
        nc: NATS,
        session_id: str,
        *,
        input_subject: str,
        stop: asyncio.Event,
        state: str = "listening",
        duration: float | None = None,
        timing: StreamTiming | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> float:
        """``start``, the microphone's audio in chunks until ``stop`` is set (or ``duration``
        seconds of it), then ``end``. Returns the seconds of audio sent."""
        subject = f"{input_subject}.{session_id}"
        timing = timing or StreamTiming()
        timing.started = time.monotonic()
        try:
            stream = self._sd.RawInputStream(
                samplerate=self.rate,
                channels=1,
                dtype="int16",
                blocksize=self.block,
                device=self.device,
            )
            stream.start()
        except self._sd.PortAudioError as exc:
            raise MicrophoneError(f"cannot open the microphone {self.name!r}: {exc}") from None
        start = {"type": "start", "session_id": session_id, "sample_rate": self.rate}
        await nc.publish(subject, msgpack.packb({**start, "channels": 1, "state": state}))
        sent = 0
        overran = False
        try:
            while not stop.is_set() and (duration is None or sent < duration * self.rate):
                data, overflowed = await asyncio.to_thread(stream.read, self.block)
                if overflowed and not overran:
                    overran = True
                    log.warning("the microphone overran: some audio was lost (a busy machine?)")
                chunk = {"type": "chunk", "audio": bytes(data), "timestamp": time.time()}
                await nc.publish(subject, msgpack.packb(chunk, use_bin_type=True))
                sent += self.block
                timing.sent_seconds.append((sent / self.rate, time.monotonic()))
                if progress is not None:
                    progress(sent / self.rate)
        finally:
            stream.stop()
            stream.close()
            # the session's last final comes after this
            await nc.publish(subject, msgpack.packb({"type": "end"}))
            await nc.flush()
        return sent / self.rate
