"""Create the pipeline's Kafka topics that are missing (run by the chart's topics Job).

Usage: python -c "$(cat create_topics.py)" PARTITIONS REPLICATION TOPIC [TOPIC ...]
The bootstrap servers come from URBANFABRIC_KAFKA, SASL credentials (when set) from
URBANFABRIC_KAFKA_USERNAME / _PASSWORD / _MECHANISM. Idempotent: existing topics are left as
they are. Retries until the broker answers or TOPICS_DEADLINE_S (default 300) passes.
"""

import os
import sys
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


def main(argv: list[str]) -> int:
    partitions, replication, topics = int(argv[0]), int(argv[1]), argv[2:]
    bootstrap = os.environ["URBANFABRIC_KAFKA"]
    sasl = {}
    if os.environ.get("URBANFABRIC_KAFKA_USERNAME"):
        sasl = {"security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": os.environ.get("URBANFABRIC_KAFKA_MECHANISM", "SCRAM-SHA-512"),
                "sasl_plain_username": os.environ["URBANFABRIC_KAFKA_USERNAME"],
                "sasl_plain_password": os.environ.get("URBANFABRIC_KAFKA_PASSWORD", "")}
    deadline = time.monotonic() + float(os.environ.get("TOPICS_DEADLINE_S", "300"))
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **sasl)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                print(f"kafka at {bootstrap} not reachable: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)
    try:
        existing = set(admin.list_topics())
        for topic in topics:
            if topic in existing:
                print(f"exists  {topic}")
                continue
            try:  # one request per topic: a batch fails as a whole if any one exists
                admin.create_topics([NewTopic(topic, partitions, replication)])
                print(f"created {topic} ({partitions} partitions, replication {replication})")
            except TopicAlreadyExistsError:
                print(f"exists  {topic}")
    finally:
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
