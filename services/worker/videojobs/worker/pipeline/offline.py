"""The analysis never reaches the network: no usage telemetry, no look-ups, no installs.

Two libraries the detector uses phone home by default:

- OpenVINO's model converter (run by Ultralytics' OpenVINO export, and imported with ``openvino`` itself)
  sends usage telemetry to Google Analytics unless a consent file in ``~/intel`` says no: it writes a
  client id there and forks a process to post each event. A fork of a threaded worker can deadlock
  (seen here: a child stuck in the dynamic loader's lock, resolving www.google-analytics.com, outliving
  its worker). With ``openvino_telemetry`` unimportable, OpenVINO uses its own no-op stub instead.
- Ultralytics probes DNS at import and sends usage events unless ``YOLO_OFFLINE`` is set, and may
  pip-install a missing package unless ``YOLO_AUTOINSTALL`` is off.

``keep_offline()`` must run before ``openvino`` or ``ultralytics`` is first imported; the pipeline
package runs it when it is imported. A deployment can still set the two variables itself.
"""

from __future__ import annotations

import os
import sys


def keep_offline() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    if "openvino_telemetry" not in sys.modules:  # None makes `import openvino_telemetry` raise ImportError
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
