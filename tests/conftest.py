"""Shared fixtures: the real model folder and the baseline speech recordings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agentkit.agent import split_sentences
from agentkit.agent._pipeline import SpokenReply
from agentkit.audio import AudioFrame, StreamingResampler, read_wav
from agentkit.providers.vad import SileroVAD
from agentkit.testing import ToneTTS

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SPEECH_DIR = SHARED / "baselines" / "fastrtc" / "audio"


def _models_dir() -> Path:
    return Path(os.environ.get("AGENTKIT_MODELS_DIR", SHARED / "models"))


os.environ.setdefault("AGENTKIT_MODELS_DIR", str(_models_dir()))
os.environ.setdefault("AGENTKIT_STORE", "memory://")  # apps built by tests keep no files


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = _models_dir()
    if not (path / "silero-vad" / "silero_vad.onnx").is_file():
        pytest.fail(f"model files not found in {path}; set AGENTKIT_MODELS_DIR")
    return path


@pytest.fixture(scope="session")
def silero(models_dir: Path) -> SileroVAD:
    vad = SileroVAD(models_dir / "silero-vad" / "silero_vad.onnx")
    vad.load()
    return vad


def speech(name: str, sample_rate: int = 16000) -> AudioFrame:
    """One of the baseline recordings (`utt1`: two sentences, `utt2`: one), resampled."""
    frame = read_wav(SPEECH_DIR / f"{name}_raw.wav")
    resampler = StreamingResampler(frame.sample_rate, sample_rate)
    return AudioFrame(resampler.process(frame.samples, last=True), sample_rate)


def speech_bounds_s(samples: np.ndarray, sample_rate: int, dbfs: float = -45.0) -> tuple[float, float]:
    """First and last 10 ms block above `dbfs`: the benchmark client's definition of speech."""
    hop = sample_rate // 100
    n = samples.shape[0] // hop
    blocks = samples[: n * hop].astype(np.float64).reshape(n, hop)
    level = 10 * np.log10((blocks**2).mean(axis=1) + 1e-12)
    loud = np.nonzero(level > dbfs)[0]
    return loud[0] * hop / sample_rate, (loud[-1] + 1) * hop / sample_rate


class EnergyVAD:
    """A VAD that calls any chunk with sound speech: for synthetic tones and digital silence only."""

    sample_rate = 16000
    chunk_samples = 512

    def stream(self) -> EnergyVAD:
        return self

    def probability(self, chunk: np.ndarray) -> float:
        return 1.0 if float(np.sqrt(np.mean(chunk * chunk))) > 0.01 else 0.0

    def reset(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def heard_text(reply: str, heard_ms: int, tts: ToneTTS, **split: int | None) -> str:
    """The words of `reply` a caller heard in its first `heard_ms`, with the reply cut into pieces
    as the pipeline cuts it (`split`: `split_sentences`' settings) and each piece as long as `tts`
    says."""
    spoken = SpokenReply()
    for sentence in split_sentences(reply, **split):
        spoken.begin(sentence)
        spoken.add_audio(tts.duration_s(sentence) * 1000)
    return spoken.heard_text(heard_ms)
