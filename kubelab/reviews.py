"""AdmissionReview bodies shaped as kube-apiserver sends them, for the demo, tests and benchmarks.

Test infrastructure (not shipped): the webhook only parses reviews, it never builds one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from webhook.admission import AdmissionRequest, AdmissionReview, Operation

# Written out, not taken from the webhook: the version kube-apiserver speaks.
ADMISSION_API_VERSION = "admission.k8s.io/v1"


def make_review(
    obj: Mapping[str, Any],
    *,
    operation: Operation = "CREATE",
    uid: str | None = None,
    old: Mapping[str, Any] | None = None,
) -> AdmissionReview:
    """An AdmissionReview for ``obj``; ``old`` is the oldObject of an UPDATE."""
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    kind = str(obj["kind"])
    request: AdmissionRequest = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "namespace": obj["metadata"].get("namespace", "default"),
        "operation": operation,
        "userInfo": {"username": "system:admin"},
        "object": dict(obj),
        "dryRun": False,
    }
    if old is not None:
        request["oldObject"] = dict(old)
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "request": request}
