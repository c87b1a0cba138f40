"""Offline speech for the embedded ``local-audio`` channel: text to speech and speech to text.

Two engines, each a plain object with blocking calls and no HTTP: the caller owns one of each
per process and runs the calls off the event loop. Both load their model on first use, and only
from files installed by pip (the ``local`` extra): nothing is fetched at run time.

- :mod:`~sluice.local_audio.server`: the engines over HTTP in OpenAI's wire format, the process
  ``sluice serve`` starts for a ``local-audio`` channel (:mod:`~sluice.local_audio.child`).
- :mod:`~sluice.local_audio.tts`: ``SpeechEngine``, hibari (a distilled Kokoro voice, ONNX).
- :mod:`~sluice.local_audio.asr`: ``TranscriptionEngine``, Whisper tiny.en on CTranslate2.
- :mod:`~sluice.local_audio.formats`, :mod:`~sluice.local_audio.transcript_formats`: what is
  read and written, the refusals (``AudioFormatError``), transcripts in OpenAI's formats.
- :mod:`~sluice.local_audio.codecs`: decoding uploads and encoding replies (libsndfile).
- :mod:`~sluice.local_audio.whisper_features`, :mod:`~sluice.local_audio.whisper_decoding`:
  Whisper's log-mel input and its windowed decoding loop.
- :mod:`~sluice.local_audio.turns`: the first-come lock each engine is taken in turn with.

``tts``, ``asr``, ``formats`` and ``transcript_formats`` import without numpy, so any worker
can check a request; the rest load with the first synthesis or transcription.
"""
