//! A scripted HTTP server on 127.0.0.1 for client tests: each connection
//! gets the next step of a script (an answer, or a reset), so a test can
//! stage exactly the faults it is about. Answers close their connection,
//! so one connection is one request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status, extra headers and body.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then reset the connection without answering.
    Reset,
}

impl Step {
    pub fn json(status: u16, body: serde_json::Value) -> Step {
        Step::Answer {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    pub fn raw(status: u16, body: &str) -> Step {
        Step::Answer {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Step {
        if let Step::Answer { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

/// Cloudflare's failure envelope.
pub fn failure(code: u32, message: &str) -> serde_json::Value {
    serde_json::json!({
        "success": false,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": null,
    })
}

pub fn success(result: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"success": true, "errors": [], "messages": [], "result": result})
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub head: String,
    pub body: Vec<u8>,
}

pub struct Scripted {
    pub base_url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves `script` in order; once it is used up, the last step repeats.
pub async fn serve(script: Vec<Step>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let step = script[n.min(script.len() - 1)].clone();
            n += 1;
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Some((head, body)) = read_request(&mut stream).await else {
                    return;
                };
                seen.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    head,
                    body,
                });
                match step {
                    Step::Reset => {
                        // A zero linger makes the close a reset (RST), and
                        // does not block: there is nothing left to send.
                        #[allow(deprecated)]
                        let _ = stream.set_linger(Some(std::time::Duration::ZERO));
                        drop(stream);
                    }
                    Step::Answer {
                        status,
                        headers,
                        body,
                    } => {
                        let mut out = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        out.push_str(&body);
                        let _ = stream.write_all(out.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    Scripted {
        base_url: format!("http://{addr}/client/v4"),
        seen,
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
