//! PSKs Terraform set, read from `terraform show -json`, for `psk import
//! --terraform`: adopting a fleet whose keys the cloudflare provider made.
//!
//! The provider's IPsec tunnel resource (`cloudflare_magic_wan_ipsec_tunnel`
//! since provider v5, `cloudflare_ipsec_tunnel` before) carries the key in
//! its `psk` attribute, and `terraform show -json` writes it in clear (it
//! marks it in `sensitive_values`, nothing more). The file is read as
//! plain JSON first and then walked by hand, so no message about a file
//! of the wrong shape can quote a value from it: errors name positions
//! and paths, never contents.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::seal::Psk;
use crate::tunnel::{is_cloudflare_id, TunnelKey};

/// The provider's resource types for an IPsec tunnel, newest first.
pub const RESOURCE_TYPES: [&str; 2] = [
    "cloudflare_magic_wan_ipsec_tunnel",
    "cloudflare_ipsec_tunnel",
];

/// One IPsec tunnel resource of the state.
#[derive(Debug)]
pub struct Resource {
    /// Terraform's address, e.g. `module.eu.cloudflare_magic_wan_ipsec_tunnel.fra["a"]`.
    pub address: String,
    pub key: TunnelKey,
    /// The key the configuration set; `None` when it sets none.
    pub psk: Option<Psk>,
}

#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: not JSON ({what}); expected the output of `terraform show -json`"
    )]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        what: String,
    },
    #[error("{path}: {at} {what}; expected the output of `terraform show -json` (Terraform's JSON output format)")]
    Shape {
        path: PathBuf,
        at: String,
        what: String,
    },
}

/// Every managed IPsec tunnel resource in the `terraform show -json` file
/// at `path`, root module first, then child modules in order.
pub fn read(path: &Path) -> Result<Vec<Resource>, TerraformError> {
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| TerraformError::Read {
            path: path.to_path_buf(),
            source,
        })?);
    parse(path, &bytes)
}

/// [`read`], on bytes already read.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Resource>, TerraformError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| TerraformError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        what: match e.classify() {
            serde_json::error::Category::Eof => "it ends too early".into(),
            _ => "a syntax error".into(),
        },
    })?;
    let shape = |at: &str, what: &str| TerraformError::Shape {
        path: path.to_path_buf(),
        at: at.to_string(),
        what: what.to_string(),
    };
    let top = doc
        .as_object()
        .ok_or_else(|| shape("the document", "is not an object"))?;
    if !top.contains_key("format_version") {
        return Err(shape("the document", "has no `format_version`"));
    }
    let mut out = Vec::new();
    let Some(values) = top.get("values") else {
        // `terraform show -json` of an empty state: no resources at all.
        return Ok(out);
    };
    let root =
        (values.get("root_module")).ok_or_else(|| shape("`values`", "has no `root_module`"))?;
    module(root, "values.root_module", &mut out, &shape)?;
    Ok(out)
}

fn module(
    m: &Value,
    at: &str,
    out: &mut Vec<Resource>,
    shape: &dyn Fn(&str, &str) -> TerraformError,
) -> Result<(), TerraformError> {
    let m = m
        .as_object()
        .ok_or_else(|| shape(&format!("`{at}`"), "is not an object"))?;
    if let Some(resources) = m.get("resources") {
        let list = (resources.as_array())
            .ok_or_else(|| shape(&format!("`{at}.resources`"), "is not a list"))?;
        for (i, r) in list.iter().enumerate() {
            let here = format!("{at}.resources[{i}]");
            if let Some(found) = resource(r, &here, shape)? {
                out.push(found);
            }
        }
    }
    if let Some(children) = m.get("child_modules") {
        let list = (children.as_array())
            .ok_or_else(|| shape(&format!("`{at}.child_modules`"), "is not a list"))?;
        for (i, c) in list.iter().enumerate() {
            module(c, &format!("{at}.child_modules[{i}]"), out, shape)?;
        }
    }
    Ok(())
}

/// One resource, when it is a managed IPsec tunnel.
fn resource(
    r: &Value,
    at: &str,
    shape: &dyn Fn(&str, &str) -> TerraformError,
) -> Result<Option<Resource>, TerraformError> {
    let text = |key: &str| r.get(key).and_then(Value::as_str);
    let kind = text("type").unwrap_or_default();
    if !RESOURCE_TYPES.contains(&kind) || text("mode") != Some("managed") {
        return Ok(None);
    }
    let address = text("address").unwrap_or(kind).to_string();
    let values = (r.get("values").and_then(Value::as_object))
        .ok_or_else(|| shape(&format!("`{at}` ({address})"), "has no `values` object"))?;
    let id_of = |key: &str| -> Result<String, TerraformError> {
        let v = values
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        match v {
            Some(v) if is_cloudflare_id(&v) => Ok(v),
            _ => Err(shape(
                &format!("`{at}.values.{key}` ({address})"),
                "is not a Cloudflare id (32 hexadecimal characters)",
            )),
        }
    };
    let account = id_of("account_id")?;
    let id = id_of("id")?;
    let psk = match values.get("psk") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Psk::new(s.clone())),
        Some(_) => {
            return Err(shape(
                &format!("`{at}.values.psk` ({address})"),
                "is not a string",
            ))
        }
    };
    Ok(Some(Resource {
        address,
        key: TunnelKey::new(&account, &id),
        psk,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/corpus/terraform/show.json");

    #[test]
    fn reads_both_resource_types_in_every_module_and_skips_the_rest() {
        let found = parse(Path::new("tf.json"), FIXTURE.as_bytes()).unwrap();
        let got: Vec<(&str, &str, bool)> = (found.iter())
            .map(|r| {
                (
                    r.address.as_str(),
                    r.key.tunnel_id.as_str(),
                    r.psk.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "cloudflare_magic_wan_ipsec_tunnel.fra_1",
                    "000000000000000000000000abc00000",
                    true
                ),
                (
                    "cloudflare_magic_wan_ipsec_tunnel.lab",
                    "000000000000000000000000abc000ff",
                    false
                ),
                (
                    "module.legacy.cloudflare_ipsec_tunnel.ams[\"1\"]",
                    "000000000000000000000000abc00001",
                    true
                ),
            ]
        );
    }

    #[test]
    fn errors_name_places_never_values() {
        let secret = "Sup3rSecretPskThatMustNeverShow";
        for bad in [
            format!("{{\"format_version\": \"1.0\", \"values\": \"{secret}\"}}"),
            format!("{{\"format_version\": \"1.0\", \"values\": {{\"root_module\": {{\"resources\": \"{secret}\"}}}}}}"),
            format!("{{\"format_version\": \"1.0\", \"values\": {{\"root_module\": {{\"resources\": [{{\"type\": \"cloudflare_ipsec_tunnel\", \"mode\": \"managed\", \"values\": {{\"account_id\": \"{secret}\", \"id\": \"x\", \"psk\": \"{secret}\"}}}}]}}}}}}"),
            format!("{{\"psk\": \"{secret}\""),
            format!("[\"{secret}\"]"),
        ] {
            let e = parse(Path::new("tf.json"), bad.as_bytes()).unwrap_err().to_string();
            assert!(!e.contains(secret), "{e}");
            assert!(e.starts_with("tf.json"), "{e}");
        }
    }
}
