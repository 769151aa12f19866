//! AWS named profiles: the shared `credentials` and `config` files.
//!
//! object_store reads the `AWS_*` variables, the web identity and the
//! instance role, but not the profile files that `aws configure` writes and
//! most operators' laptops rely on. psk reads the static parts of a profile
//! (keys, session token, region, endpoint) the way the AWS CLI does, and
//! hands them on as if they were variables. The environment wins over a
//! profile, as in every AWS SDK. A profile that gets its keys some other way
//! (SSO, an assumed role, a `credential_process`) is named, with the AWS
//! CLI command that turns it into variables: psk runs no other program to
//! fetch a credential.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The keys a profile may hold that psk passes on, as the variable each
/// becomes. Keys from the credentials file win over the config file's.
const PASSED: [(&str, &str); 5] = [
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
    ("region", "AWS_REGION"),
    ("endpoint_url", "AWS_ENDPOINT_URL"),
];

/// Keys of a profile whose credentials come from elsewhere.
const INDIRECT: [&str; 5] = [
    "sso_session",
    "sso_start_url",
    "role_arn",
    "credential_process",
    "web_identity_token_file",
];

/// The variables the selected profile adds to `vars`: none when the
/// environment already holds keys, or when no profile was asked for and
/// the files do not exist (the instance role may then apply).
pub fn from_profile(vars: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    if vars.contains_key("AWS_ACCESS_KEY_ID") {
        return Ok(Vec::new());
    }
    let chosen = vars
        .get("AWS_PROFILE")
        .or_else(|| vars.get("AWS_DEFAULT_PROFILE"))
        .filter(|p| !p.is_empty());
    let name = chosen.map_or("default", String::as_str);
    let home = vars.get("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        vars.get(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config = file("AWS_CONFIG_FILE", "config");
    let from_credentials = read_section(credentials.as_deref(), name)?;
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let from_config = read_section(config.as_deref(), &config_section)?;
    if from_credentials.is_none() && from_config.is_none() {
        return match chosen {
            Some(_) => Err(format!(
                "the AWS profile {name:?} (AWS_PROFILE) is in neither {} nor {}",
                shown(credentials.as_deref()),
                shown(config.as_deref())
            )),
            None => Ok(Vec::new()),
        };
    }
    let mut merged = from_config.unwrap_or_default();
    merged.extend(from_credentials.unwrap_or_default());
    passed_on(name, &merged, vars)
}

/// What of the profile's keys becomes a variable, where no variable says
/// otherwise.
fn passed_on(
    name: &str,
    profile: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    if !profile.contains_key("aws_access_key_id") {
        if let Some(how) = INDIRECT.iter().find(|k| profile.contains_key(**k)) {
            return Err(format!(
                "the AWS profile {name:?} gets its keys through {how}, which psk does not run; put them in the environment first: eval \"$(aws configure export-credentials --profile {name} --format env)\""
            ));
        }
    }
    let set = |var: &str| match var {
        "AWS_REGION" => vars.contains_key("AWS_REGION") || vars.contains_key("AWS_DEFAULT_REGION"),
        "AWS_ENDPOINT_URL" => ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .any(|v| vars.contains_key(*v)),
        _ => vars.contains_key(var),
    };
    Ok(PASSED
        .iter()
        .filter(|(_, var)| !set(var))
        .filter_map(|(key, var)| profile.get(*key).map(|v| (var.to_string(), v.clone())))
        .collect())
}

fn shown(path: Option<&Path>) -> String {
    path.map_or("~/.aws/… (HOME is not set)".to_string(), |p| {
        p.display().to_string()
    })
}

/// The `key = value` pairs of `[section]` in an INI file as the AWS CLI
/// writes it; `None` when the file or the section is not there. Indented
/// lines (a nested `s3 =` block) belong to the key above and are skipped.
fn read_section(
    path: Option<&Path>,
    section: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(path) = path else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(parse_section(&text, section))
}

fn parse_section(text: &str, section: &str) -> Option<BTreeMap<String, String>> {
    let mut found = None;
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = name.split_whitespace().collect::<Vec<_>>().join(" ") == section;
            if inside {
                found.get_or_insert_with(BTreeMap::new);
            }
            continue;
        }
        if !inside || line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = trimmed.split_once('=') {
            let map = found.get_or_insert_with(BTreeMap::new);
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn files(credentials: &str, config: &str) -> (tempfile::TempDir, Vec<(&'static str, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("credentials");
        let g = dir.path().join("config");
        std::fs::write(&c, credentials).unwrap();
        std::fs::write(&g, config).unwrap();
        let env = vec![
            ("AWS_SHARED_CREDENTIALS_FILE", c.display().to_string()),
            ("AWS_CONFIG_FILE", g.display().to_string()),
        ];
        (dir, env)
    }

    fn with(env: &[(&'static str, String)], more: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        v.extend(vars(more));
        v
    }

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s-default\n\n# ops\n[ops]\naws_access_key_id=AKOPS\naws_secret_access_key=s-ops\naws_session_token = tok\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n[profile ops]\nregion = eu-central-1\nendpoint_url = https://s3.example.net\ns3 =\n  addressing_style = path\n[profile sso]\nsso_session = corp\nregion = us-east-2\n";

    #[test]
    fn the_named_profile_gives_keys_region_and_endpoint() {
        let (_d, env) = files(CREDENTIALS, CONFIG);
        let got = from_profile(&with(&env, &[("AWS_PROFILE", "ops")])).unwrap();
        assert_eq!(
            got,
            vec![
                ("AWS_ACCESS_KEY_ID".to_string(), "AKOPS".to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), "s-ops".to_string()),
                ("AWS_SESSION_TOKEN".to_string(), "tok".to_string()),
                ("AWS_REGION".to_string(), "eu-central-1".to_string()),
                (
                    "AWS_ENDPOINT_URL".to_string(),
                    "https://s3.example.net".to_string()
                ),
            ]
        );
    }

    #[test]
    fn without_aws_profile_the_default_profile_applies() {
        let (_d, env) = files(CREDENTIALS, CONFIG);
        let got = from_profile(&with(&env, &[])).unwrap();
        assert_eq!(got[0], ("AWS_ACCESS_KEY_ID".into(), "AKDEFAULT".into()));
        assert!(got.contains(&("AWS_REGION".into(), "eu-west-1".into())));
    }

    #[test]
    fn the_environment_wins_over_a_profile() {
        let (_d, env) = files(CREDENTIALS, CONFIG);
        let keys = with(
            &env,
            &[("AWS_PROFILE", "ops"), ("AWS_ACCESS_KEY_ID", "AKENV")],
        );
        assert!(from_profile(&keys).unwrap().is_empty());
        let region = with(
            &env,
            &[
                ("AWS_PROFILE", "ops"),
                ("AWS_REGION", "ap-south-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ],
        );
        let got = from_profile(&region).unwrap();
        assert!(
            got.iter()
                .all(|(k, _)| k != "AWS_REGION" && k != "AWS_ENDPOINT_URL"),
            "{got:?}"
        );
    }

    #[test]
    fn a_missing_or_indirect_profile_is_named() {
        let (_d, env) = files(CREDENTIALS, CONFIG);
        let missing = from_profile(&with(&env, &[("AWS_PROFILE", "nope")])).unwrap_err();
        assert!(
            missing.contains("\"nope\"") && missing.contains("credentials"),
            "{missing}"
        );
        let sso = from_profile(&with(&env, &[("AWS_PROFILE", "sso")])).unwrap_err();
        assert!(
            sso.contains("sso_session") && sso.contains("export-credentials --profile sso"),
            "{sso}"
        );
    }

    #[test]
    fn no_files_and_no_profile_asked_for_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let got = from_profile(&vars(&[("HOME", dir.path().to_str().unwrap())])).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn nested_blocks_and_comments_are_skipped() {
        let s = parse_section(CONFIG, "profile ops").unwrap();
        assert!(!s.contains_key("addressing_style"));
        assert_eq!(s.get("s3").map(String::as_str), Some(""));
        assert!(parse_section(CONFIG, "profile other").is_none());
    }
}
