"""The Python client of videojobs: ``VideoJobsClient`` over the gRPC JobService, and the CLI built on it.

    from videojobs.client import VideoJobsClient
    from videojobs.common.options import AnalysisOptions

    with VideoJobsClient("localhost:50051") as client:
        job = client.submit_file("clip.mp4", options=AnalysisOptions(sample_fps=2))
        job = client.wait(job.job_id, on_progress=lambda j: print(j.frames_done, j.frames_total))
        document = client.results(job.job_id)  # a videojobs.common.results.ResultsDocument
"""

from videojobs.client.client import JobsPage, RetryPolicy, VideoJobsClient
from videojobs.client.config import ClientSettings
from videojobs.client.errors import ClientError, ServiceError, ServiceUnreachable, WaitTimeout

__all__ = [
    "ClientError",
    "ClientSettings",
    "JobsPage",
    "RetryPolicy",
    "ServiceError",
    "ServiceUnreachable",
    "VideoJobsClient",
    "WaitTimeout",
]
