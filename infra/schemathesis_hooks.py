"""Schemathesis hooks for the test command's fuzz run (`fuzz` in infra/stack.py).

The local Lambda emulator (cargo-lambda) answers a request whose body is not UTF-8 with a 500
of its own (text/plain, `{"type":"https://httpstatuses.com/500",...}`) before any function
runs; API Gateway would instead base64-encode such a body and hand it to the function. Those
answers are the emulator's, not ours, so no check judges them. Every response of ours carries
`X-Request-Id` (and, when it is an error, a problem+json body with `request_id`), so a 500 from
one of our functions is still judged by every check, `not_a_server_error` included.
"""

import functools

from schemathesis.checks import CHECKS


def emulators_own(response) -> bool:
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    return (
        response.status_code == 500
        and "x-request-id" not in {name.lower() for name in response.headers}
        and content_type.startswith("text/plain")
        and b"httpstatuses.com/500" in response.content
    )


def _judging_only_ours(check):
    @functools.wraps(check)
    def judged(ctx, response, case):
        if emulators_own(response):
            return None
        return check(ctx, response, case)

    return judged


# Every function-style check (the built-in ones), re-registered under its own name.
for _check in CHECKS.get_all():
    if not isinstance(_check, type):
        CHECKS.register(_judging_only_ours(_check))
