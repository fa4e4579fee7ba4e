"""A voice-assistant style app embedding StreamRecognizer: it reacts when anger persists.

    python examples/voice_assistant.py examples/demo.wav      # a file, played as a stream
    python examples/voice_assistant.py --mic                  # the default microphone (needs sounddevice + PortAudio)

Each speech segment ends with an event; when `ANGRY_SEGMENTS` segments in a row are
angry, the app "escalates" (here: prints a message) once, until calm speech returns.
"""

from __future__ import annotations

import argparse
import sys
import time

import soundfile as sf

from ser_edge import StreamRecognizer
from ser_edge.stream import Event

ANGRY_SEGMENTS = 2


class Assistant:
    def __init__(self) -> None:
        self.angry_run = 0
        self.escalated = False

    def on_event(self, event: Event) -> None:
        p = ", ".join(f"{k} {v:.2f}" for k, v in event.probabilities.items())
        print(f"{event.start_s:6.2f}-{event.end_s:6.2f} s  {event.label:8s} [{p}]")
        self.angry_run = self.angry_run + 1 if event.label == "angry" else 0
        if self.angry_run >= ANGRY_SEGMENTS and not self.escalated:
            print("  -> the caller sounds upset: handing over to a person")
            self.escalated = True
        elif event.label != "angry":
            self.escalated = False


def from_file(path: str, stream: StreamRecognizer) -> None:
    with sf.SoundFile(path) as f:
        for block in f.blocks(blocksize=f.samplerate // 50, dtype="float32", always_2d=True):  # 20 ms, as a callback would
            stream.push(block, f.samplerate)
    stream.close()


def from_microphone(stream: StreamRecognizer, seconds: float) -> None:
    try:
        import sounddevice as sd
    except OSError as err:  # sounddevice raises OSError when the PortAudio library is missing
        sys.exit(f"PortAudio is missing ({err}); on Debian/Ubuntu: apt-get install libportaudio2")
    except ImportError:
        sys.exit("the microphone needs sounddevice: pip install sounddevice")
    rate = int(sd.query_devices(kind="input")["default_samplerate"])
    with sd.InputStream(samplerate=rate, channels=1, dtype="float32",
                        callback=lambda data, frames, t, status: stream.push(data[:, 0].copy(), rate)):
        time.sleep(seconds)
    stream.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", nargs="?", help="a recording to stream (default: the microphone with --mic)")
    parser.add_argument("--mic", action="store_true", help="listen to the default input device")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to listen with --mic")
    args = parser.parse_args()
    assistant = Assistant()
    stream = StreamRecognizer(on_event=assistant.on_event)
    if args.mic:
        from_microphone(stream, args.seconds)
    elif args.wav:
        from_file(args.wav, stream)
    else:
        parser.error("give a WAV file or --mic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
