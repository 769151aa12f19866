//! The sandbox is as strict as Cloudflare's API, by raw HTTP: no psk
//! client in between, so its own rules are what is tested.

use crate::common::*;
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
            .bearer_auth("t");
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req)
    }

    fn last_generated_on(&self, tunnel: &str) -> String {
        let (s, v) = self.send(
            self.http
                .get(self.url(&format!("/{tunnel}")))
                .bearer_auth("t"),
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
        http: reqwest::Client::new(),
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

#[test]
fn psk_generate_needs_a_json_body() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let t = tunnel_id(0);
    let (s, v) = a.generate(&t, "", None);
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["success"], false);
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("JSON body is required"));
    let raw = a.send(
        a.http
            .post(a.url(&format!("/{t}/psk_generate")))
            .bearer_auth("t")
            .body("not json"),
    );
    assert_eq!(raw.0, 400);
    assert!(env.ledger().is_empty());
}

#[test]
fn unknown_tunnels_get_the_404_envelope() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let unknown = "0123456789abcdef0123456789abcdef";
    for (s, v) in [
        a.generate(unknown, "", Some(json!({}))),
        a.send(a.http.get(a.url(&format!("/{unknown}"))).bearer_auth("t")),
    ] {
        assert_eq!(s, 404, "{v}");
        assert_eq!(
            v,
            json!({"success": false, "errors": [{"code": 1003, "message": "IPsec tunnel not found"}],
                   "messages": [], "result": null})
        );
    }
}

#[test]
fn credentials_are_required_and_either_scheme_works() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let a = api(&env);
    let (s, v) = a.send(a.http.get(a.url("")));
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["errors"][0]["code"], 10000);
    let (s, _) = a.send(
        a.http
            .get(a.url(""))
            .header("X-Auth-Email", "ops@example.com"),
    );
    assert_eq!(s, 401, "an email without a key is not enough");
    let (s, _) = a.send(
        a.http
            .get(a.url(""))
            .header("X-Auth-Email", "ops@example.com")
            .header("X-Auth-Key", "k"),
    );
    assert_eq!(s, 200);
    let (s, _) = a.send(a.http.get(a.url("")).bearer_auth("t"));
    assert_eq!(s, 200);
    assert_eq!(
        env.sandbox()
            .counters
            .unauthorized
            .load(std::sync::atomic::Ordering::Relaxed),
        2
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
        let (s, v) = a.send(a.http.post(a.url("/psk")).bearer_auth("t").json(&body));
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["success"], false);
    }
    assert!(env.ledger().is_empty());
}
