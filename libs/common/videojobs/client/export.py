"""Results written out a page at a time: the REST results document (JSON), or one CSV row per detection."""

from __future__ import annotations

import csv
import itertools
from typing import Iterable, Iterator, TextIO

from videojobs.common.job import JobStatus
from videojobs.common.results import FrameResult, ResultsDocument, WholeResultsJson

CSV_COLUMNS = (
    "frame_index", "timestamp_ms", "class_id", "class_name", "confidence", "track_id",
    "x1", "y1", "x2", "y2", "x1_norm", "y1_norm", "x2_norm", "y2_norm",
)


def write_detections_csv(frames: Iterable[FrameResult], out: TextIO) -> int:
    """Write a header and one row per detection (box in pixels and normalised); returns the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for frame in frames:
        for det in frame.result.detections:
            b, n = det.box, det.box_norm
            writer.writerow((frame.frame_index, frame.timestamp_ms, det.class_id, det.class_name, det.confidence,
                             "" if det.track_id is None else det.track_id,
                             b.x1, b.y1, b.x2, b.y2, n.x1, n.y1, n.x2, n.y2))
            rows += 1
    return rows


def write_results_json(job_id: str, pages: Iterator[ResultsDocument], out: TextIO) -> int:
    """A COMPLETED job's results as GET /video/results/{id} answers them, written as the pages come (a long
    document is never held whole); returns the frames written."""
    first = next(pages)
    answer = WholeResultsJson(job_id, JobStatus.COMPLETED, first)
    out.write(answer.start())
    for page in itertools.chain([first], pages):
        out.write(answer.frames(page.results))
    out.write(answer.end() + "\n")
    return answer.written
