"""Cold start of every function against a bare lambda_http hello world, in one run.

Builds each function as `sam build` does (release profile, its own package and features)
plus `cold-start-baseline` (the hello world with a DynamoDB client), for this machine's
architecture so they can run here. Against a private local stack (DynamoDB Local, moto),
each binary is started under a Lambda runtime API stand-in, as Lambda starts it, several
times; per start it measures:

- init: exec to the first `GET /runtime/invocation/next` (what a cold start costs before
  Lambda can hand over the event);
- first response: the first event handed over to its response posted (what the caller of a
  cold start waits for on top of init), and a second event's (warm) for reference;
- peak RSS of the process (its rusage, after it is stopped);
- DynamoDB calls made for the first event, counted by a proxy in front of DynamoDB Local.

Every start of a function is followed at once by a start of the hello world making the same
DynamoDB calls (same operations, in sequence or at once as the function made them, on an item
of its own), so each first response is compared with a hello world doing the same DynamoDB
round trips against DynamoDB Local in the same state. Zip sizes are of the stripped binary
deflated as `bootstrap`, as a deployment package is. Medians are reported as a Markdown
table (and written into docs/benchmarks.md between the benchmark markers with `--docs`).
"""
from __future__ import annotations

import argparse
import base64
import http.server
import io
import json
import os
import queue
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack as S  # noqa: E402

BASELINE = "cold-start-baseline"
# function → (template resource, what its first request is). Authenticated requests carry a
# correctly signed access token whose session does not exist: the signature is checked with
# the key from the secret, then the session is looked up (and is not there: 401).
FUNCTIONS = {
    "register": ("RegisterFunction", "POST /auth/register, a password that fails the policy"),
    "verify": ("VerifyFunction", "POST /auth/verify-email, an unknown token"),
    "login": ("LoginFunction", "GET /auth/me, signed token, no such session"),
    "reset": ("ResetFunction", "POST /auth/reset-password, an unknown token"),
    "account": ("AccountFunction", "GET /orgs/me, signed token, no such session"),
    "audit": ("AuditFunction", "GET /admin/audit-logs, signed token, no such session"),
    "notifications": ("NotificationsFunction", "GET /notifications/preferences, signed token, no such session"),
    "pay": ("PayFunction", "GET /payments, signed token, no such session"),
    "release": ("ReleaseFunction", "POST /payments/{id}/release, signed token, no such session"),
    "webhook": ("WebhookFunction", "POST /stripe/webhook, a correctly signed event for an unknown payment"),
    "notify": ("NotifyFunction", "a stream batch of one verification email (sent through SES)"),
    "cleanup": ("CleanupFunction", "a scheduled run with nothing to do"),
}
HTTP_REQUESTS = {
    "register": ("POST", "/auth/register", {"email": "bench@example.com", "password": "password"}, False),
    "verify": ("POST", "/auth/verify-email", {"token": "0" * 43}, False),
    "login": ("GET", "/auth/me", None, True),
    "reset": ("POST", "/auth/reset-password", {"token": "0" * 43, "new_password": "a long and unusual passphrase 7"}, False),
    "account": ("GET", "/orgs/me", None, True),
    "audit": ("GET", "/admin/audit-logs", None, True),
    "notifications": ("GET", "/notifications/preferences", None, True),
    "pay": ("GET", "/payments", None, True),
    "release": ("POST", "/payments/0190a1b2-0000-7000-8000-000000000001/release", {}, True),
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, no access log, no Nagle delay."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A stopped function drops its connections: not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """A request's body, sized or chunked (the runtime client streams some responses)."""
    if "chunked" not in handler.headers.get("transfer-encoding", ""):
        return handler.rfile.read(int(handler.headers.get("content-length") or 0))
    body = b""
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return body
        body += handler.rfile.read(size)
        handler.rfile.readline()


# --- the Lambda runtime API stand-in ------------------------------------------------------

class RuntimeApi:
    """Lambda's runtime API for one process (a new one per start, so nothing of a stopped
    process can reach the next): hands over queued events on `/next` and records when the
    first poll and each response arrive."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        self.first_poll = threading.Event()
        self.first_poll_at = 0.0
        api = self

        class Handler(QuietHandler):

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self.reply(404, b"{}")
                if not api.first_poll.is_set():
                    api.first_poll_at = time.perf_counter()
                    api.first_poll.set()
                request_id, body = api.events.get()
                if request_id is None:  # the run is over; the process is gone
                    return
                self.reply(200, body, {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 900_000),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                })

            def do_POST(self):
                body = read_body(self)
                api.responses.put((time.perf_counter(), self.path, body))
                self.reply(202, b"{}")

            def reply(self, status, body, headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                # A connection per request: a poll left waiting when a process is stopped
                # must not leave a kept-alive connection in a state the next one trips on.
                self.send_header("connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.events.put((None, b""))  # releases a poll still waiting
        self.server.shutdown()
        self.server.server_close()

    def invoke(self, body: bytes, timeout: float = 60) -> tuple[float, dict | str]:
        """Hands `body` over and waits for its answer: (seconds it took, the answer)."""
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        self.events.put((request_id, body))
        at, path, answer = self.responses.get(timeout=timeout)
        if not path.endswith(f"/invocation/{request_id}/response"):
            raise RuntimeError(f"{path}: {answer[:500]!r}")
        try:
            return at - started, json.loads(answer)
        except ValueError:
            return at - started, answer.decode()


# --- the DynamoDB call counter --------------------------------------------------------------

class CountingProxy:
    """Forwards to DynamoDB Local and records the calls: operation (`X-Amz-Target`), start
    and end."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[tuple[str, float, float]] = []
        proxy = self

        class Handler(QuietHandler):

            def do_POST(self):
                started = time.perf_counter()
                body = read_body(self)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(upstream, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, answer, reply_headers = response.status, response.read(), response.headers
                except urllib.error.HTTPError as error:
                    status, answer, reply_headers = error.code, error.read(), error.headers
                self.send_response(status)
                for name in ("content-type", "x-amzn-requestid", "x-amz-crc32"):
                    if reply_headers.get(name):
                        self.send_header(name, reply_headers[name])
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                operation = self.headers.get("x-amz-target", "?").split(".")[-1]
                proxy.calls.append((operation, started, time.perf_counter()))

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def busy(self) -> float:
        """Seconds during which at least one call so far was in flight."""
        total, until = 0.0, None
        for _, start, end in sorted(self.calls, key=lambda c: c[1]):
            if until is None or start >= until:
                total += end - start
                until = end
            elif end > until:
                total += end - until
                until = end
        return total

    def pattern(self) -> str:
        """The calls so far as the baseline takes them: `,` between calls made one after
        another, `+` between calls that overlapped."""
        waves: list[list[str]] = []
        wave_end = None
        for operation, start, end in sorted(self.calls, key=lambda c: c[1]):
            if wave_end is not None and start < wave_end:
                waves[-1].append(operation)
                wave_end = max(wave_end, end)
            else:
                waves.append([operation])
                wave_end = end
        return ",".join("+".join(wave) for wave in waves)


# --- events ---------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(env: dict) -> str:
    """An access token signed with the stack's signing key, for a session that does not exist."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = S.machine_secrets()["jwt_signing_keys"][0]
    private = serialization.load_pem_private_key(key["private_key_pem"].encode(), password=None)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": key["kid"]}
    claims = {"iss": env["JWT_ISSUER"], "aud": S.FUNCTION_DEFAULTS["JWT_AUDIENCE"], "sub": str(uuid.uuid4()),
              "org": str(uuid.uuid4()), "role": "admin", "iat": now, "exp": now + 600, "jti": str(uuid.uuid4()),
              "token_use": "access", "csrf": uuid.uuid4().hex, "sid": str(uuid.uuid4()), "sv": 0}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def http_event(method: str, path: str, body: dict | None, token: str | None) -> dict:
    """An API Gateway event from an address of its own (so no rate limit sees a repeat)."""
    event = json.loads((S.ROOT / "events" / "health.json").read_text())
    event["requestContext"]["http"]["sourceIp"] = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["headers"] = {"content-type": "application/json", "user-agent": "bench", "x-request-id": "bench"}
    if token:
        event["headers"]["authorization"] = f"Bearer {token}"
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def webhook_event(env: dict) -> dict:
    event = json.loads((S.ROOT / "events" / "webhook.json").read_text())
    payload, signature = S.signed_event(env, "payment_intent.succeeded", {
        "id": "pi_bench", "object": "payment_intent", "amount": 1999, "currency": "usd", "status": "succeeded",
        "metadata": {"payment_id": "0190a1b2-0000-7000-8000-000000000001"}, "latest_charge": "ch_bench"})
    event["body"] = payload.decode()
    event["headers"]["stripe-signature"] = signature
    return event


def event_for(function: str, env: dict) -> dict:
    """A fresh event of the function's benchmark request (its own address, email, token)."""
    if function in HTTP_REQUESTS:
        method, path, body, authenticated = HTTP_REQUESTS[function]
        if body and "email" in body:
            body = {**body, "email": f"bench-{uuid.uuid4().hex[:12]}@example.com"}
        return http_event(method, path, body, access_token(env) if authenticated else None)
    if function == "webhook":
        return webhook_event(env)
    if function == "notify":
        return json.loads((S.ROOT / "events" / "notify.json").read_text())
    if function == "cleanup":
        return json.loads((S.ROOT / "events" / "cleanup.json").read_text())
    raise SystemExit(f"no benchmark event for {function}")


# --- building and measuring -----------------------------------------------------------------

def build(packages: list[str]) -> dict[str, Path]:
    """Release binaries, each package built on its own (its own features), as sam build does."""
    binaries = {}
    for package in packages:
        started = time.time()
        subprocess.run(["cargo", "build", "--release", "--locked", "--package", package], cwd=S.ROOT, check=True)
        log(f"built {package} in {time.time() - started:.0f} s")
        binaries[package] = S.ROOT / "target" / "release" / package
    return binaries


def zipped_size(binary: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, binary.read_bytes(), zipfile.ZIP_DEFLATED, 9)
    return len(buffer.getvalue())


def start(binary: Path, env: dict) -> tuple[RuntimeApi, subprocess.Popen, float]:
    """Starts `binary` as Lambda would; returns its runtime API, it, and its init (exec to
    first poll)."""
    runtime = RuntimeApi()
    env = {**env, "AWS_LAMBDA_RUNTIME_API": runtime.address}
    started = time.perf_counter()
    # Its log, for when a start goes wrong; written to a file, as Lambda's go to CloudWatch.
    output = open(S.LOCAL / "logs" / f"bench-{binary.name}.log", "wb")
    process = subprocess.Popen([str(binary)], env=env, stdout=output, stderr=subprocess.STDOUT)
    output.close()
    if not runtime.first_poll.wait(timeout=60):
        process.kill()
        raise RuntimeError(f"{binary.name} never polled the runtime API")
    return runtime, process, runtime.first_poll_at - started


def stop(runtime: RuntimeApi, process: subprocess.Popen) -> int:
    """Stops the process; its peak RSS in bytes (the high-water mark of its own image: the
    rusage of a child also counts the forked interpreter it was before exec)."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    process.send_signal(signal.SIGKILL)
    process.wait()
    runtime.close()
    return peak * 1024


def cold_start(proxy: CountingProxy, binary: Path, env: dict, event: dict) -> dict:
    """One cold start: init, first response (and the part not spent on DynamoDB), a warm
    response, peak RSS, the first event's DynamoDB calls and its status."""
    runtime, process, init = start(binary, env)
    try:
        proxy.calls.clear()
        first, answer = runtime.invoke(json.dumps(event).encode())
        calls, own = proxy.pattern(), first - proxy.busy()
        warm, _ = runtime.invoke(json.dumps(event).encode())
    finally:
        rss = stop(runtime, process)
    status = answer.get("statusCode") if isinstance(answer, dict) else None
    return {"init": init, "first": first, "own": own, "warm": warm, "rss": rss, "calls": calls, "status": status}


def medians(samples: list[dict]) -> dict:
    numbers = {k: statistics.median(s[k] for s in samples) for k in ("init", "first", "own", "warm", "rss")}
    return numbers | {"calls": statistics.mode(s["calls"] for s in samples),
                      "status": statistics.mode(s["status"] for s in samples)}


def lambda_env(base: dict, function: str, memory: int = 128) -> dict:
    return {**base, "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory), "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench", "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}"}


def table(results: dict, baseline: dict, sizes: dict) -> str:
    ms = lambda s: f"{s * 1000:.1f}"  # noqa: E731
    mb = lambda b: f"{b / 1_048_576:.2f}"  # noqa: E731
    lines = [
        "| function | zip MB (binary) | init ms | first response ms | of it, not waiting on DynamoDB | "
        "warm ms | peak RSS MB | first request | its DynamoDB calls |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    hello0 = baseline[""]
    lines.append(f"| hello world | {mb(sizes[BASELINE][1])} ({mb(sizes[BASELINE][0])}) | {ms(hello0['init'])} | "
                 f"{ms(hello0['first'])} | {ms(hello0['own'])} | {ms(hello0['warm'])} | {mb(hello0['rss'])} | "
                 "any | none (or as the function beside it) |")
    for function, r in results.items():
        hello = baseline[function]
        lines.append(
            f"| {function} | {mb(sizes[function][1])} ({mb(sizes[function][0])}) | "
            f"{ms(r['init'])} ({r['init'] / hello0['init']:.2f}×) | "
            f"{ms(r['first'])} ({r['first'] / hello['first']:.2f}× hello's {ms(hello['first'])}) | "
            f"{ms(r['own'])} (hello {ms(hello['own'])}) | {ms(r['warm'])} | {mb(r['rss'])} | "
            f"{FUNCTIONS[function][1]} → {r['status'] or 'ok'} | "
            f"{r['calls'].replace(',', ', ').replace('+', ' + ') or 'none'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="starts per binary (medians are reported)")
    parser.add_argument("--functions", default=",".join(FUNCTIONS), help="comma-separated subset")
    parser.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    # The table used to live in README.md; the old flag does what --docs does.
    parser.add_argument("--readme", action="store_true", dest="docs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    functions = [f for f in args.functions.split(",") if f]
    unknown = set(functions) - set(FUNCTIONS)
    if unknown:
        raise SystemExit(f"unknown functions: {sorted(unknown)}")

    packages = [BASELINE, *functions]
    started = time.time()
    binaries = ({p: S.ROOT / "target" / "release" / p for p in packages} if args.no_build else build(packages))
    build_seconds = time.time() - started
    sizes = {p: (b.stat().st_size, zipped_size(b)) for p, b in binaries.items()}

    stack = S.Stack("bench")
    try:
        env = S.start_services(stack, S.free_port(), S.free_port(), S.free_port())
        proxy = CountingProxy(env["AWS_ENDPOINT_URL_DYNAMODB"])
        per_function = S.sam_env(env)
        base = {**S.function_env(env), "AWS_ENDPOINT_URL_DYNAMODB": proxy.url, "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info")}
        fenv = {f: lambda_env({**base, **per_function[FUNCTIONS[f][0]], "AWS_ENDPOINT_URL_DYNAMODB": proxy.url}, f)
                for f in functions}
        benv = lambda calls: lambda_env({**base, "BASELINE_CALLS": calls}, BASELINE)  # noqa: E731
        hello_event = http_event("GET", "/", None, None)
        # One start of each first, not counted: DynamoDB Local (a JVM) answers its first calls
        # of a kind slowly, and this is also where each function's calls are learnt.
        calls = {f: cold_start(proxy, binaries[f], fenv[f], event_for(f, env))["calls"] for f in functions}
        cold_start(proxy, binaries[BASELINE], benv(""), hello_event)
        # Then rounds, each function followed at once by the hello world making its calls,
        # so that both meet DynamoDB Local in the same state.
        samples = {f: [] for f in functions}
        paired = {f: [] for f in functions}
        bare = []
        for round_ in range(args.runs):
            bare.append(cold_start(proxy, binaries[BASELINE], benv(""), hello_event))
            for f in functions:
                samples[f].append(cold_start(proxy, binaries[f], fenv[f], event_for(f, env)))
                paired[f].append(cold_start(proxy, binaries[BASELINE], benv(calls[f]), hello_event))
            log(f"round {round_ + 1} of {args.runs} done")
        results = {f: medians(samples[f]) for f in functions}
        baseline = {f: medians(paired[f]) for f in functions} | {"": medians(bare)}
        for f in functions:
            log(f"{f}: {results[f]}; hello world with its calls: {baseline[f]}")
    finally:
        stack.stop()

    report = table(results, baseline, sizes)
    header = (f"{len(functions)} functions and the hello world, {args.runs} cold starts each (medians), "
              f"release builds for {os.uname().machine}"
              f"{'' if args.no_build else f' ({build_seconds / 60:.0f} min to build)'}, "
              f"{time.strftime('%Y-%m-%d')}:\n\n")
    print(header + report)
    if args.docs:
        doc = S.ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        begin, end = "<!-- cold-start benchmark: begin -->", "<!-- cold-start benchmark: end -->"
        if begin not in text or end not in text:
            raise SystemExit("docs/benchmarks.md has no benchmark markers")
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        doc.write_text(f"{before}{begin}\n{header}{report}\n{end}{after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
