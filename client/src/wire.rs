//! A lean HTTP/1.1 transport for the load generators' hot requests.
//!
//! reqwest is general: TLS, redirects, proxies, a URL (with IDNA) parsed per
//! request, and a connection task per connection that talks to the caller over a
//! channel. In `bench overload` at 3× that cost the generator most of a core on
//! the same two cores as the nodes it measures. [`Wire`] keeps a pool of at most
//! [`MAX_CONNECTIONS`] keep-alive connections to one plain `http://` node (a
//! request finding all of them busy waits for one) and does each exchange in
//! the caller's task: the request written from one buffer, the response head
//! parsed with `httparse`, the body read by its `Content-Length`.
//!
//! Only what the nodes send is understood: `Content-Length` bodies, bodiless
//! statuses, and bodies that end with the connection. Anything else is an error,
//! not a guess. A pooled connection the node closed while it sat idle (nothing
//! came back, not one byte) is retried once on a fresh connection, as reqwest
//! does; every other failure is the caller's to see.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections open to one node at most, as a population of fans' apps would
/// have: a request that finds them all busy waits for one, and the wait is part
/// of its latency (the exchange's timeout covers it).
///
/// Unbounded, an open-loop step turned a slow moment into a connection storm:
/// each request beyond those in flight opened a connection, the nodes spent their
/// CPU on handshakes, teardowns and the memory of thousands of connections
/// (`bench overload` at 3× went past 8,000 to three nodes), answered slower still, and
/// more connections opened. docs/benchmarks.md, "Overload".
pub const MAX_CONNECTIONS: usize = 1024;
/// Response head lines understood (the nodes send about ten).
const MAX_HEADERS: usize = 64;

/// Why an exchange failed before a whole response arrived.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Protocol(String),
    #[error("not sent: {0}")]
    Request(String),
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Keep-alive connections to one node.
pub struct Wire {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection in use or idle; see [`MAX_CONNECTIONS`].
    slots: tokio::sync::Semaphore,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// How one exchange on one connection ended.
enum Exchange {
    Done {
        reply: Reply,
        reusable: bool,
    },
    /// The connection was closed before any of the response: safe to retry only
    /// if it had sat idle in the pool.
    Closed(WireError),
    Failed(WireError),
}

impl Wire {
    /// A transport for `base` if it is plain `http://host:port` (no path, TLS or
    /// credentials), with `timeout` for each whole exchange.
    pub fn for_base(base: &str, timeout: Duration) -> Option<Self> {
        let hostport = base.strip_prefix("http://")?.trim_end_matches('/');
        if hostport.is_empty() || hostport.contains(['/', '@', '?', '#']) {
            return None;
        }
        let addr = hostport.to_socket_addrs().ok()?.next()?;
        Some(Self {
            addr,
            host: hostport.to_string(),
            timeout,
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
        })
    }

    /// The same transport with at most `n` connections (at least one).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.slots = tokio::sync::Semaphore::new(n.max(1));
        self
    }

    /// Sends one request: `headers` as given, `body` as JSON when present.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, WireError> {
        // Written as given: a line break would end the head early (a second request).
        let mut parts = [method, path_and_query]
            .into_iter()
            .chain(headers.iter().flat_map(|(n, v)| [*n, *v]));
        if let Some(bad) = parts.find(|p| p.contains(['\r', '\n'])) {
            return Err(WireError::Request(format!("a line break in {bad:?}")));
        }
        let request = self.encode(method, path_and_query, headers, body);
        tokio::time::timeout(self.timeout, self.exchange(&request))
            .await
            .map_err(|_| WireError::Timeout(self.timeout))?
    }

    fn encode(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let body = body.unwrap_or_default();
        let mut r = Vec::with_capacity(256 + body.len());
        for part in [
            method,
            " ",
            path_and_query,
            " HTTP/1.1\r\nhost: ",
            &self.host,
        ] {
            r.extend_from_slice(part.as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            for part in [*name, ": ", *value, "\r\n"] {
                r.extend_from_slice(part.as_bytes());
            }
        }
        if !body.is_empty() {
            r.extend_from_slice(b"content-type: application/json\r\n");
        }
        r.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        r.extend_from_slice(body);
        r
    }

    async fn exchange(&self, request: &[u8]) -> Result<Reply, WireError> {
        // Never closed, so acquiring fails only if the semaphore were closed.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| WireError::Request(e.to_string()))?;
        let pooled = self.lock().pop();
        if let Some(mut conn) = pooled {
            match conn.exchange(request).await {
                Exchange::Done { reply, reusable } => {
                    self.release(conn, reusable);
                    return Ok(reply);
                }
                Exchange::Failed(e) => return Err(e),
                // Closed while idle: try once more on a new connection.
                Exchange::Closed(_) => {}
            }
        }
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(WireError::Connect)?;
        stream.set_nodelay(true).map_err(WireError::Connect)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(4096),
        };
        match conn.exchange(request).await {
            Exchange::Done { reply, reusable } => {
                self.release(conn, reusable);
                Ok(reply)
            }
            Exchange::Closed(e) | Exchange::Failed(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Back to the pool, which the slots keep under [`MAX_CONNECTIONS`].
    fn release(&self, conn: Conn, reusable: bool) {
        if reusable {
            self.lock().push(conn);
        }
    }
}

/// What a response head says about the body.
struct Head {
    status: u16,
    len: usize,
    /// Bytes of the body: by `Content-Length`, none, or up to the close.
    body: BodyLen,
    close: bool,
}

enum BodyLen {
    Known(usize),
    UntilClose,
}

impl Conn {
    async fn exchange(&mut self, request: &[u8]) -> Exchange {
        self.buf.clear();
        if let Err(e) = self.stream.write_all(request).await {
            return Exchange::Closed(e.into());
        }
        let head = loop {
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => {
                    return Exchange::Closed(WireError::Protocol(
                        "connection closed before a response".into(),
                    ))
                }
                Ok(0) => {
                    return Exchange::Failed(WireError::Protocol(
                        "connection closed inside a response head".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if self.buf.is_empty() => return Exchange::Closed(e.into()),
                Err(e) => return Exchange::Failed(e.into()),
            }
            match parse_head(&self.buf) {
                Ok(Some(head)) => break head,
                Ok(None) => continue,
                Err(e) => return Exchange::Failed(e),
            }
        };
        let want = match head.body {
            BodyLen::Known(n) => Some(head.len + n),
            BodyLen::UntilClose => None,
        };
        loop {
            if want.is_some_and(|w| self.buf.len() >= w) {
                break;
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) if want.is_none() => break,
                Ok(0) => {
                    return Exchange::Failed(WireError::Protocol(
                        "connection closed inside a response body".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Exchange::Failed(e.into()),
            }
        }
        let end = want.unwrap_or(self.buf.len());
        // Bytes past the response were never asked for: do not reuse the stream.
        let reusable = !head.close && want.is_some() && self.buf.len() == end;
        Exchange::Done {
            reply: Reply {
                status: head.status,
                body: self.buf[head.len..end].to_vec(),
            },
            reusable,
        }
    }
}

/// The response head in `buf`, if it is all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::Protocol(e.to_string())),
    };
    let status = response
        .code
        .ok_or_else(|| WireError::Protocol("no status".into()))?;
    let mut content_length = None;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| WireError::Protocol("bad content-length".into()))?;
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(WireError::Protocol(
                "transfer-encoding is not supported by the lean transport".into(),
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body = match (status, content_length) {
        (100..=199 | 204 | 304, _) => BodyLen::Known(0),
        (_, Some(n)) => BodyLen::Known(n),
        (_, None) => BodyLen::UntilClose,
    };
    Ok(Some(Head {
        status,
        len,
        body,
        close,
    }))
}

/// One API call over `wire`: a Bearer `token`, one `extra` header, a JSON `body`;
/// the answer as [`crate::Client`]'s reqwest path gives it.
pub(crate) async fn call(
    wire: &Wire,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: Option<(&str, &str)>,
    body: Option<&serde_json::Value>,
) -> crate::Result<serde_json::Value> {
    let reply = send(wire, method, path, token, extra, body).await?;
    crate::Client::parse_text(reply.status, &String::from_utf8_lossy(&reply.body))
}

/// [`call`] of a request answered 204 on success.
pub(crate) async fn call_no_content(
    wire: &Wire,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> crate::Result<()> {
    let reply = send(wire, method, path, token, None, None).await?;
    if reply.status == 204 {
        return Ok(());
    }
    crate::Client::parse_text::<serde_json::Value>(
        reply.status,
        &String::from_utf8_lossy(&reply.body),
    )
    .map(|_| ())
}

async fn send(
    wire: &Wire,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: Option<(&str, &str)>,
    body: Option<&serde_json::Value>,
) -> crate::Result<Reply> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("authorization", b))
        .into_iter()
        .chain(extra)
        .collect();
    let body = body
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| crate::ClientError::Unexpected(format!("request body: {e}")))?;
    Ok(wire.send(method, path, &headers, body.as_deref()).await?)
}

/// `s` percent-encoded for a query value (everything but RFC 3986's unreserved).
pub fn query_value(s: &str) -> std::borrow::Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if s.bytes().all(unreserved) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with `replies` in turn,
    /// then closes it; returns the requests it read.
    async fn server(replies: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut seen = Vec::new();
            for reply in replies {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                s.write_all(reply).await.expect("write");
            }
            seen
        });
        (base, task)
    }

    #[tokio::test]
    async fn exchanges_reuse_one_connection() {
        let (base, task) = server(vec![
            b"HTTP/1.1 201 Created\r\ncontent-length: 11\r\n\r\n{\"id\":\"a\"}\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let wire = Wire::for_base(&base, Duration::from_secs(5)).expect("plain http");
        let first = wire
            .send(
                "POST",
                "/v1/x",
                &[("authorization", "Bearer t")],
                Some(b"{}"),
            )
            .await
            .expect("first");
        assert_eq!(first.status, 201);
        assert_eq!(first.body, b"{\"id\":\"a\"}\n");
        let second = wire
            .send("DELETE", "/v1/x/a", &[], None)
            .await
            .expect("second");
        assert_eq!(second.status, 204);
        assert!(second.body.is_empty());
        let seen = task.await.expect("server");
        assert!(
            seen[0].starts_with("POST /v1/x HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("authorization: Bearer t\r\n"));
        assert!(
            seen[0].ends_with("content-length: 2\r\n\r\n{}"),
            "{}",
            seen[0]
        );
        assert!(seen[1].starts_with("DELETE /v1/x/a HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn a_cut_body_or_an_unknown_framing_is_an_error() {
        let (base, _task) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"]).await;
        let wire = Wire::for_base(&base, Duration::from_secs(5)).expect("plain http");
        assert!(matches!(
            wire.send("GET", "/", &[], None).await,
            Err(WireError::Protocol(_))
        ));
        let (base, _task) = server(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ])
        .await;
        let wire = Wire::for_base(&base, Duration::from_secs(5)).expect("plain http");
        assert!(matches!(
            wire.send("GET", "/", &[], None).await,
            Err(WireError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_while_idle_is_replaced() {
        // Each connection answers one request, then closes.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await.expect("read");
                s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .await
                    .expect("write");
            }
        });
        let wire = Wire::for_base(&base, Duration::from_secs(5)).expect("plain http");
        for _ in 0..2 {
            let reply = wire
                .send("DELETE", "/v1/x", &[], None)
                .await
                .expect("answered");
            assert_eq!(reply.status, 204);
        }
        task.await.expect("server saw two connections");
    }

    #[tokio::test]
    async fn requests_beyond_the_connection_cap_wait_for_a_connection() {
        // Answers every request on every connection after a pause, counting the
        // connections it accepted.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        let _server = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.expect("accept");
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        let wire = std::sync::Arc::new(
            Wire::for_base(&base, Duration::from_secs(5))
                .expect("plain http")
                .with_max_connections(2),
        );
        let sends: Vec<_> = (0..10)
            .map(|_| {
                let wire = wire.clone();
                tokio::spawn(async move { wire.send("DELETE", "/v1/x", &[], None).await })
            })
            .collect();
        for send in sends {
            let reply = send.await.expect("task").expect("answered");
            assert_eq!(reply.status, 204);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn only_plain_http_bases_and_safe_query_values() {
        assert!(Wire::for_base("https://127.0.0.1:1", Duration::ZERO).is_none());
        assert!(Wire::for_base("http://127.0.0.1:1/api", Duration::ZERO).is_none());
        assert!(Wire::for_base("http://127.0.0.1:1/", Duration::ZERO).is_some());
        assert_eq!(query_value("a.b-c_~9"), "a.b-c_~9");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }

    #[tokio::test]
    async fn a_line_break_in_the_head_is_refused_unsent() {
        let wire =
            Wire::for_base("http://127.0.0.1:9", Duration::from_secs(1)).expect("plain http");
        let bad = wire
            .send(
                "GET",
                "/",
                &[("authorization", "Bearer t\r\nx-evil: 1")],
                None,
            )
            .await;
        assert!(matches!(bad, Err(WireError::Request(_))), "{bad:?}");
    }
}
