//! Contract tests: every request psk's client sends and every response the
//! sandbox returns is checked against Cloudflare's own schema, the OpenAPI
//! excerpt in `tests/contract/magic-ipsec-openapi.json` (a copy of
//! `shared/cloudflare/`, since CI has only the repository).
//!
//! A checking proxy on 127.0.0.1 sits between psk and the sandbox. For each
//! request it finds the operation (method and path template), checks path
//! parameters, query parameters, credentials (one of the operation's
//! security alternatives) and the JSON body; it forwards the request, then
//! checks the answer against the operation's response schema, plus the
//! fields psk itself reads. Unknown fields are tolerated, as the schema
//! does (no `additionalProperties: false`).
//!
//! Two readings of the excerpt, made explicit here: OpenAPI 3.0's
//! `nullable: true` becomes a JSON Schema `"null"` type; and the `4XX`
//! schemas of list and `psk_generate`, an `allOf` of the success and the
//! failure envelope, can be met by no document (`success` would have to be
//! both `true` and `false`), so every 4xx and 5xx answer is checked against
//! the failure envelope, `magic_api-response-common-failure`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::common::script::{self, success, Step};
use crate::common::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use psk::cloudflare::{Client, ClientOptions, Credentials, PskEntry, RetryPolicy};
use psk::seal::Psk;
use serde_json::{json, Value};

const SPEC: &str = include_str!("../contract/magic-ipsec-openapi.json");

/// Path parameters by name, as found in a request path.
type Params = Vec<(String, String)>;

/// The spec, as JSON Schema can read it.
struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Spec {
        let mut doc: Value = serde_json::from_str(SPEC).unwrap();
        nullable_to_null_type(&mut doc);
        Spec { doc }
    }

    /// Problems of `instance` against `schema` (which may `$ref` into the
    /// spec's components).
    fn check(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.clone();
        if let Value::Object(m) = &mut root {
            m.insert("components".into(), self.doc["components"].clone());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .expect("the spec's schemas compile");
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn component(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// The operation for a method and a path below `/client/v4`, with its
    /// path parameters. Literal segments win over templates, so `.../psk`
    /// is the bulk set and not a tunnel called "psk".
    fn operation(&self, method: &Method, path: &str) -> Option<(String, Value, Params)> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(usize, String, Params)> = None;
        for template in self.doc["paths"].as_object().unwrap().keys() {
            let tsegs: Vec<&str> = template.trim_matches('/').split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut params = Vec::new();
            let mut literal = 0;
            let mut ok = true;
            for (t, s) in tsegs.iter().zip(&segs) {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.push((name.to_string(), s.to_string()));
                } else if t == s {
                    literal += 1;
                } else {
                    ok = false;
                    break;
                }
            }
            if ok && best.as_ref().is_none_or(|b| literal > b.0) {
                best = Some((literal, template.clone(), params));
            }
        }
        let (_, template, params) = best?;
        let op = self.doc["paths"][&template][method.as_str().to_ascii_lowercase()].clone();
        (!op.is_null()).then_some((template, op, params))
    }
}

/// OpenAPI 3.0 `nullable: true` as JSON Schema: `type` also allows null.
fn nullable_to_null_type(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type").cloned() {
                    m.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = m.get_mut("enum") {
                    if !e.contains(&Value::Null) {
                        e.push(Value::Null);
                    }
                }
            }
            for child in m.values_mut() {
                nullable_to_null_type(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(nullable_to_null_type),
        _ => {}
    }
}

/// The fields psk reads from a successful answer, beyond what the spec
/// requires: without them psk cannot tell drift or keep a key.
fn psk_needs(operation_id: &str, validate_only: bool) -> Option<Value> {
    let meta = json!({"type": "object", "required": ["last_generated_on"],
        "properties": {"last_generated_on": {"type": "string", "format": "date-time"}}});
    let tunnel = json!({"type": "object", "required": ["id", "name", "psk_metadata"],
        "properties": {"psk_metadata": meta}});
    let result = match operation_id {
        "magic-ipsec-tunnels-list-ipsec-tunnels" => json!({"type": "object",
            "required": ["ipsec_tunnels"],
            "properties": {"ipsec_tunnels": {"type": "array", "items": tunnel}}}),
        "magic-ipsec-tunnels-list-ipsec-tunnel-details" => json!({"type": "object",
            "required": ["ipsec_tunnel"], "properties": {"ipsec_tunnel": tunnel}}),
        "magic-ipsec-tunnels-generate-pre-shared-key-(-psk)-for-ipsec-tunnels" if validate_only => {
            json!({"type": "object"})
        }
        "magic-ipsec-tunnels-generate-pre-shared-key-(-psk)-for-ipsec-tunnels" => json!({
            "type": "object", "required": ["psk", "psk_metadata"],
            "properties": {"psk": {"type": "string", "minLength": 1}, "psk_metadata": meta}}),
        "magic-ipsec-tunnels-set-pre-shared-keys-for-ipsec-tunnels" => json!({
            "type": "object", "required": ["successfully_applied_psks", "unapplied_psks"]}),
        _ => return None,
    };
    Some(json!({"type": "object", "required": ["result"], "properties": {"result": result}}))
}

/// One exchange the proxy saw, with what was wrong with it.
#[derive(Debug, Clone)]
struct Exchange {
    operation: String,
    status: u16,
    request_problems: Vec<String>,
    response_problems: Vec<String>,
}

struct Proxy {
    spec: Spec,
    upstream: String,
    http: reqwest::Client,
    seen: Mutex<Vec<Exchange>>,
}

impl Proxy {
    fn check_request(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (String, Vec<String>, bool) {
        let mut problems = Vec::new();
        let Some(path) = uri.path().strip_prefix("/client/v4") else {
            return (
                "?".into(),
                vec![format!("{} is not below /client/v4", uri.path())],
                false,
            );
        };
        let Some((template, op, params)) = self.spec.operation(method, path) else {
            return (
                "?".into(),
                vec![format!("no operation for {method} {path}")],
                false,
            );
        };
        let op_id = op["operationId"].as_str().unwrap().to_string();
        let declared: Vec<Value> = op["parameters"].as_array().cloned().unwrap_or_default();
        for (name, value) in &params {
            match declared
                .iter()
                .find(|p| p["name"] == *name && p["in"] == "path")
            {
                Some(p) => problems.extend(
                    self.spec
                        .check(&p["schema"], &json!(value))
                        .into_iter()
                        .map(|e| format!("path parameter {name}: {e}")),
                ),
                None => problems.push(format!("{template}: undeclared path parameter {name}")),
            }
        }
        // Query parameters: declared ones, or `validate_only`, which the
        // psk_generate operation documents in its description only.
        let mut validate_only = false;
        for pair in uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let declared_schema = declared
                .iter()
                .find(|p| p["name"] == name && p["in"] == "query")
                .map(|p| p["schema"].clone());
            let described = op["description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("?{name}=")));
            let schema = match (declared_schema, described) {
                (Some(s), _) => s,
                (None, true) => json!({"type": "boolean"}),
                (None, false) => {
                    problems.push(format!("undeclared query parameter {name}"));
                    continue;
                }
            };
            let typed: Value = serde_json::from_str(value).unwrap_or(json!(value));
            problems.extend(
                self.spec
                    .check(&schema, &typed)
                    .into_iter()
                    .map(|e| format!("query parameter {name}: {e}")),
            );
            if name == "validate_only" && value == "true" {
                validate_only = true;
            }
        }
        // Credentials: one of the operation's security alternatives.
        let has = |h: &str| headers.get(h).is_some_and(|v| !v.is_empty());
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
        let met = op["security"].as_array().unwrap().iter().any(|alt| {
            alt.as_object()
                .unwrap()
                .keys()
                .all(|scheme| match scheme.as_str() {
                    "api_token" => bearer,
                    "api_email" => has("x-auth-email"),
                    "api_key" => has("x-auth-key"),
                    _ => false,
                })
        });
        if !met {
            problems.push("no security alternative of the operation is met".into());
        }
        // The body.
        let rb = &op["requestBody"];
        if rb.is_null() {
            if !body.is_empty() {
                problems.push("a body on an operation that takes none".into());
            }
        } else {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if rb["required"] == true && body.is_empty() {
                problems.push("the required request body is missing".into());
            } else if !body.is_empty() {
                if !ct.starts_with("application/json") {
                    problems.push(format!("content-type `{ct}` is not application/json"));
                }
                match serde_json::from_slice::<Value>(body) {
                    Err(_) => problems.push("the request body is not JSON".into()),
                    Ok(v) => {
                        let schema = &rb["content"]["application/json"]["schema"];
                        if !schema.is_null() {
                            problems.extend(
                                self.spec
                                    .check(schema, &v)
                                    .into_iter()
                                    .map(|e| format!("request body: {e}")),
                            );
                        }
                    }
                }
            }
        }
        (op_id, problems, validate_only)
    }

    fn check_response(
        &self,
        method: &Method,
        uri: &Uri,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        validate_only: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/json") {
            problems.push(format!("content-type `{ct}` is not application/json"));
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return vec!["the response body is not JSON".into()];
        };
        let path = uri.path().strip_prefix("/client/v4").unwrap_or("");
        let schema = match self.spec.operation(method, path) {
            Some((_, op, _)) if (200..300).contains(&status) => {
                let s = op["responses"][status.to_string()]["content"]["application/json"]
                    ["schema"]
                    .clone();
                if s.is_null() {
                    problems.push(format!("HTTP {status} is not a documented answer"));
                    return problems;
                }
                if let Some(needs) = psk_needs(op["operationId"].as_str().unwrap(), validate_only) {
                    problems.extend(
                        self.spec
                            .check(&needs, &v)
                            .into_iter()
                            .map(|e| format!("a field psk needs: {e}")),
                    );
                }
                s
            }
            _ => Spec::component("magic_api-response-common-failure"),
        };
        if status == 429 && headers.get("retry-after").is_none() {
            problems.push("a 429 without retry-after".into());
        }
        problems.extend(self.spec.check(&schema, &v));
        problems
    }
}

async fn forward(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (operation, request_problems, validate_only) =
        p.check_request(&method, &uri, &headers, &body);
    let mut req = p.http.request(
        method.clone(),
        format!("{}{}", p.upstream, uri.path_and_query().unwrap()),
    );
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = resp.status().as_u16();
    let resp_headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let response_problems =
        p.check_response(&method, &uri, status, &resp_headers, &bytes, validate_only);
    p.seen.lock().unwrap().push(Exchange {
        operation,
        status,
        request_problems,
        response_problems,
    });
    let mut out = (StatusCode::from_u16(status).unwrap(), bytes.to_vec()).into_response();
    for (k, v) in &resp_headers {
        if k == "content-type" || k == "retry-after" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

struct Checked {
    env: TestEnv,
    proxy: Arc<Proxy>,
    base_url: String,
}

/// A TestEnv with the sandbox, and the checking proxy in front of it.
fn checked(tunnels: usize) -> Checked {
    let mut env = TestEnv::new(tunnels);
    env.start_sandbox();
    let proxy = Arc::new(Proxy {
        spec: Spec::load(),
        upstream: format!(
            "http://{}",
            env.base_url()
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
        ),
        http: psk::tls::client(),
        seen: Mutex::new(Vec::new()),
    });
    let p = proxy.clone();
    let addr = env.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(p);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    Checked {
        env,
        proxy,
        base_url: format!("http://{addr}/client/v4"),
    }
}

impl Checked {
    fn run(&self, args: &[&str]) -> Run {
        let out = self
            .env
            .command(args)
            .env("CLOUDFLARE_BASE_URL", &self.base_url)
            .output()
            .unwrap();
        to_run(out).with_args(args)
    }

    fn client(&self) -> Client {
        let options = ClientOptions {
            base_url: self.base_url.clone(),
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..ClientOptions::default()
        };
        Client::new(&Credentials::Token(TOKEN.into()), options).unwrap()
    }

    fn seen(&self) -> Vec<Exchange> {
        self.proxy.seen.lock().unwrap().clone()
    }

    fn assert_all_valid(&self) {
        for x in self.seen() {
            assert!(x.request_problems.is_empty(), "request: {x:#?}");
            assert!(x.response_problems.is_empty(), "response: {x:#?}");
        }
    }
}

const LIST: &str = "magic-ipsec-tunnels-list-ipsec-tunnels";
const GET: &str = "magic-ipsec-tunnels-list-ipsec-tunnel-details";
const GENERATE: &str = "magic-ipsec-tunnels-generate-pre-shared-key-(-psk)-for-ipsec-tunnels";
const BULK: &str = "magic-ipsec-tunnels-set-pre-shared-keys-for-ipsec-tunnels";

#[test]
fn the_binary_and_the_sandbox_keep_to_the_contract() {
    let c = checked(3);
    c.run(&["plan"]).success();
    c.run(&["apply", "--auto-approve"]).success();
    c.assert_all_valid();
    let ops: BTreeSet<(String, u16)> = c
        .seen()
        .into_iter()
        .map(|x| (x.operation, x.status))
        .collect();
    assert!(ops.contains(&(LIST.to_string(), 200)), "{ops:?}");
    assert!(ops.contains(&(GENERATE.to_string(), 200)), "{ops:?}");
    // Every real generation and every dry run went through the proxy.
    let generates = c.seen().iter().filter(|x| x.operation == GENERATE).count();
    assert_eq!(
        generates,
        3 + 3 + 3,
        "plan's dry runs, apply's dry runs, rotations"
    );
}

#[test]
fn every_client_call_keeps_to_the_contract() {
    let c = checked(3);
    let client = c.client();
    let (t0, t1) = (tunnel_id(0), tunnel_id(1));
    let unknown = "0123456789abcdef0123456789abcdef";
    c.env.block_on(async {
        assert_eq!(client.list_tunnels(ACCOUNT).await.unwrap().len(), 3);
        let one = client.get_tunnel(ACCOUNT, &t0).await.unwrap();
        assert_eq!(one.id, t0);
        assert!(client
            .psk_generate(ACCOUNT, &t0, true)
            .await
            .unwrap()
            .is_none());
        assert!(client
            .psk_generate(ACCOUNT, &t0, false)
            .await
            .unwrap()
            .is_some());
        // 404s, as the error envelope.
        assert!(client.get_tunnel(ACCOUNT, unknown).await.is_err());
        assert!(client.psk_generate(ACCOUNT, unknown, false).await.is_err());
        // 403 for an account the token cannot use.
        assert!(client
            .list_tunnels("ffffffffffffffffffffffffffffffff")
            .await
            .is_err());
        // Bulk set, dry and real, with an unknown tunnel and a short PSK.
        let entries = vec![
            PskEntry {
                tunnel_id: t0.clone(),
                psk: Psk::new("bulk-psk-0-abcdefghijkl".into()),
            },
            PskEntry {
                tunnel_id: t1.clone(),
                psk: Psk::new("short".into()),
            },
            PskEntry {
                tunnel_id: unknown.into(),
                psk: Psk::new("bulk-psk-x-abcdefghijkl".into()),
            },
        ];
        let dry = client.set_psks(ACCOUNT, &entries, true).await;
        assert!(dry.failed.is_empty(), "{dry:?}");
        assert_eq!(dry.applied.keys().collect::<Vec<_>>(), vec![&t0]);
        assert_eq!(dry.unapplied.len(), 2);
        let real = client.set_psks(ACCOUNT, &entries, false).await;
        assert_eq!(real.applied.keys().collect::<Vec<_>>(), vec![&t0]);
        assert!(real.unapplied[&t1].contains("8 to 128"), "{real:?}");
        assert!(real.unapplied[unknown].contains("not found"), "{real:?}");
    });
    c.assert_all_valid();
    let ops: BTreeSet<(String, u16)> = c
        .seen()
        .into_iter()
        .map(|x| (x.operation, x.status))
        .collect();
    for want in [
        (LIST, 200),
        (LIST, 403),
        (GET, 200),
        (GET, 404),
        (GENERATE, 200),
        (GENERATE, 404),
        (BULK, 200),
    ] {
        assert!(
            ops.contains(&(want.0.to_string(), want.1)),
            "missing {want:?} in {ops:?}"
        );
    }
    // The ledger took the real bulk key and the real generation, no more.
    assert_eq!(c.env.ledger()[&t0].len(), 2);
    assert!(!c.env.ledger().contains_key(&t1));
}

/// The checker itself catches what it is there to catch: requests that
/// break the contract (sent raw, not by psk), while the sandbox's answers
/// to them are still valid error envelopes.
#[test]
fn the_checker_flags_bad_requests() {
    let c = checked(1);
    let t0 = tunnel_id(0);
    let url = |p: &str| format!("{}/accounts/{ACCOUNT}/magic/ipsec_tunnels{p}", c.base_url);
    c.env.block_on(async {
        let http = psk::tls::client();
        // psk_generate without the JSON body the excerpt requires. The
        // sandbox takes it, as Cloudflare does (its Python SDK sends no
        // body; see the sandbox's docs), but psk must send `{}`.
        let r = http
            .post(url(&format!("/{t0}/psk_generate?validate_only=true")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // No credentials at all: Cloudflare's 400 (code 9106).
        let r = http.get(url("")).send().await.unwrap();
        assert_eq!(r.status(), 400);
        // A bulk set whose entries lack `psk`.
        let r = http
            .post(url("/psk"))
            .bearer_auth(TOKEN)
            .json(&json!({"psks": [{"id": t0}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // validate_only that is not a boolean.
        let r = http
            .post(url(&format!("/{t0}/psk_generate?validate_only=yes")))
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    });
    let seen = c.seen();
    assert_eq!(seen.len(), 4);
    let flagged = |i: usize, what: &str| {
        assert!(
            seen[i].request_problems.iter().any(|p| p.contains(what)),
            "request {i} not flagged for {what}: {:#?}",
            seen[i]
        );
    };
    flagged(0, "required request body is missing");
    flagged(1, "no security alternative");
    flagged(2, "\"psk\" is a required property");
    flagged(3, "query parameter validate_only");
    for x in &seen {
        assert!(x.response_problems.is_empty(), "{x:#?}");
    }
    // And the ledger is untouched: none of them changed anything (the
    // first is a dry run).
    assert!(c.env.ledger().is_empty());
}

/// Unknown fields in Cloudflare's answers are tolerated; a field psk needs
/// that is missing is an error that names it.
#[tokio::test]
async fn unknown_fields_are_tolerated_and_needed_fields_checked() {
    let t = "c4a7362d577a6c3019a474fd6f485821";
    let tunnel = json!({"id": t, "name": "x", "cloudflare_endpoint": "203.0.113.1",
        "interface_address": "10.0.0.0/31", "brand_new_field": {"nested": [1, 2]},
        "psk_metadata": {"last_generated_on": "2026-11-01T00:00:00Z", "also_new": true}});
    let mut extra = success(json!({"ipsec_tunnels": [tunnel], "next_page": null}));
    extra["result_info"] = json!({"page": 1});
    let server = script::serve(vec![
        Step::json(200, extra),
        Step::json(200, success(json!({"tunnels": []}))),
    ])
    .await;
    let options = ClientOptions {
        base_url: server.base_url.clone(),
        ..ClientOptions::default()
    };
    let client = Client::new(&Credentials::Token(TOKEN.into()), options).unwrap();
    let tunnels = client.list_tunnels(ACCOUNT).await.unwrap();
    assert_eq!(tunnels.len(), 1);
    assert_eq!(
        tunnels[0].last_generated_on.unwrap().to_rfc3339(),
        "2026-11-01T00:00:00+00:00"
    );
    let err = client.list_tunnels(ACCOUNT).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("`result` lacks the field `ipsec_tunnels`"),
        "{err}"
    );
}

/// The schema checks bite: answers that break the contract are flagged.
#[test]
fn the_checker_flags_bad_answers() {
    let spec = Spec::load();
    let failure = Spec::component("magic_api-response-common-failure");
    let good = json!({"success": false, "errors": [{"code": 1003, "message": "x"}],
        "messages": [], "result": null});
    assert_eq!(spec.check(&failure, &good), Vec::<String>::new());
    let low_code = json!({"success": false, "errors": [{"code": 999, "message": "x"}],
        "messages": [], "result": null});
    assert!(!spec.check(&failure, &low_code).is_empty());
    let no_messages = json!({"success": false, "errors": [], "result": null});
    assert!(!spec.check(&failure, &no_messages).is_empty());

    let list = Spec::component("magic_schemas-tunnels_collection_response");
    let tunnel = json!({"id": "c4a7362d577a6c3019a474fd6f485821", "name": "a",
        "cloudflare_endpoint": "203.0.113.1", "interface_address": "10.0.0.0/31",
        "psk_metadata": {"last_generated_on": "2026-11-01T00:00:00Z"}});
    let ok = success(json!({"ipsec_tunnels": [tunnel.clone()]}));
    assert_eq!(spec.check(&list, &ok), Vec::<String>::new());
    let mut nameless = tunnel.clone();
    nameless.as_object_mut().unwrap().remove("name");
    assert!(!spec
        .check(&list, &success(json!({"ipsec_tunnels": [nameless]})))
        .is_empty());
    let mut bad_time = tunnel;
    bad_time["psk_metadata"]["last_generated_on"] = json!("last tuesday");
    assert!(!spec
        .check(&list, &success(json!({"ipsec_tunnels": [bad_time]})))
        .is_empty());
    // psk's own needs: a generate answer without `psk`.
    let needs = psk_needs(GENERATE, false).unwrap();
    assert!(!spec
        .check(
            &needs,
            &success(json!({"psk_metadata": {"last_generated_on": "2026-11-01T00:00:00Z"}}))
        )
        .is_empty());
}
