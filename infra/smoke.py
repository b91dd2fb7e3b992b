"""Smoke test of a running stack over HTTP: the README's "try it" flow, against any base URL.

    python3 infra/smoke.py --api-url URL --verify-token-from SOURCE [--payments ...]

It registers a new account, verifies its email address with the token from the verification
email, logs in and reads /auth/me. With --payments it also onboards a provider with a signed
`account.updated` webhook (signed as Stripe's Connect endpoint signs it) and takes a payment
through a partial refund to its release: the payer pays as Stripe.js does (the PaymentIntent
confirmed with Stripe's test card and a publishable key), and the success reaches the webhook
as a signed event (this part needs the webhook URL and both endpoints' signing secrets, so it
runs where the test can sign events: the local stack and its Stripe stand-in).

Where the verification token comes from (--verify-token-from):

    moto:<url>        the local stack: the email as moto's SES kept it (<url> is the stack's
                      AWS_ENDPOINT_URL, e.g. http://127.0.0.1:5000)
    command:<shell>   a command that prints the token, or the link or email holding it; it
                      gets the address in SMOKE_EMAIL and is run again until it prints one
    prompt            asks on the terminal: paste the link (or the token) from the email

Standard library only, so it runs anywhere Python 3.11 does. infra/stack.py runs the same
code in the test command (its `smoke` step and the fuzz run's sign-up). Exit status 0 when
every step answered as expected; otherwise a message naming the step that did not.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

PASSWORD = "correct horse battery staple"
# What the link in the verification email looks like: {FRONTEND_URL}/verify-email?token=...
TOKEN_MARKER = "/verify-email?token="


def log(message: str) -> None:
    print(f"[smoke] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> SystemExit:
    return SystemExit(f"smoke: {message}")


def call(api_url: str, method: str, path: str, body: dict | None = None, token: str | None = None,
         headers: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
    """One request to the API: (status, JSON body). A body that is not JSON comes back as
    {"raw": text}, so a gateway's own error page still shows in the failure message."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    if token:
        all_headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{api_url.rstrip('/')}{path}", data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"raw": raw.decode(errors="replace")[:500]}
    return value if isinstance(value, dict) else {"value": value}


def token_in(text: str) -> str | None:
    """The verification token in a link, an email body, or the bare token itself."""
    text = text.strip()
    if TOKEN_MARKER in text:
        token = text.split(TOKEN_MARKER, 1)[1]
        for end in ('"', "'", "<", ">", "&", " ", "\n", "\r", "\t"):
            token = token.split(end, 1)[0]
        return urllib.parse.unquote(token) or None
    if "token=" in text:
        return token_in(TOKEN_MARKER + text.split("token=", 1)[1])
    if text and len(text.split()) == 1 and "/" not in text:
        return text
    return None


# A token source: given the address just registered, its verification token (or a failure).
TokenSource = Callable[[str], str]


def from_moto(url: str, timeout: float) -> TokenSource:
    """The email as moto's SES kept it (its /moto-api/data.json). The email leaves through the
    outbox, so it arrives once the stream poller has handed it to the notifier: wait for it."""

    def source(email: str) -> str:
        sent: list = []
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"{url.rstrip('/')}/moto-api/data.json", timeout=10) as resp:
                data = json.load(resp)
            sent = [m for m in data.get("ses", {}).get("Message", []) if email in m["destinations"]["ToAddresses"]]
            if sent or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if len(sent) != 1 or TOKEN_MARKER not in sent[0]["body"]:
            raise fail(f"expected one verification email to {email}, moto has {sent}")
        return token_in(sent[0]["body"]) or ""

    return source


def from_command(command: str, timeout: float) -> TokenSource:
    """Runs `command` (a shell command, with the address in SMOKE_EMAIL) until it prints the
    token, or a link or email holding it."""

    def source(email: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(command, shell=True, capture_output=True, text=True,
                                 env={**os.environ, "SMOKE_EMAIL": email})
            token = token_in(out.stdout) if out.returncode == 0 else None
            if token:
                return token
            if time.monotonic() > deadline:
                raise fail(f"`{command}` printed no token for {email} within {timeout:.0f}s "
                           f"(exit {out.returncode}: {out.stderr.strip()[-300:]})")
            time.sleep(2)

    return source


def from_prompt(email: str) -> str:
    print(f"Open the verification email sent to {email} and paste its link (or the token): ",
          end="", file=sys.stderr, flush=True)
    token = token_in(sys.stdin.readline())
    if not token:
        raise fail("no token given")
    return token


def token_source(spec: str, timeout: float) -> TokenSource:
    kind, _, rest = spec.partition(":")
    if kind == "moto" and rest:
        return from_moto(rest, timeout)
    if kind == "command" and rest:
        return from_command(rest, timeout)
    if kind == "prompt" and not rest:
        return from_prompt
    raise SystemExit(f"smoke: --verify-token-from {spec!r}: expected moto:<url>, command:<shell command> or prompt")


@dataclass
class Target:
    """The stack under test."""

    api_url: str
    verification_token: TokenSource
    # An address pattern: {tag} names the account's role in the flow, {random} makes it new.
    email: str = "smoke-{tag}-{random}@example.com"
    webhook_url: str | None = None
    # The platform endpoint's signing secret, and the Connect endpoint's (connected
    # accounts' events, which carry `account`).
    webhook_secret: str | None = None
    connect_webhook_secret: str | None = None
    # Where the payer pays, as Stripe.js does: Stripe's API (or the local stand-in) with a
    # publishable key.
    stripe_api_base: str = "https://api.stripe.com/"
    stripe_publishable_key: str | None = None


def new_address(target: Target, tag: str) -> str:
    return target.email.format(tag=tag, random=secrets.token_hex(6))


def signed_up(target: Target, tag: str) -> tuple[str, dict]:
    """Registers, verifies and logs in a new user: (email, the login's tokens)."""
    email = new_address(target, tag)
    status, answer = call(target.api_url, "POST", "/auth/register", {"email": email, "password": PASSWORD})
    if status != 202 or answer != {"status": "pending_verification"}:
        raise fail(f"register answered {status} {answer}")
    token = target.verification_token(email)
    status, answer = call(target.api_url, "POST", "/auth/verify-email", {"token": token})
    if status != 200:
        raise fail(f"verify-email answered {status} {answer}")
    status, tokens = call(target.api_url, "POST", "/auth/login", {"email": email, "password": PASSWORD})
    if status != 200 or not tokens.get("access_token"):
        raise fail(f"login answered {status} {tokens}")
    return email, tokens


def signed_event(secret: str, kind: str, obj: dict, account: str | None = None) -> tuple[bytes, str]:
    """A Stripe event signed as Stripe signs it: (body, Stripe-Signature). A connected
    account's event carries `account`."""
    stamp = int(time.time())
    event = {"id": f"evt_smoke{secrets.token_hex(8)}", "object": "event", "created": stamp,
             "type": kind, "data": {"object": obj}}
    if account:
        event["account"] = account
    body = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={stamp},v1={signature}"


def confirm_with_test_card(target: Target, payment: dict) -> dict:
    """The payer pays as Stripe.js confirms a PaymentIntent: its `client_secret`, the
    publishable key and Stripe's test card `pm_card_visa`. Returns the PaymentIntent."""
    form = urllib.parse.urlencode({"payment_method": "pm_card_visa", "client_secret": payment["client_secret"]})
    url = f"{target.stripe_api_base.rstrip('/')}/v1/payment_intents/{payment['stripe_payment_intent_id']}/confirm"
    req = urllib.request.Request(url, data=form.encode(), method="POST",
                                 headers={"authorization": f"Bearer {target.stripe_publishable_key or ''}",
                                          "content-type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            intent = _json(resp.read())
    except urllib.error.HTTPError as error:
        raise fail(f"confirming the PaymentIntent answered {error.code} {_json(error.read())}") from None
    if intent.get("status") != "succeeded" or not intent.get("latest_charge"):
        raise fail(f"the confirmed PaymentIntent is {intent}")
    return intent


def onboard_at_stripe(target: Target, account: str) -> dict:
    """The stand-in's stand-in for Stripe's hosted onboarding: the account as it is after."""
    url = f"{target.stripe_api_base.rstrip('/')}/v1/test_helpers/accounts/{account}/onboard"
    req = urllib.request.Request(url, data=b"", method="POST",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return _json(resp.read())
    except urllib.error.HTTPError as error:
        raise fail(f"onboarding at the stand-in answered {error.code} {_json(error.read())}") from None


def deliver(target: Target, kind: str, obj: dict) -> dict:
    """One signed event to the webhook's `/stripe/webhook`: its JSON answer. An account's
    own event comes from the Connect endpoint, with its secret; any other from the platform's."""
    if kind.startswith("account."):
        body, signature = signed_event(target.connect_webhook_secret or "", kind, obj, account=obj["id"])
    else:
        body, signature = signed_event(target.webhook_secret or "", kind, obj)
    hook = urllib.request.Request(f"{(target.webhook_url or '').rstrip('/')}/stripe/webhook", data=body,
                                  method="POST",
                                  headers={"content-type": "application/json", "stripe-signature": signature})
    try:
        with urllib.request.urlopen(hook, timeout=120) as resp:
            return _json(resp.read())
    except urllib.error.HTTPError as error:
        raise fail(f"webhook answered {error.code} {_json(error.read())} to {kind}") from None


def account(target: Target) -> tuple[str, dict]:
    """Register, verify, log in, /auth/me."""
    email, tokens = signed_up(target, "provider")
    status, me = call(target.api_url, "GET", "/auth/me", token=tokens["access_token"])
    if status != 200 or me.get("email") != email or not me.get("email_verified"):
        raise fail(f"/auth/me answered {status} {me}")
    log(f"register, verify, login and /auth/me work for {email}")
    return email, tokens


def payments(target: Target, tokens: dict) -> None:
    """A provider onboarded by a signed webhook, and a payment paid, partly refunded and released."""
    api = target.api_url
    status, provider = call(api, "POST", "/providers", {}, token=tokens["access_token"])
    if status != 201 or not provider.get("stripe_account_id", "").startswith("acct_"):
        raise fail(f"POST /providers answered {status} {provider}")
    # The provider finishes onboarding at Stripe (at the stand-in, its test helper; at Stripe
    # in test mode, the hosted flow with test data), and the signed account.updated through
    # the webhook's function URL tells us.
    account = onboard_at_stripe(target, provider["stripe_account_id"])
    answer = deliver(target, "account.updated", account)
    _, onboarded = call(api, "GET", f"/providers/{provider['provider_id']}", token=tokens["access_token"])
    if answer != {"received": True} or not onboarded.get("payouts_enabled"):
        raise fail(f"webhook answered {answer}; provider is {onboarded}")

    _, payer = signed_up(target, "payer")
    status, payment = call(api, "POST", "/payments",
                           {"amount": 2500, "currency": "usd", "provider_id": provider["provider_id"]},
                           token=payer["access_token"], headers={"idempotency-key": secrets.token_hex(8)})
    if status != 201:
        raise fail(f"POST /payments answered {status} {payment}")
    # The payer pays at Stripe; the release later checks Stripe's PaymentIntent and charge.
    deliver(target, "payment_intent.succeeded", confirm_with_test_card(target, payment))
    pid = payment["payment_id"]
    # A partial refund names its key; its retry (a lost answer, say) replays, refunding once.
    refund_key = secrets.token_hex(8)
    for attempt in ("first", "retry"):
        status, refunded = call(api, "POST", f"/payments/{pid}/refund", {"amount": 500},
                                token=payer["access_token"], headers={"idempotency-key": refund_key})
        if status != 200 or refunded != {"payment_id": pid, "status": "succeeded", "amount_refunded": 500}:
            raise fail(f"partial refund ({attempt}) answered {status} {refunded}")
    status, released = call(api, "POST", f"/payments/{pid}/release", token=payer["access_token"])
    if status != 200 or released.get("status") != "released" or not released.get("transfer_id"):
        raise fail(f"release answered {status} {released}")
    log("a provider onboarded by a signed webhook, and a payment paid, partly refunded and released")


def run(target: Target, with_payments: bool = False) -> None:
    _, tokens = account(target)
    if with_payments:
        payments(target, tokens)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-url", default=os.environ.get("API_URL"),
                   help="the API's base URL (default: $API_URL, as .local/stack.env sets it)")
    p.add_argument("--verify-token-from", required=True, metavar="SOURCE",
                   help="moto:<url>, command:<shell command> or prompt (see above)")
    p.add_argument("--email", default=Target.email,
                   help="address pattern for the new accounts; {tag} and {random} are filled in "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for a verification email")
    p.add_argument("--payments", action="store_true",
                   help="also onboard a provider and take a payment through refund and release")
    p.add_argument("--webhook-url", default=os.environ.get("WEBHOOK_URL"),
                   help="the webhook function's base URL, for --payments (default: $WEBHOOK_URL)")
    p.add_argument("--webhook-secret-env", default="STRIPE_WEBHOOK_SECRET", metavar="VAR",
                   help="environment variable holding the platform endpoint's signing secret, for "
                        "--payments (default: %(default)s)")
    p.add_argument("--stripe-api-base", default=os.environ.get("STRIPE_API_BASE", "https://api.stripe.com/"),
                   help="where the payer confirms the payment with a test card, for --payments (default: "
                        "$STRIPE_API_BASE, else Stripe's API)")
    p.add_argument("--stripe-publishable-key-env", default="STRIPE_PUBLISHABLE_KEY", metavar="VAR",
                   help="environment variable holding the publishable key the payer confirms with, for "
                        "--payments (default: %(default)s; pk_test_... against Stripe)")
    p.add_argument("--connect-webhook-secret-env", default="STRIPE_CONNECT_WEBHOOK_SECRET", metavar="VAR",
                   help="environment variable holding the Connect endpoint's signing secret, for "
                        "--payments (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.api_url:
        raise SystemExit("smoke: no --api-url (and no API_URL in the environment)")
    target = Target(api_url=args.api_url, verification_token=token_source(args.verify_token_from, args.timeout),
                    email=args.email, webhook_url=args.webhook_url,
                    webhook_secret=os.environ.get(args.webhook_secret_env),
                    connect_webhook_secret=os.environ.get(args.connect_webhook_secret_env),
                    stripe_api_base=args.stripe_api_base,
                    stripe_publishable_key=os.environ.get(args.stripe_publishable_key_env))
    if args.payments and not (target.webhook_url and target.webhook_secret and target.connect_webhook_secret):
        raise SystemExit(f"smoke: --payments needs --webhook-url and the secrets in ${args.webhook_secret_env} "
                         f"and ${args.connect_webhook_secret_env}")
    run(target, with_payments=args.payments)
    log(f"passed against {target.api_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
