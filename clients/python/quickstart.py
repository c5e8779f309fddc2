"""Punctual quick start in Python: schedule a post, read it back, list it,
cancel it. Exits non-zero, saying what differed, on any unexpected answer.

Generate the client first (see docs/clients.md), then:

    PYTHONPATH=gen python3 clients/python/quickstart.py --server 127.0.0.1:50051

With --bulk it also schedules 10,000 posts in one BulkSchedule call and
retries the call with the same request_id, on a client with grpcio's default
options (answers of at most 4 MiB).
"""

import argparse
import datetime
import json
import os
import sys
import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from punctual.v1 import scheduler_pb2 as pb
from punctual.v1 import scheduler_pb2_grpc as pb_grpc

# A number no double holds exactly: it must come back as it was sent.
PAYLOAD_JSON = '{"text":"hello","n":12345678901234567890}'
BULK_POSTS = 10_000
BULK_PAYLOAD_BYTES = 1024


class Mismatch(Exception):
    """An answer that is not what the API promises."""


def check(condition, message):
    if not condition:
        raise Mismatch(message)


def timestamp(instant):
    stamp = Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def quick_start(stub, metadata):
    # Whole seconds, so the instant compares equal after the round trip.
    instant = datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0
    ) + datetime.timedelta(hours=1)
    business = "quickstart-python"

    created = stub.CreateSchedule(
        pb.CreateScheduleRequest(
            business_id=business,
            content_id="hello-1",
            platform="x",
            payload_json=PAYLOAD_JSON,
            scheduled_for=timestamp(instant),
            time_zone="Europe/Paris",
            # A retry with this key returns this post instead of a second one.
            request_id=str(uuid.uuid4()),
        ),
        metadata=metadata,
    )
    print(f"created  {created.id} for {created.local_time} Europe/Paris")
    check(created.id, "CreateSchedule answered no id")
    check(
        created.status == pb.ScheduledPost.SCHEDULED,
        f"new post is {pb.ScheduledPost.Status.Name(created.status)}, not SCHEDULED",
    )

    fetched = stub.GetSchedule(pb.GetScheduleRequest(id=created.id), metadata=metadata)
    print(f"fetched  {fetched.id}: payload_json {fetched.payload_json}")
    check(
        fetched.payload_json == PAYLOAD_JSON,
        f"payload_json came back as {fetched.payload_json!r}, sent {PAYLOAD_JSON!r}",
    )
    check(
        fetched.scheduled_for.ToDatetime(datetime.timezone.utc) == instant,
        f"scheduled_for came back as {fetched.scheduled_for.ToJsonString()}, "
        f"sent {instant.isoformat()}",
    )

    # Page through the business's posts at that instant until ours shows up.
    listed = []
    page_token = ""
    while True:
        page = stub.ListSchedules(
            pb.ListSchedulesRequest(
                business_id=business,
                from_time=timestamp(instant),
                to_time=timestamp(instant + datetime.timedelta(seconds=1)),
                page_size=100,
                page_token=page_token,
            ),
            metadata=metadata,
        )
        listed.extend(post.id for post in page.schedules)
        page_token = page.next_page_token
        if created.id in listed or not page_token:
            break
    print(f"listed   {len(listed)} post(s) of {business} at that instant")
    check(created.id in listed, f"ListSchedules did not return {created.id}")

    cancelled = stub.CancelSchedule(
        pb.CancelScheduleRequest(id=created.id), metadata=metadata
    )
    print(f"cancelled {cancelled.id}")
    check(
        cancelled.status == pb.ScheduledPost.CANCELLED,
        f"CancelSchedule answered {pb.ScheduledPost.Status.Name(cancelled.status)}",
    )

    again = stub.GetSchedule(pb.GetScheduleRequest(id=created.id), metadata=metadata)
    check(
        again.status == pb.ScheduledPost.CANCELLED,
        f"after cancelling, GetSchedule says {pb.ScheduledPost.Status.Name(again.status)}",
    )
    print(f"fetched  {again.id}: {pb.ScheduledPost.Status.Name(again.status)}")


def bulk_payload():
    """A JSON object of exactly BULK_PAYLOAD_BYTES bytes."""
    empty = json.dumps({"text": ""}, separators=(",", ":"))
    return json.dumps(
        {"text": "x" * (BULK_PAYLOAD_BYTES - len(empty))}, separators=(",", ":")
    )


def bulk(stub, metadata):
    tomorrow = datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(
        days=1
    )
    payload = bulk_payload()
    check(len(payload.encode()) == BULK_PAYLOAD_BYTES, "bulk payload is not 1 KiB")
    request = pb.BulkScheduleRequest(
        business_id="quickstart-python-bulk",
        platform="x",
        content_ids=[f"bulk-{index}" for index in range(BULK_POSTS)],
        payload_json=payload,
        recurrence=pb.Recurrence(
            pattern=pb.Recurrence.EVERY_N_HOURS,
            start_date=tomorrow.isoformat(),
            local_time="09:00",
            time_zone="UTC",
            interval_hours=1,
        ),
        request_id=str(uuid.uuid4()),
    )

    def call(attempt):
        try:
            response = stub.BulkSchedule(request, metadata=metadata, timeout=120)
        except grpc.RpcError as error:
            raise Mismatch(
                f"BulkSchedule ({attempt}) failed: {error.code().name}: {error.details()}"
            ) from None
        ids = [post.id for post in response.schedules]
        print(
            f"bulk     {attempt}: {len(ids)} posts, answer {response.ByteSize():,} bytes"
        )
        check(len(ids) == BULK_POSTS, f"{attempt}: {len(ids)} posts, not {BULK_POSTS}")
        check(all(ids), f"{attempt}: a post without an id")
        check(len(set(ids)) == BULK_POSTS, f"{attempt}: ids are not distinct")
        return ids

    first = call("first call")
    retried = call("retry with the same request_id")
    check(first == retried, "the retry named other posts than the first call")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    parser.add_argument(
        "--bulk", action="store_true", help="also schedule 10,000 posts in one call"
    )
    args = parser.parse_args()

    # PUNCTUAL_TOKEN: the bearer token, when the server requires one.
    token = os.environ.get("PUNCTUAL_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()

    # Default channel options: answers are limited to 4 MiB.
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.SchedulerStub(channel)
        try:
            quick_start(stub, metadata)
            if args.bulk:
                bulk(stub, metadata)
        except Mismatch as mismatch:
            print(f"FAILED: {mismatch}", file=sys.stderr)
            return 1
        except grpc.RpcError as error:
            print(f"FAILED: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print("python quick start: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
