"""Silero's graph laid out for batches (`_silero_graph`) scores audio as the published graph does,
and a file it cannot rewrite faithfully runs as published."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import speech

from agentkit.audio import Samples
from agentkit.providers.vad import SileroVAD, _silero_graph
from agentkit.stream import TurnDetector, TurnEvent, TurnStarted, TurnTakingOptions


def _call(rate: int) -> Samples:
    """Two utterances, a short pause, line noise and silence: onsets, pauses and ends of turn."""
    rng = np.random.default_rng(3)
    utt1, utt2 = speech("utt1", rate).samples, speech("utt2", rate).samples
    noise = (0.004 * rng.standard_normal(rate // 2)).astype(np.float32)
    gap = np.zeros(rate * 3 // 10, dtype=np.float32)
    silence = np.zeros(rate, dtype=np.float32)
    return np.concatenate([noise, utt1, gap, utt2, silence, utt2 * 0.2, noise, silence])


def _scores(vad: SileroVAD, audio: Samples) -> tuple[list[float], list[tuple[object, ...]]]:
    """Each chunk's probability, and the turn events a detector built on the same stream decides."""
    probabilities: list[float] = []
    stream = vad.stream()

    class Recording(TurnDetector):
        def step(self, chunk: Samples, p: float, levels: Samples | None = None) -> TurnEvent | None:
            probabilities.append(p)
            return super().step(chunk, p, levels)

    detector = Recording(
        stream,
        sample_rate=vad.sample_rate,
        chunk_samples=vad.chunk_samples,
        options=TurnTakingOptions(end_of_turn_silence_ms=400),
    )
    events: list[tuple[object, ...]] = []
    for start in range(0, audio.shape[0], 320):
        for event in detector.process(audio[start : start + 320]):
            if isinstance(event, TurnStarted):
                events.append(("started", event.onset_samples, event.decided_samples))
            else:
                events.append((type(event).__name__, event.decided_samples))
    return probabilities, events


@pytest.mark.parametrize("rate", [16000, 8000])
def test_the_batched_graph_scores_speech_as_the_published_graph(models_dir: Path, rate: int) -> None:
    path = models_dir / "silero-vad" / "silero_vad.onnx"
    batched = SileroVAD(path, sample_rate=rate)
    published = SileroVAD(path, sample_rate=rate, batched_graph=False)
    batched.load()
    published.load()
    assert batched.runs_batched_graph and not published.runs_batched_graph
    audio = _call(rate)
    p_batched, events_batched = _scores(batched, audio)
    p_published, events_published = _scores(published, audio)
    assert len(p_batched) == len(p_published) == audio.shape[0] // batched.chunk_samples
    assert max(p_published) > 0.9 and min(p_published) < 0.05  # both speech and silence were scored
    assert np.max(np.abs(np.array(p_batched) - np.array(p_published))) < 1e-4
    assert sum(e[0] == "started" for e in events_published) >= 2
    assert events_batched == events_published

    # A batch of five streams, each at another point of the call: every row as a lone stream of the
    # published graph scores it.
    chunk, starts = batched.chunk_samples, [0, 37, 74, 111, 148]
    lone = [published.stream() for _ in starts]
    together = [batched.stream() for _ in starts]
    for step in range(60):
        rows = [audio[(start + step) * chunk : (start + step + 1) * chunk] for start in starts]
        expected = [stream.probability(row) for stream, row in zip(lone, rows, strict=True)]
        assert batched.probabilities(together, rows) == pytest.approx(expected, abs=1e-4)


def _copy(models_dir: Path, tmp_path: Path) -> Path:
    """The model file under a new path, so that this test loads its own session."""
    target = tmp_path / "silero_vad.onnx"
    shutil.copy(models_dir / "silero-vad" / "silero_vad.onnx", target)
    return target


def test_a_rewrite_that_disagrees_with_the_file_is_dropped(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rewrite whose layer is off (as a model of another layout could make it) fails the probe at
    load: the published graph runs, with a warning, and scores as it always did."""
    real_weights = _silero_graph._weights

    def off_by_a_little(model: Any, sample_rate: int) -> dict[str, np.ndarray]:
        weights = real_weights(model, sample_rate)
        weights["encoder.1.reparam_conv.bias"] = weights["encoder.1.reparam_conv.bias"] + 0.05
        return weights

    monkeypatch.setattr(_silero_graph, "_weights", off_by_a_little)
    path = _copy(models_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="agentkit.providers.vad._silero"):
        vad = SileroVAD(path)
        vad.load()
    assert not vad.runs_batched_graph
    assert "running it as published" in caplog.text and str(tmp_path) not in caplog.text
    published = SileroVAD(models_dir / "silero-vad" / "silero_vad.onnx", batched_graph=False)
    chunk = (0.2 * np.sin(np.arange(512) / 3)).astype(np.float32)
    assert vad.stream().probability(chunk) == published.stream().probability(chunk)


def test_a_file_of_another_layout_runs_as_published(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx

    path = _copy(models_dir, tmp_path)
    model = onnx.load(str(path))
    (if_node,) = [node for node in model.graph.node if node.op_type == "If"]
    for branch in if_node.attribute:
        for node in branch.g.node:  # rename the STFT basis where it is made and where it is used
            node.output[:] = [name.replace("forward_basis", "basis") for name in node.output]
            node.input[:] = [name.replace("forward_basis", "basis") for name in node.input]
    onnx.save(model, str(path))
    with pytest.raises(_silero_graph.UnknownLayout, match=r"stft\.forward_basis_buffer"):
        _silero_graph.rewrite(path, 16000, 512, 64)
    with caplog.at_level(logging.WARNING, logger="agentkit.providers.vad._silero"):
        vad = SileroVAD(path)
        vad.load()
    assert not vad.runs_batched_graph and "not batched" in caplog.text
    chunk = (0.2 * np.sin(np.arange(512) / 3)).astype(np.float32)
    published = SileroVAD(models_dir / "silero-vad" / "silero_vad.onnx", batched_graph=False)
    assert vad.stream().probability(chunk) == published.stream().probability(chunk)
