//! `kiln serve` under abuse (issue 21), on loopback only: the `kiln` binary serves the
//! reference model while clients hold slow headers, lie about Content-Length, send
//! oversized and malformed bodies, and open idle connections up to the cap; a normal
//! client must keep getting answers throughout (on new connections too: at the cap the
//! oldest idle connection makes room), only a server whose every connection is busy
//! refuses one more (503, at once), and afterwards the server's KV pages and anonymous
//! RSS must be back at their baseline (within 5%).
//!
//! The abuse phase lasts `KILN_SOAK_SECS` seconds (default 20, so the test stays well
//! under 3 minutes in CI; the 60 s is `KILN_SOAK_SECS=60`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CONNECTIONS: usize = 48;
const HEADER_TIMEOUT_S: u64 = 3;
const BODY_TIMEOUT_S: u64 = 3;
const MAX_BODY: usize = 64 << 10;
const SLOW_CLIENTS: usize = 20;
const NORMAL_REQUESTS: usize = 100;

/// The server process, killed if the test fails half-way.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Served {
    start_with(Stdio::null(), &[])
}

fn start_with(stderr: Stdio, extra: &[&str]) -> Served {
    let model = kiln_tests::reference_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "-m"])
        .arg(&model)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--json",
            "--backend",
            "cpu",
        ])
        .args(["-c", "256", "--max-seqs", "4", "--max-queue", "64"])
        .args(["--max-connections", &CONNECTIONS.to_string()])
        .args(["--header-timeout", &HEADER_TIMEOUT_S.to_string()])
        .args(["--body-timeout", &BODY_TIMEOUT_S.to_string()])
        .args(["--max-body", &MAX_BODY.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("kiln serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(info["max_connections"], CONNECTIONS, "{info}");
    let addr = info["address"].as_str().unwrap().parse().unwrap();
    assert!(matches!(addr, SocketAddr::V4(a) if a.ip().is_loopback()));
    Served { child, addr }
}

/// One request on its own connection: the status and the body.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&String::from_utf8_lossy(&out))
}

fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

fn post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: kiln\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n").into_bytes()
}

fn completion(max_tokens: usize) -> String {
    json!({"prompt": "The capital of France is", "max_tokens": max_tokens, "temperature": 0})
        .to_string()
}

/// The response is `status` with an OpenAI error object (naming `param` when given).
fn assert_error(what: &str, (status, body): (u16, String), want: u16, param: Option<&str>) {
    assert_eq!(status, want, "{what}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body:?}"));
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert!(e["type"].is_string(), "{what}: {v}");
    if let Some(param) = param {
        assert_eq!(e["param"], param, "{what}: {v}");
    }
}

/// One round of every abusive request, each checked.
fn abuse_round(addr: SocketAddr) {
    let c = "/v1/completions";
    let chat = "/v1/chat/completions";
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(MAX_BODY + 1));
    assert_error(
        "oversized",
        exchange(addr, &post(c, "application/json", &big)),
        413,
        None,
    );
    // Chunked, so no Content-Length gives it away: refused once the limit is read.
    let mut chunked = format!(
        "POST {c} HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    chunked.extend_from_slice(big.as_bytes());
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_error("oversized, chunked", exchange(addr, &chunked), 413, None);
    let lie = format!(
        "POST {c} HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"prompt\": "
    );
    let started = Instant::now();
    assert_error(
        "Content-Length lie",
        exchange(addr, lie.as_bytes()),
        408,
        None,
    );
    assert!(started.elapsed() < Duration::from_secs(BODY_TIMEOUT_S + 5));
    let wizard = json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string();
    let r = exchange(addr, &post(chat, "application/json", &wizard));
    assert_error("unknown role", r, 400, Some("messages[0].role"));
    let empty = json!({"messages": [{"role": "user"}]}).to_string();
    let r = exchange(addr, &post(chat, "application/json", &empty));
    assert_error("no content", r, 400, Some("messages[0].content"));
    let r = exchange(addr, &post(c, "text/plain", &completion(2)));
    assert_error("text/plain", r, 400, None);
    let nul = json!({"prompt": "a\u{0}b", "max_tokens": 2}).to_string();
    let r = exchange(addr, &post(c, "application/json", &nul));
    assert_error("NUL", r, 400, Some("prompt"));
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, text) = exchange(addr, &get("/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Anonymous resident memory of a process, in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon in /proc/PID/status")
        * 1024
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A slow client: opens a connection, sends a head one byte every 200 ms, and opens
/// another when the server closes it. Returns how long each connection lived.
fn slow_header_client(addr: SocketAddr, stop: &AtomicBool) -> Vec<Duration> {
    let head = b"POST /v1/completions HTTP/1.1\r\nHost: kiln\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut lives = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let opened = Instant::now();
        let mut sent = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                return lives;
            }
            if s.write_all(&head[sent % head.len()..][..1]).is_err() {
                break;
            }
            sent += 1;
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Ok(_) => break, // closed (0) or answered: the server ended it
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        lives.push(opened.elapsed());
    }
    lives
}

/// What a soak phase saw.
struct Soak {
    held: Duration,
    /// How long each slow-header connection lived before the server closed it.
    lives: Vec<Duration>,
    /// Latency of each normal request (all answered 200).
    latencies: Vec<Duration>,
    abuse_rounds: usize,
}

/// Slow headers and abusive requests for `soak`, while a normal client makes at least
/// `normal` requests, every one of which must succeed.
fn soak_phase(addr: SocketAddr, soak: Duration, normal: usize) -> Soak {
    let stop = AtomicBool::new(false);
    let abuse_rounds = AtomicUsize::new(0);
    let started = Instant::now();
    let (lives, latencies) = std::thread::scope(|s| {
        let slow: Vec<_> = (0..SLOW_CLIENTS)
            .map(|_| s.spawn(|| slow_header_client(addr, &stop)))
            .collect();
        let abuser = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                abuse_round(addr);
                abuse_rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut latencies = Vec::new();
        while latencies.len() < normal || started.elapsed() < soak {
            let t = Instant::now();
            let r = exchange(
                addr,
                &post("/v1/completions", "application/json", &completion(4)),
            );
            let v: Value = serde_json::from_str(&r.1).unwrap_or(Value::Null);
            assert_eq!(r.0, 200, "normal request {}: {}", latencies.len(), r.1);
            assert!(v["choices"][0]["text"].is_string(), "{}", r.1);
            latencies.push(t.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        abuser.join().unwrap();
        let lives: Vec<Duration> = slow.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (lives, latencies)
    });
    let longest = lives.iter().max().copied().unwrap_or_default();
    assert!(
        longest < Duration::from_secs(HEADER_TIMEOUT_S + 2),
        "a slow header lived {longest:?} past the {HEADER_TIMEOUT_S} s timeout"
    );
    Soak {
        held: started.elapsed(),
        lives,
        latencies,
        abuse_rounds: abuse_rounds.load(Ordering::Relaxed),
    }
}

/// What the connection cap did.
struct Cap {
    /// Idle connections closed to make room, and how long the new client waited.
    evicted: usize,
    served_in: Duration,
    refusal_time: Duration,
    served_again_after: Duration,
}

/// Whether the server has closed a connection (without blocking).
fn closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    !matches!(s.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// The connection cap: idle connections past it make room for new clients (the oldest
/// idle one is closed), so a new client is served at once; only when every connection is
/// busy (here: bodies still arriving) is one more refused, at once, with an error object;
/// once the busy ones time out, new connections are served again.
fn cap_phase(addr: SocketAddr) -> Cap {
    std::thread::sleep(Duration::from_millis(500)); // earlier clients' sockets close
    let mut idle: Vec<TcpStream> = (0..CONNECTIONS + 16)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (status, body) = exchange(addr, &get("/health"));
    let served_in = t.elapsed();
    assert_eq!(status, 200, "a new client during an idle flood: {body}");
    std::thread::sleep(Duration::from_millis(100));
    let evicted = idle.iter_mut().map(closed).filter(|&c| c).count();
    assert!(
        evicted > 16 && idle.len() - evicted < CONNECTIONS,
        "{evicted} of {} idle connections closed with a cap of {CONNECTIONS}",
        idle.len()
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));

    let head = "POST /v1/completions HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\": ";
    let mut busy: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let refused = exchange(addr, &get("/health"));
    let refusal_time = t.elapsed();
    assert_error("every connection busy", refused, 503, None);
    assert!(
        refusal_time < Duration::from_secs(1),
        "refusal took {refusal_time:?}"
    );
    let t = Instant::now();
    wait_for(
        "busy connections timed out",
        Duration::from_secs(BODY_TIMEOUT_S + 5),
        || exchange(addr, &get("/health")).0 == 200,
    );
    let served_again_after = t.elapsed();
    for s in &mut busy {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = parse_response(&String::from_utf8_lossy(&out));
        assert_error("a body that never came", r, 408, None);
    }
    Cap {
        evicted,
        served_in,
        refusal_time,
        served_again_after,
    }
}

/// KV pages in use once they are back at `pages` (within 30 s), and anonymous RSS.
fn settled(addr: SocketAddr, pid: u32, pages: f64) -> (f64, u64) {
    wait_for("KV pages back to baseline", Duration::from_secs(30), || {
        metric(addr, "kiln_kv_pages_in_use") == pages
    });
    std::thread::sleep(Duration::from_millis(500));
    (metric(addr, "kiln_kv_pages_in_use"), rss_anon(pid))
}

#[test]
fn the_server_holds_against_slow_idle_and_oversized_clients() {
    let soak = Duration::from_secs(
        std::env::var("KILN_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let server = start();
    let (addr, pid) = (server.addr, server.child.id());

    // Warm up: every phase twice, briefly, so that the baseline holds what a server that
    // has met these clients holds (thread stacks, the allocator's pools, connection
    // buffers: measured, the first rounds add 0.1-0.4 MiB each, a 60 s soak after them
    // about as much; growth with the traffic would be a leak).
    let first_rss = rss_anon(pid);
    for _ in 0..2 {
        soak_phase(addr, Duration::from_secs(HEADER_TIMEOUT_S + 1), 4);
        cap_phase(addr);
    }
    let (pages_before, rss_before) = settled(addr, pid, 0.0);

    let s = soak_phase(addr, soak, NORMAL_REQUESTS);
    let mut sorted = s.latencies.clone();
    sorted.sort();
    eprintln!(
        "soak: {SLOW_CLIENTS} slow-header clients for {:.0} s ({} connections closed by the {HEADER_TIMEOUT_S} s header timeout, longest {:.2} s); {} normal requests all 200 (latency p50 {:.0} ms, max {:.0} ms); {} rounds of abusive requests (oversized, chunked oversized, Content-Length lie, unknown role, no content, text/plain, NUL), each answered as expected",
        s.held.as_secs_f64(),
        s.lives.len(),
        s.lives
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64(),
        s.latencies.len(),
        sorted[sorted.len() / 2].as_secs_f64() * 1e3,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        s.abuse_rounds
    );
    let c = cap_phase(addr);
    eprintln!(
        "cap {CONNECTIONS}: {} idle connections opened, {} of the oldest closed to make room, a new client served in {:.1} ms; with every connection busy (bodies arriving), one more refused with 503 in {:.1} ms; new connections served again {:.1} s later (each busy one got 408)",
        CONNECTIONS + 16,
        c.evicted,
        c.served_in.as_secs_f64() * 1e3,
        c.refusal_time.as_secs_f64() * 1e3,
        c.served_again_after.as_secs_f64()
    );

    let (pages_after, rss_after) = settled(addr, pid, pages_before);
    let growth = rss_after as f64 / rss_before as f64 - 1.0;
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "memory: KV pages in use {pages_before} -> {pages_after}; anonymous RSS {:.1} MiB before any client, {:.1} MiB after the warm-up (baseline), {:.1} MiB after the soak ({:+.1}%)",
        mib(first_rss),
        mib(rss_before),
        mib(rss_after),
        growth * 100.0
    );
    assert!(growth < 0.05, "anonymous RSS grew {:.1}%", growth * 100.0);
}

/// The server's stderr lines that start with "kiln serve: ", but the first (listening)
/// and the last (stopped), until the server ends.
fn log_lines(served: &mut Served) -> std::thread::JoinHandle<Vec<String>> {
    let stderr = served.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("kiln serve: ") && !l.contains("listening"))
            .filter(|l| !l.ends_with("stopped"))
            .collect()
    })
}

/// The access log: one line per request, with method, path, status, tokens for a
/// generation (streamed or not) and time; none with `--quiet`.
#[test]
fn the_access_log_has_one_line_per_request() {
    let mut quiet = start_with(Stdio::piped(), &["--quiet"]);
    let quiet_lines = log_lines(&mut quiet);
    assert_eq!(
        exchange(
            quiet.addr,
            &post("/v1/completions", "application/json", &completion(2))
        )
        .0,
        200
    );
    drop(quiet);
    assert_eq!(quiet_lines.join().unwrap(), Vec::<String>::new());

    let mut served = start_with(Stdio::piped(), &[]);
    let lines = log_lines(&mut served);
    let addr = served.addr;
    assert_eq!(exchange(addr, &get("/health")).0, 200);
    assert_eq!(
        exchange(
            addr,
            &post("/v1/completions", "application/json", &completion(3))
        )
        .0,
        200
    );
    let stream = json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0, "stream": true});
    assert_eq!(
        exchange(
            addr,
            &post("/v1/completions", "application/json", &stream.to_string())
        )
        .0,
        200
    );
    assert_eq!(exchange(addr, &get("/nowhere")).0, 404);
    drop(served);
    let lines = lines.join().unwrap();
    let expected = [
        ("GET /health 200", None),
        ("POST /v1/completions 200", Some("+3 tokens")),
        ("POST /v1/completions 200", Some("+2 tokens")),
        ("GET /nowhere 404", None),
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:?}");
    for (line, (start, tokens)) in lines.iter().zip(expected) {
        let rest = line.strip_prefix("kiln serve: ").unwrap();
        assert!(rest.starts_with(start), "{line}");
        assert_eq!(
            tokens.is_some_and(|t| rest.contains(t)),
            tokens.is_some(),
            "{line}"
        );
        assert!(rest.ends_with(" s"), "{line}");
    }
}
