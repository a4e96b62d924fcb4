#!/usr/bin/env python3
"""A henvis agency client in Python: submit a referral and read the inbox.

Generate the stubs from the protos with stock protoc (grpcio-tools carries it):

    python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen \
        $(find proto -name '*.proto')

then run with the stubs on the path:

    PYTHONPATH=gen python examples/python/henvis_client.py --endpoint 127.0.0.1:50054 \
        --pki .local/pki --agency ngo-redbarnet submit --key report-2026-0001 --municipality 101
    PYTHONPATH=gen python examples/python/henvis_client.py --endpoint 127.0.0.1:50053 \
        --pki .local/pki --agency kommune-101 inbox --seen seen.txt --max 1

Exit status: 0 done; 2 refused for good (fix the request: the message names the field);
3 still failing after the retries (safe to run again with the same key).
"""

import argparse
import queue
import sys
import time
import uuid

import grpc
from google.protobuf import timestamp_pb2

from henvis.broker.v1 import broker_pb2, broker_pb2_grpc
from henvis.events.v1 import events_pb2

# Answers a retry with the same idempotency key may fix; every other code needs a change
# to the request (or to the agency's certificate or rights) first.
RETRIABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a full stream; a too-large request is refused again
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def channel(endpoint, pki, agency):
    """A mutual-TLS channel as `agency`: the henvis CA, the agency's certificate and key."""
    with open(f"{pki}/ca.pem", "rb") as f:
        ca = f.read()
    with open(f"{pki}/agency/{agency}.pem", "rb") as f:
        cert = f.read()
    with open(f"{pki}/agency/{agency}.key", "rb") as f:
        key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(endpoint, creds)


def submit(stub, key, municipality, actor, observed_at, attempts=5):
    """Submits an opening report under `key`, retrying what a retry may fix. Every attempt
    sends the identical request with the same key: a retry never stores the event twice
    (the same key with a different request is refused with ALREADY_EXISTS)."""
    observed = timestamp_pb2.Timestamp(seconds=observed_at)
    request = broker_pb2.SubmitRequest(
        idempotency_key=key,
        actor_id=actor,
        event=events_pb2.Event(
            suspected_victim_reported=events_pb2.SuspectedVictimReported(
                municipality_code=municipality,
                observed_at=observed,
            )
        ),
    )
    pause = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return stub.Submit(request, timeout=10)
        except grpc.RpcError as e:
            if e.code() not in RETRIABLE or attempt == attempts:
                raise
            print(f"attempt {attempt}: {e.code().name}; retrying with the same key", file=sys.stderr)
            time.sleep(pause)
            pause = min(pause * 2, 8)


def read_inbox(stub, seen_path, max_deliveries, idle_seconds):
    """Reads deliveries, acknowledging each after it is handled. A delivery whose
    acknowledgement was lost is offered again (its `attempt` grows): the event id, kept in
    `seen_path`, tells a repeat from a new event, so it is acknowledged without being
    handled twice."""
    try:
        with open(seen_path) as f:
            seen = set(line.strip() for line in f if line.strip())
    except FileNotFoundError:
        seen = set()
    acks = queue.Queue()

    def requests():
        while True:
            ack = acks.get()
            if ack is None:
                return
            yield broker_pb2.InboxRequest(ack=broker_pb2.Ack(delivery_id=ack))

    handled = 0
    pending = set()
    responses = stub.Inbox(requests())
    last = time.monotonic()
    try:
        for response in responses:
            kind = response.WhichOneof("kind")
            if kind == "delivery":
                d = response.delivery
                event_id = d.envelope.event_id
                if event_id in seen:
                    print(f"repeat {event_id} (attempt {d.attempt}): acknowledged, not handled again")
                else:
                    # handle the event here (store it in the agency's own system) before
                    # acknowledging: an acknowledged delivery is gone from henvis
                    print(f"delivery {event_id} {d.envelope.message_type} classes={list(d.granted_classes)}")
                    seen.add(event_id)
                    with open(seen_path, "a") as f:
                        f.write(event_id + "\n")
                    handled += 1
                pending.add(d.delivery_id)
                acks.put(d.delivery_id)
                last = time.monotonic()
            elif kind == "ack_confirmed":
                pending.discard(response.ack_confirmed.delivery_id)
                if handled >= max_deliveries and not pending:
                    break
            elif kind == "heartbeat":
                if not pending and time.monotonic() - last > idle_seconds:
                    break
    finally:
        acks.put(None)
        responses.cancel()
    return handled


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="host:port of your sector's service")
    p.add_argument("--pki", required=True, help="folder with ca.pem and agency/<id>.pem/.key")
    p.add_argument("--agency", required=True, help="your agency id (its certificate)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit an opening report")
    s.add_argument("--key", default=None, help="idempotency key (default: a new one)")
    s.add_argument("--municipality", default="101")
    s.add_argument("--actor", default="case-worker-1")
    s.add_argument(
        "--observed-at",
        type=int,
        default=None,
        help="when the child was observed, unix seconds (default: now); a retry must send the same",
    )
    i = sub.add_parser("inbox", help="read and acknowledge deliveries")
    i.add_argument("--seen", required=True, help="file of event ids already handled")
    i.add_argument("--max", type=int, default=1, help="stop after this many new deliveries")
    i.add_argument("--idle", type=float, default=5.0, help="stop after this many idle seconds")
    args = p.parse_args()
    stub = broker_pb2_grpc.ReferralServiceStub(channel(args.endpoint, args.pki, args.agency))
    try:
        if args.command == "submit":
            observed_at = args.observed_at if args.observed_at is not None else int(time.time())
            r = submit(stub, args.key or f"py-{uuid.uuid4()}", args.municipality, args.actor, observed_at)
            print(f"event_id={r.event_id} case_id={r.case_id} duplicate={str(r.duplicate).lower()}")
        else:
            n = read_inbox(stub, args.seen, args.max, args.idle)
            print(f"handled={n}")
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        return 3 if e.code() in RETRIABLE else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
