"""scripts/bench_frame_memory.py's own parts: the worker limit it checks against, the clips it builds."""

from __future__ import annotations

import av
import pytest

from tests.conftest import load_script

bench = load_script("bench_frame_memory")

MANIFEST = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: worker}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  template:
    spec:
      containers:
        - name: sidecar
          resources: {limits: {memory: 64Mi}}
        - name: worker
          resources: {limits: {memory: %s}}
"""


@pytest.mark.parametrize("value, expected", [("3Gi", 3 * 2**30), ("1536Mi", 1536 * 2**20), ("1000000", 1000000)])
def test_the_worker_limit_is_read_from_the_worker_container(tmp_path, value, expected):
    manifest = tmp_path / "worker.yaml"
    manifest.write_text(MANIFEST % value)
    assert bench.worker_memory_limit(manifest) == expected


def test_the_repository_s_worker_has_a_memory_limit():
    assert bench.worker_memory_limit() >= 2**30


def test_the_prod_overlay_s_limit_is_read_from_its_patch():
    # Two jobs at once there (VIDEOJOBS_WORKER_THREADS=2): `--worker-threads 2 --manifest` that patch.
    prod = bench.ROOT / "deploy" / "k8s" / "overlays" / "prod" / "patches" / "worker.yaml"
    assert bench.worker_memory_limit(prod) > bench.worker_memory_limit()


def test_clips_have_the_asked_size_and_length(tmp_path):
    clip = bench.make_clip(bench.SHARED / "media" / "bottle-detection.mp4", tmp_path / "clip.mp4", (1920, 1080), seconds=1.5)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.codec_context.width, stream.codec_context.height) == (1920, 1080)
    assert frames == 15  # 10 frames a second


def test_clips_keep_the_reference_frames_and_bit_depth_asked_for(tmp_path):
    from videojobs.worker.pipeline.picture_buffer import parameter_sets

    clip = bench.make_clip(bench.SHARED / "media" / "bottle-detection.mp4", tmp_path / "clip.mp4", (640, 360),
                           seconds=0.5, x264_params="ref=7", pix_fmt="yuv420p10le")
    assert [(p.pictures, p.bit_depth) for p in parameter_sets(clip)] == [(7, 10)]


def test_a_clip_refused_at_open_is_a_row_of_its_own():
    row = {"size": "7680x4320", "pipeline": "yolo", "refused": "the H.264 stream asks its decoder to keep 16"}
    assert bench._line(row).endswith("FAILED at open: the H.264 stream asks its decoder to keep 16")
