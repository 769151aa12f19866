//! The sandbox is as strict as Cloudflare's API, by raw HTTP: no psk
//! client in between, so its own rules are what is tested.

use crate::common::*;
use psk::sandbox::SandboxCredentials;
use serde_json::{json, Value};

struct Api<'a> {
    env: &'a TestEnv,
    http: reqwest::Client,
}

impl Api<'_> {
    fn url(&self, tail: &str) -> String {
        format!(
            "{}/accounts/{ACCOUNT}/magic/ipsec_tunnels{tail}",
            self.env.base_url()
        )
    }

    fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        self.env.block_on(async {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap())
        })
    }

    fn generate(&self, tunnel: &str, query: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(&format!("/{tunnel}/psk_generate{query}")))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req)
    }

    fn last_generated_on(&self, tunnel: &str) -> String {
        let (s, v) = self.send(
            self.http
                .get(self.url(&format!("/{tunnel}")))
                .bearer_auth(TOKEN),
        );
        assert_eq!(s, 200, "{v}");
        v["result"]["ipsec_tunnel"]["psk_metadata"]["last_generated_on"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn api(env: &TestEnv) -> Api<'_> {
    Api {
        env,
        http: psk::tls::client(),
    }
}

#[test]
fn last_generated_on_moves_on_every_generation_and_never_on_validate_only() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let t = tunnel_id(0);
    let start = a.last_generated_on(&t);

    let (s, v) = a.generate(&t, "?validate_only=true", Some(json!({})));
    assert_eq!(s, 200, "{v}");
    assert!(
        v["result"]["psk"].is_null(),
        "a dry run returns no key: {v}"
    );
    assert_eq!(a.last_generated_on(&t), start);

    let mut dates = vec![start];
    for _ in 0..3 {
        let (s, v) = a.generate(&t, "", Some(json!({})));
        assert_eq!(s, 200, "{v}");
        let at = v["result"]["psk_metadata"]["last_generated_on"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(a.last_generated_on(&t), at);
        dates.push(at);
    }
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        dates.iter().map(|d| d.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] < w[1]), "{dates:?}");
    assert_eq!(env.ledger()[&t].len(), 3);

    let (s, _) = a.generate(&t, "?validate_only=false", Some(json!({})));
    assert_eq!(s, 200);
    assert_eq!(
        env.ledger()[&t].len(),
        4,
        "validate_only=false is a real run"
    );
}

/// Cloudflare's Python SDK sends no body, psk and the API page send `{}`:
/// both generate. A body that is not JSON is refused.
#[test]
fn psk_generate_takes_no_body_or_a_json_one() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let t = tunnel_id(0);
    for (query, expected_keys) in [("", 1), ("?validate_only=true", 1)] {
        let (s, v) = a.generate(&t, query, None);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["result"]["ipsec_tunnel_id"], t.as_str(), "{v}");
        assert_eq!(env.ledger()[&t].len(), expected_keys);
    }
    let (s, v) = a.generate(&t, "", Some(json!({})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(env.ledger()[&t].len(), 2);
    for body in ["not json", " ", "{"] {
        let (s, v) = a.send(
            a.http
                .post(a.url(&format!("/{t}/psk_generate")))
                .bearer_auth(TOKEN)
                .body(body),
        );
        assert_eq!(s, 400, "{body:?}: {v}");
        assert_eq!(v["errors"][0]["code"], 1001, "{v}");
        assert!(v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid request body"));
    }
    assert_eq!(env.ledger()[&t].len(), 2, "a refused body changes nothing");
}

#[test]
fn unknown_tunnels_get_the_404_envelope() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let unknown = "0123456789abcdef0123456789abcdef";
    for (s, v) in [
        a.generate(unknown, "", Some(json!({}))),
        a.send(a.http.get(a.url(&format!("/{unknown}"))).bearer_auth(TOKEN)),
    ] {
        assert_eq!(s, 404, "{v}");
        assert_eq!(
            v,
            json!({"success": false, "errors": [{"code": 1003, "message": "IPsec tunnel not found"}],
                   "messages": [], "result": null})
        );
    }
}

/// Only the sandbox's own credentials pass; the others are refused with
/// Cloudflare's status, code and message (the whole table is a unit test
/// in `sandbox::auth`).
#[test]
fn only_its_own_credentials_pass_and_others_get_cloudflares_answers() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let key = SandboxCredentials::default();
    let list = || a.http.get(a.url(""));
    let refusals = [
        (list(), 400, 9106, None),
        (list().bearer_auth("wrong-token"), 403, 10000, None),
        (list().header("Authorization", TOKEN), 400, 6003, Some(6111)),
        (
            list().header("X-Auth-Email", &key.email),
            400,
            6003,
            Some(6103),
        ),
        (
            list()
                .header("X-Auth-Email", "ops@example.com")
                .header("X-Auth-Key", &key.key),
            403,
            9103,
            None,
        ),
    ];
    let n = refusals.len();
    for (req, status, code, chained) in refusals {
        let (s, v) = a.send(req);
        assert_eq!(
            (s, v["errors"][0]["code"].as_i64()),
            (status, Some(code)),
            "{v}"
        );
        assert_eq!(v["success"], false, "{v}");
        assert!(v["result"].is_null(), "{v}");
        assert_eq!(
            v["errors"][0]["error_chain"][0]["code"].as_i64(),
            chained,
            "{v}"
        );
    }
    let (s, v) = a.send(
        list()
            .header("X-Auth-Email", &key.email)
            .header("X-Auth-Key", &key.key),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = a.send(list().bearer_auth(TOKEN));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        env.sandbox()
            .counters
            .unauthorized
            .load(std::sync::atomic::Ordering::Relaxed),
        n as u64
    );
}

#[test]
fn bulk_set_rejects_malformed_bodies() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let t = tunnel_id(0);
    for body in [
        json!({}),
        json!({"psks": []}),
        json!({"psks": [{"id": t}]}),
        json!({"psks": [{"id": t, "psk": "aaaaaaaaaa"}, {"id": t.to_uppercase(), "psk": "bbbbbbbbbb"}]}),
    ] {
        let (s, v) = a.send(a.http.post(a.url("/psk")).bearer_auth(TOKEN).json(&body));
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["success"], false);
    }
    assert!(env.ledger().is_empty());
}
