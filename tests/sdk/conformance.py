"""The sandbox, driven by Cloudflare's official Python SDK.

psk's own client and the sandbox were written together, so they could share
a misreading of the API. This script uses a client nobody here wrote: it
starts `psk sandbox` on a loopback port and calls every operation the
sandbox serves through the `cloudflare` package (the version pinned in
requirements.txt), asserting on what the SDK returns (its typed models, its
typed errors) and on the sandbox's ledger (the PSKs that really became
valid), not only on status codes.

Usage: python conformance.py PATH/TO/psk
Run by tests/sdk/run.sh (which makes the virtual environment), .ci/run, and
`cargo test --test it sdk_conformance -- --ignored`.
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback
from datetime import datetime, timedelta, timezone

import cloudflare
import httpx
from cloudflare import Cloudflare

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER_ACCOUNT = "99999999999999999999999999999999"
TUNNELS = {
    "fra-primary": "0123456789abcdef0123456789abcdef",
    "fra-secondary": "0123456789abcdef0123456789abcd01",
    # The sandbox refuses real changes of this one (--refuse-changes).
    "ams-busy": "0123456789abcdef0123456789abcd02",
}
UNKNOWN = "fedcba9876543210fedcba9876543210"
# The public half of examples/quickstart/demo-identity.txt: psk.yaml needs a
# recipient, and the sandbox never seals anything.
RECIPIENT = "age1hulcwrj8drla6mh0v9udwl0q98pgp45sn8l8c6483wg2ktqld38qershhj"


def config_text():
    lines = [
        "version: 1",
        f"account_id: {ACCOUNT}",
        "recipients:",
        f"  - {RECIPIENT}",
        "policies:",
        "  default:",
        "    rotate_every: 90d",
        "tunnels:",
    ]
    for name, tunnel_id in TUNNELS.items():
        lines += [f"  - name: {name}", f"    id: {tunnel_id}", f"    site: {name[:3]}"]
    return "\n".join(lines) + "\n"


class Sandbox:
    """`psk sandbox` on 127.0.0.1:0, with what it printed and its ledger."""

    def __init__(self, psk, workdir):
        with open(os.path.join(workdir, "psk.yaml"), "w") as f:
            f.write(config_text())
        self.ledger_path = os.path.join(workdir, "ledger.jsonl")
        self.process = subprocess.Popen(
            [
                psk,
                "sandbox",
                "--listen",
                "127.0.0.1:0",
                "--ledger",
                self.ledger_path,
                "--refuse-changes",
                TUNNELS["ams-busy"],
            ],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.printed = {}
        for line in self.process.stdout:
            line = line.strip()
            for word in line.lstrip("# ").split(" "):
                if "=" in word and word.startswith("CLOUDFLARE_"):
                    key, value = word.split("=", 1)
                    self.printed[key] = value
            if line.startswith("Press Ctrl-C"):
                break
        else:
            raise RuntimeError(
                "psk sandbox stopped early: " + self.process.stderr.read()
            )
        for key in ("CLOUDFLARE_BASE_URL", "CLOUDFLARE_API_TOKEN",
                    "CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"):
            assert key in self.printed, f"psk sandbox did not print {key}: {self.printed}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)

    def ledger(self, tunnel_id):
        """The PSKs that became valid for a tunnel, oldest first."""
        if not os.path.exists(self.ledger_path):
            return []
        with open(self.ledger_path) as f:
            entries = [json.loads(line) for line in f if line.strip()]
        return [e["psk"] for e in entries if e["tunnel_id"] == tunnel_id]

    def client(self, counter=None, **credentials):
        """An SDK client for the sandbox: its printed token unless told
        otherwise. `counter`, a list, gets one entry per HTTP request."""
        if not credentials:
            credentials = {"api_token": self.printed["CLOUDFLARE_API_TOKEN"]}
        hooks = {"request": [lambda request: counter.append(request.url)]} if counter is not None else {}
        return Cloudflare(
            base_url=self.printed["CLOUDFLARE_BASE_URL"],
            # Loopback only: no proxy from the environment in between.
            http_client=httpx.Client(event_hooks=hooks, trust_env=False),
            **credentials,
        )


def expect_error(kind, call, status, code, chained=None):
    """`call` raises the SDK's `kind` with Cloudflare's envelope."""
    try:
        call()
    except kind as e:
        assert e.status_code == status, (e.status_code, e.body)
        body = e.response.json()
        assert body["success"] is False and body["result"] is None, body
        error = body["errors"][0]
        assert error["code"] == code, body
        assert isinstance(error["message"], str) and error["message"], body
        if chained is not None:
            assert error["error_chain"][0]["code"] == chained, body
        return error["message"]
    raise AssertionError(f"expected {kind.__name__}")


def check_list_and_get(sb):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    listed = tunnels.list(account_id=ACCOUNT).ipsec_tunnels
    assert {t.name: t.id for t in listed} == TUNNELS, listed
    for t in listed:
        assert isinstance(t, cloudflare.types.magic_transit.ipsec_tunnel_list_response.IPSECTunnel)
        assert isinstance(t.created_on, datetime) and t.created_on.tzinfo, t
        assert isinstance(t.psk_metadata.last_generated_on, datetime), t
        assert t.cloudflare_endpoint and t.interface_address.endswith("/31"), t
        got = tunnels.get(t.id, account_id=ACCOUNT).ipsec_tunnel
        assert got.id == t.id and got.name == t.name, got
        assert got.psk_metadata.last_generated_on == t.psk_metadata.last_generated_on


# The tunnel health query as Cloudflare's Magic Transit guide writes it
# (not psk's own text): per tunnel and data center, the average state.
HEALTH_QUERY = """
query GetTunnelHealthCheckResults($accountTag: string, $datetimeStart: Time, $datetimeEnd: Time) {
  viewer {
    accounts(filter: {accountTag: $accountTag}) {
      magicTransitTunnelHealthChecksAdaptiveGroups(
        limit: 100,
        filter: {datetime_geq: $datetimeStart, datetime_lt: $datetimeEnd}
      ) {
        avg { tunnelState }
        dimensions { tunnelName edgeColoName }
      }
    }
  }
}
"""


def health(sb, account):
    """The SDK's generic POST to /graphql (it has no typed method for
    GraphQL), over the last five minutes."""
    end = datetime.now(timezone.utc).replace(microsecond=0)
    start = end - timedelta(minutes=5)
    return sb.client().post(
        "/graphql",
        cast_to=object,
        body={
            "query": HEALTH_QUERY,
            "variables": {
                "accountTag": account,
                "datetimeStart": start.isoformat().replace("+00:00", "Z"),
                "datetimeEnd": end.isoformat().replace("+00:00", "Z"),
            },
        },
    )


def check_health_graphql(sb):
    # Before any rotation every far end holds its tunnel's key: healthy in
    # every data center that reports.
    answer = health(sb, ACCOUNT)
    assert not answer.get("errors"), answer
    groups = answer["data"]["viewer"]["accounts"][0]["magicTransitTunnelHealthChecksAdaptiveGroups"]
    seen = {}
    for g in groups:
        name = g["dimensions"]["tunnelName"]
        assert g["dimensions"]["edgeColoName"], g
        assert g["avg"]["tunnelState"] in (0, 0.5, 1), g
        seen.setdefault(name, []).append(g["avg"]["tunnelState"])
    assert set(seen) == set(TUNNELS), seen
    assert all(state == 1 for states in seen.values() for state in states), seen
    # An account the credentials cannot use: a GraphQL error, no data.
    refused = health(sb, OTHER_ACCOUNT)
    assert refused.get("errors") and not refused.get("data"), refused


def generated_on(sb, tunnel_id):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    return tunnels.get(tunnel_id, account_id=ACCOUNT).ipsec_tunnel.psk_metadata.last_generated_on


def check_psk_generate(sb):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    t = TUNNELS["fra-primary"]
    before = generated_on(sb, t)
    # The SDK's psk_generate sends no body at all.
    r = tunnels.psk_generate(t, account_id=ACCOUNT)
    assert r.ipsec_tunnel_id == t, r
    assert r.psk and sb.ledger(t)[-1] == r.psk, "the returned PSK is the one now valid"
    assert r.psk_metadata.last_generated_on > before, (r, before)
    assert generated_on(sb, t) == r.psk_metadata.last_generated_on
    # With the `{}` body older SDKs and the API page send: a new key again.
    again = tunnels.psk_generate(t, account_id=ACCOUNT, extra_body={})
    assert again.psk != r.psk and sb.ledger(t)[-1] == again.psk
    assert again.psk_metadata.last_generated_on > r.psk_metadata.last_generated_on


def check_psk_generate_validate_only(sb):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    t = TUNNELS["fra-secondary"]
    before, keys = generated_on(sb, t), sb.ledger(t)
    for body in ({}, None):
        extra = {"extra_body": body} if body is not None else {}
        r = tunnels.psk_generate(
            t, account_id=ACCOUNT, extra_query={"validate_only": True}, **extra
        )
        assert r.ipsec_tunnel_id == t and r.psk is None, r
        assert r.psk_metadata.last_generated_on == before, r
    assert generated_on(sb, t) == before and sb.ledger(t) == keys, "a dry run changes nothing"


def check_psk_set(sb):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    t = TUNNELS["fra-secondary"]
    before, keys = generated_on(sb, t), sb.ledger(t)
    psk = "sdk-conformance-" + "x" * 24
    entries = [{"id": t, "psk": psk}, {"id": UNKNOWN, "psk": psk}]
    dry = tunnels.psk_set(account_id=ACCOUNT, psks=entries, validate_only=True)
    assert set(dry.successfully_applied_psks) == {t}, dry
    assert dry.successfully_applied_psks[t].psk_metadata.last_generated_on == before
    assert set(dry.unapplied_psks) == {UNKNOWN} and dry.unapplied_psks[UNKNOWN], dry
    assert generated_on(sb, t) == before and sb.ledger(t) == keys, "a dry run changes nothing"

    real = tunnels.psk_set(account_id=ACCOUNT, psks=entries)
    applied = real.successfully_applied_psks[t]
    assert applied.ipsec_tunnel_id == t and applied.psk == psk and applied.ipsec_id, applied
    assert applied.psk_metadata.last_generated_on > before, applied
    assert set(real.unapplied_psks) == {UNKNOWN}, real
    assert sb.ledger(t)[-1] == psk and generated_on(sb, t) == applied.psk_metadata.last_generated_on

    # A PSK the API refuses is reported for its tunnel, and nothing changes.
    short = tunnels.psk_set(account_id=ACCOUNT, psks=[{"id": t, "psk": "short"}])
    assert not short.successfully_applied_psks and short.unapplied_psks[t], short
    assert sb.ledger(t)[-1] == psk


def check_refused_changes(sb):
    """A tunnel being modified: psk_generate is a 409 the SDK must not
    retry (`x-should-retry: false`), and the bulk set lists it unapplied."""
    t = TUNNELS["ams-busy"]
    sent = []
    tunnels = sb.client(counter=sent).magic_transit.ipsec_tunnels
    expect_error(cloudflare.ConflictError, lambda: tunnels.psk_generate(t, account_id=ACCOUNT), 409, 1010)
    assert len(sent) == 1, f"the SDK retried a 409 marked x-should-retry: false: {sent}"
    r = tunnels.psk_set(account_id=ACCOUNT, psks=[{"id": t, "psk": "x" * 32}])
    assert not r.successfully_applied_psks and r.unapplied_psks[t], r
    # A dry run still passes: validation is not what refuses it.
    dry = tunnels.psk_generate(t, account_id=ACCOUNT, extra_query={"validate_only": True})
    assert dry.ipsec_tunnel_id == t and dry.psk is None
    assert sb.ledger(t) == []


def check_not_found(sb):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    for call in (
        lambda: tunnels.get(UNKNOWN, account_id=ACCOUNT),
        lambda: tunnels.psk_generate(UNKNOWN, account_id=ACCOUNT),
    ):
        expect_error(cloudflare.NotFoundError, call, 404, 1003)
    assert sb.ledger(UNKNOWN) == []


def check_credentials(sb):
    ok = sb.client(
        api_email=sb.printed["CLOUDFLARE_EMAIL"], api_key=sb.printed["CLOUDFLARE_API_KEY"]
    ).magic_transit.ipsec_tunnels
    assert len(ok.list(account_id=ACCOUNT).ipsec_tunnels) == len(TUNNELS)

    def listing(**credentials):
        return lambda: sb.client(**credentials).magic_transit.ipsec_tunnels.list(account_id=ACCOUNT)

    # Cloudflare answers an unknown credential with 403, so the SDK raises
    # PermissionDeniedError (not AuthenticationError, its 401).
    msg = expect_error(cloudflare.PermissionDeniedError, listing(api_token="wrong-token"), 403, 10000)
    assert msg == "Authentication error", msg
    expect_error(
        cloudflare.PermissionDeniedError,
        listing(api_email="ops@example.com", api_key=sb.printed["CLOUDFLARE_API_KEY"]),
        403, 9103,
    )
    expect_error(cloudflare.BadRequestError, listing(api_token="not a token"), 400, 6003, chained=6111)
    expect_error(
        cloudflare.BadRequestError,
        listing(api_email=sb.printed["CLOUDFLARE_EMAIL"], api_key="not-a-key"),
        400, 6003, chained=6103,
    )
    # No credentials at all: the SDK will not send such a request itself.
    with httpx.Client(trust_env=False) as raw:
        r = raw.get(sb.printed["CLOUDFLARE_BASE_URL"] + f"/accounts/{ACCOUNT}/magic/ipsec_tunnels")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 9106, r.text
    # The right token for an account it cannot use.
    tunnels = sb.client().magic_transit.ipsec_tunnels
    expect_error(
        cloudflare.PermissionDeniedError, lambda: tunnels.list(account_id=OTHER_ACCOUNT), 403, 9109
    )


def check_bad_requests(sb):
    tunnels = sb.client().magic_transit.ipsec_tunnels
    t = TUNNELS["fra-primary"]
    keys = sb.ledger(t)
    expect_error(cloudflare.BadRequestError, lambda: tunnels.psk_set(account_id=ACCOUNT, psks=[]), 400, 1001)
    expect_error(
        cloudflare.BadRequestError,
        lambda: tunnels.psk_generate(t, account_id=ACCOUNT, extra_query={"validate_only": "maybe"}),
        400, 1001,
    )
    assert sb.ledger(t) == keys


CHECKS = [
    check_list_and_get,
    check_health_graphql,
    check_psk_generate,
    check_psk_generate_validate_only,
    check_psk_set,
    check_refused_changes,
    check_not_found,
    check_credentials,
    check_bad_requests,
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    psk = os.path.abspath(sys.argv[1])
    failed = 0
    with tempfile.TemporaryDirectory() as workdir:
        sb = Sandbox(psk, workdir)
        try:
            for check in CHECKS:
                try:
                    check(sb)
                    print(f"ok   {check.__name__}")
                except Exception:
                    failed += 1
                    print(f"FAIL {check.__name__}")
                    traceback.print_exc()
        finally:
            sb.stop()
    print(f"cloudflare {cloudflare.__version__} against psk sandbox: "
          f"{len(CHECKS) - failed} of {len(CHECKS)} checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
