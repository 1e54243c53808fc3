"""``stt-service list-endpoints``: the SageMaker endpoints of a region, as a readable table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# the CLI's lower-case filter names -> SageMaker's EndpointStatus values
STATUSES = {
    "outofservice": "OutOfService",
    "creating": "Creating",
    "updating": "Updating",
    "systemupdating": "SystemUpdating",
    "rollingback": "RollingBack",
    "inservice": "InService",
    "deleting": "Deleting",
    "failed": "Failed",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    status: str
    created: datetime
    modified: datetime


def list_endpoints(
    region: str, status: str | None = None, endpoint_url: str | None = None
) -> list[Endpoint]:
    """Every endpoint (all pages), newest first; ``status`` is one of :data:`STATUSES`."""
    import boto3

    client = boto3.client("sagemaker", region_name=region, endpoint_url=endpoint_url)
    kwargs: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
    if status:
        kwargs["StatusEquals"] = STATUSES[status]
    out = []
    for page in client.get_paginator("list_endpoints").paginate(**kwargs):
        for e in page.get("Endpoints", []):
            out.append(
                Endpoint(
                    e["EndpointName"], e["EndpointStatus"], e["CreationTime"], e["LastModifiedTime"]
                )
            )
    return out


def format_table(endpoints: list[Endpoint], region: str) -> str:
    def when(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    width = max([len("ENDPOINT NAME"), *(len(e.name) for e in endpoints)]) + 2
    rule = "-" * max(60, width + 54)
    lines = [
        f"SageMaker Endpoints  [{region}]",
        rule,
        f"{'ENDPOINT NAME':<{width}}{'STATUS':<16}{'CREATED (UTC)':<22}LAST MODIFIED",
        rule,
    ]
    lines += [
        f"{e.name:<{width}}{e.status:<16}{when(e.created):<22}{when(e.modified)}" for e in endpoints
    ]
    lines += [rule, f"{len(endpoints)} endpoint(s)"]
    return "\n".join(lines)
