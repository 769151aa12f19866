//! The state on object storage: `state: s3://bucket/prefix/psk.state.json`.
//!
//! Several operators and CI runners share one state with no extra service:
//! the store's conditional writes do all the excluding.
//!
//! - The lock is an object `<state>.lock` created with `If-None-Match: *`
//!   (see [`lock`]); it holds the same holder record as the local lock.
//! - Every write of the state is a compare-and-swap on the ETag psk read
//!   (`If-Match`), so a writer that lost the lock (or never took it) gets a
//!   refusal and overwrites nothing (see [`store`]).
//! - The journal is one conditionally created object per group commit under
//!   `<state>.journal/`, durable on the store before psk goes on, folded
//!   into the state at the end and replayed by the next run after a crash.
//!
//! Endpoint, region and credentials come from the usual AWS environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...) or a named
//! profile (see [`profile`]), never from psk.yaml. Plain http is allowed for a loopback endpoint only.

pub mod lock;
mod profile;
pub mod store;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig, UpdateVersion};

pub use lock::RemoteLock;
pub use store::BucketStore;

/// How long one call to the store (its retries included) may take before
/// psk takes the store as gone for the rest of the run. With the apply's
/// commit retries (under 3 s) and a rescue that asks the store nothing,
/// a hung store stops psk in about 10 s (docs/remote-state.md).
pub const CALL_BUDGET: Duration = Duration::from_secs(7);

/// The client's own timeout per request: above [`CALL_BUDGET`], so the
/// budget is what ends a wait, and a store that does not answer is known
/// as such (rather than as one failed request among others).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong talking to the store, or with what is on it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the state location {url} is not usable: {why}")]
    Location { url: String, why: String },
    #[error("cannot {op} {url}: {message}.\nCheck the endpoint and credentials in the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that the store is reachable; every change psk made before this is durable on the store")]
    Store {
        op: &'static str,
        url: String,
        message: String,
    },
    #[error("no credentials found for {url}: psk looked in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in the profile {profile} of {files}, for a web identity (AWS_WEB_IDENTITY_TOKEN_FILE) and container credentials (AWS_CONTAINER_CREDENTIALS_*), and last asked the EC2 instance metadata service, which gave none ({message}).\nSet AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE for a profile `aws configure` wrote; nothing was read or written")]
    NoCredentials {
        url: String,
        profile: String,
        files: String,
        message: String,
    },
    #[error("the bucket `{bucket}` of {url} does not exist (the store answered NoSuchBucket).\nCheck the name in psk.yaml's `state:` (or --state), or create the bucket first; nothing was written (psk checks the bucket before it takes the lock, so a store that makes buckets on first write does not start an empty state)")]
    NoBucket { url: String, bucket: String },
    #[error("the state {url} was changed by another writer since psk read it (its ETag no longer matches).\nNothing was overwritten. Run psk again: it reads the new version (and any journal on the store)")]
    Conflict { url: String },
    #[error("the state {url} is locked by {holder}.\nWait for it to finish, or pass --lock-timeout DURATION to wait for it. If that process is gone (killed, its machine lost), remove its lock with `psk force-unlock {id}`")]
    Held {
        url: String,
        holder: String,
        id: String,
    },
    #[error("lock ID `{given}` does not match the lock of {url}: {found}.\nCheck the ID in the message that named the lock")]
    WrongId {
        url: String,
        given: String,
        found: String,
    },
    #[error("the journal of {url} on the store cannot be replayed: {message}.\nNeither it nor the state was changed. It holds changes an interrupted apply made (maybe sealed PSKs); keep a copy of the objects under {url}.journal/ and ask for help before removing them")]
    Journal { url: String, message: String },
    #[error("there is no state object {url}, but its backup {url}.backup is there: the state went missing.\nRestore it (from the bucket's versions, or copy the backup over it) rather than starting over: a new state would forget every key the old one held. Pass --new-state only if you mean to start afresh")]
    Missing { url: String },
    #[error("found journal objects under {url}.journal/ but no state object {url}.\nThey hold changes to that state (maybe sealed PSKs): restore the state object (from the bucket's versions or {url}.backup) rather than starting over; remove them only if you mean to abandon those keys")]
    OrphanJournal { url: String },
}

/// What this process last read of one remote state.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The version to make the next write conditional on; `None` when
    /// there was no state object.
    version: Option<UpdateVersion>,
    /// The bytes read, kept as `<state>.backup` by the next write.
    bytes: Option<Vec<u8>>,
    /// Journal objects found: replayed ones and already folded ones.
    journal: Vec<ObjectPath>,
    /// How many of those were replayed into the state.
    replayed: usize,
    /// Objects a writer whose lock was taken left after the state moved
    /// on: never replayed, set aside by the next writer.
    fenced: Vec<ObjectPath>,
}

/// A state object on a store, with the store's client.
#[derive(Clone)]
pub struct Remote {
    /// The location as the user wrote it, for messages.
    pub url: String,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    key: ObjectPath,
    /// Where psk looked for credentials, when none was given outright
    /// (the client then asks the EC2 instance metadata service): what a
    /// failure to get one says.
    no_credentials: Option<Looked>,
    /// What this process last read or wrote of the state object (its
    /// ETag above all), shared by every clone: each write is conditional
    /// on it.
    seen: Arc<Mutex<Seen>>,
    /// Set once a call went unanswered for [`CALL_BUDGET`]: every later
    /// call fails at once, so a hung store stops psk in seconds.
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// Parses `s3://bucket/key` and builds the client from the AWS
    /// environment. No request is made yet.
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        Remote::open_with(url, std::env::vars())
    }

    /// [`Remote::open`] with the AWS variables given instead of read from
    /// the environment (for tests, which run several stores at once).
    pub fn open_with(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Remote, RemoteError> {
        let bad = |why: &str| RemoteError::Location {
            url: url.to_string(),
            why: why.to_string(),
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(bad("psk keeps remote state on S3-compatible storage only: write s3://BUCKET/PATH/psk.state.json"));
        };
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty() && !k.ends_with('/'))
            .ok_or_else(|| bad("expected s3://BUCKET/PATH/psk.state.json, with an object name after the bucket"))?;
        let key = ObjectPath::parse(key).map_err(|e| bad(&format!("bad object name: {e}")))?;
        let (store, no_credentials) = build_s3(bucket, vars).map_err(|e| bad(&e))?;
        Ok(Remote {
            url: url.to_string(),
            store,
            bucket: bucket.to_string(),
            key,
            no_credentials,
            seen: Arc::default(),
            silent: Arc::default(),
        })
    }

    /// A sibling object: `<state><suffix>`.
    fn sibling(&self, suffix: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{suffix}", self.key))
    }

    /// Runs one call to the store (its own retries included) within
    /// [`CALL_BUDGET`]. A store that does not answer in that time is taken
    /// as gone for the rest of this run: psk stops (with every change
    /// before it durable, or rescued) rather than waiting on it again.
    fn call<T, F>(&self, f: F) -> Result<T, object_store::Error>
    where
        F: std::future::Future<Output = Result<T, object_store::Error>> + Send,
        T: Send,
    {
        use std::sync::atomic::Ordering;
        if self.silent.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "the store gave no answer to an earlier request within {} s; psk does not wait on it again",
                    CALL_BUDGET.as_secs()
                )
                .into(),
            });
        }
        match block(async { tokio::time::timeout(CALL_BUDGET, f).await }) {
            Ok(r) => r,
            Err(_) => {
                self.silent.store(true, Ordering::SeqCst);
                tracing::warn!(state = %self.url, budget_s = CALL_BUDGET.as_secs(), "the store did not answer");
                Err(object_store::Error::Generic {
                    store: "S3",
                    source: format!(
                        "the store gave no answer within {} s",
                        CALL_BUDGET.as_secs()
                    )
                    .into(),
                })
            }
        }
    }

    fn store_err(&self, op: &'static str) -> impl Fn(object_store::Error) -> RemoteError + '_ {
        move |e| {
            let message = describe(&e);
            if message.contains("NoSuchBucket") {
                return RemoteError::NoBucket {
                    url: self.url.clone(),
                    bucket: self.bucket.clone(),
                };
            }
            if let Some((profile, files)) = &self.no_credentials {
                let lower = message.to_ascii_lowercase();
                if lower.contains("credential")
                    || lower.contains("169.254.169.254")
                    || lower.contains("metadata")
                    || lower.contains("/latest/api/token")
                {
                    return RemoteError::NoCredentials {
                        url: self.url.clone(),
                        profile: profile.clone(),
                        files: files.clone(),
                        message,
                    };
                }
            }
            RemoteError::Store {
                op,
                url: self.url.clone(),
                message,
            }
        }
    }

    /// Checks that the bucket exists, with a read that changes nothing: a
    /// store that creates buckets on first write (SeaweedFS, MinIO with
    /// auto-create) would otherwise take a misspelled bucket for an empty
    /// state at the lock's PUT.
    pub fn check_bucket(&self) -> Result<(), RemoteError> {
        // A listing, not a HEAD: a HEAD's 404 has no body to tell a missing
        // bucket from a missing object.
        let prefix = self.sibling(".journal");
        match self.call(self.store.list_with_delimiter(Some(&prefix))) {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("read the state")(e)),
        }
    }
}

/// Where psk looked for credentials: the profile's name and its files.
type Looked = (String, String);

/// `None` when the variables give credentials outright (keys, a web
/// identity, container credentials); else the profile and files psk
/// looked in, for the message when the instance metadata service has none.
fn looked_for_credentials(vars: &[(String, String)]) -> Option<Looked> {
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let given = [
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ];
    if given.iter().any(|k| get(k).is_some_and(|v| !v.is_empty())) {
        return None;
    }
    let profile = get("AWS_PROFILE")
        .or_else(|| get("AWS_DEFAULT_PROFILE"))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into());
    let home = get("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, name: &str| {
        get(var)
            .or_else(|| {
                home.as_ref()
                    .map(|h| h.join(".aws").join(name).display().to_string())
            })
            .unwrap_or_else(|| format!("~/.aws/{name}"))
    };
    Some((
        format!("`{profile}`"),
        format!(
            "{} and {}",
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            file("AWS_CONFIG_FILE", "config")
        ),
    ))
}

/// The S3 client for `bucket`, configured from the AWS variables (as
/// `AmazonS3Builder::from_env` reads them).
fn build_s3(
    bucket: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Arc<dyn ObjectStore>, Option<Looked>), String> {
    let mut vars: std::collections::BTreeMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "HOME")
        .collect();
    // A named profile fills in what the variables leave out.
    let from_profile = profile::from_profile(&vars)?;
    vars.extend(from_profile);
    let pairs: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let no_credentials = looked_for_credentials(&pairs);
    vars.remove("HOME");
    // https to the store goes through psk's one TLS stack (rustls, ring).
    crate::tls::ensure_provider();
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    for (k, v) in &vars {
        if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, v);
        }
    }
    let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|k| vars.get(*k).cloned());
    // Credentials travel in the clear over http: only to this machine.
    let loopback = endpoint.as_deref().is_some_and(is_loopback_http);
    if let Some(e) = endpoint.as_deref() {
        if e.starts_with("http://") && !loopback {
            return Err(format!("the endpoint {e} is plain http: psk sends credentials over https only (http is allowed to 127.0.0.1, ::1 and localhost)"));
        }
    }
    // Quick retries of what the store refused (a 5xx, a reset), none of a
    // request it left unanswered: an outage stops psk in seconds (see
    // CALL_BUDGET), with everything before it durable, not in minutes.
    let client = ClientOptions::new()
        .with_allow_http(loopback)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(REQUEST_TIMEOUT);
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(4),
        ..RetryConfig::default()
    };
    builder = builder.with_client_options(client).with_retry(retry);
    let store = builder.build().map_err(|e| describe(&e))?;
    Ok((Arc::new(store), no_credentials))
}

fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The store's error in one line. object_store's messages name the URL and
/// the HTTP status; they never hold the secret key.
fn describe(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = std::error::Error::source(s);
    }
    text.replace('\n', " ")
}

/// Runs `f` to completion on psk's own runtime for the store, from sync
/// code that may itself be running inside a tokio task: the future runs on
/// a scoped thread, so no runtime is ever entered twice.
fn block<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("psk-store")
            .enable_all()
            .build()
            .expect("a tokio runtime for the state store")
    });
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(f))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_be_plain_http() {
        for ok in [
            "http://127.0.0.1:8333",
            "http://localhost:9000/",
            "http://[::1]:80",
        ] {
            assert!(is_loopback_http(ok), "{ok}");
        }
        for no in [
            "http://10.0.0.1:8333",
            "http://s3.example.com",
            "https://127.0.0.1",
        ] {
            assert!(!is_loopback_http(no), "{no}");
        }
    }

    #[test]
    fn locations_are_checked_before_any_request() {
        let e = Remote::open("s3://bucket").unwrap_err().to_string();
        assert!(e.contains("object name after the bucket"), "{e}");
        let e = Remote::open("gs://bucket/x").unwrap_err().to_string();
        assert!(e.contains("S3-compatible"), "{e}");
        let far = [(
            "AWS_ENDPOINT_URL".to_string(),
            "http://10.1.2.3:9000".to_string(),
        )];
        let e = Remote::open_with("s3://bucket/psk.state.json", far)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain http"), "{e}");
        let near = [(
            "AWS_ENDPOINT_URL".to_string(),
            "http://127.0.0.1:9000".to_string(),
        )];
        Remote::open_with("s3://bucket/psk.state.json", near).unwrap();
    }
}
