//! A small blocking HTTP/1.1 client for the server tests (std only): whole responses, and
//! server-sent events read as they come.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// An open response: status, and a reader over its (de-chunked) body.
pub struct Response {
    pub status: u16,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

pub fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    Response {
        status,
        reader,
        chunked,
        left: 0,
        done: false,
    }
}

impl Response {
    /// The whole body as text.
    pub fn text(mut self) -> String {
        let mut out = String::new();
        self.read_to_string(&mut out).unwrap();
        out
    }

    pub fn json(self) -> Value {
        let text = self.text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    }

    /// The next `data:` payload of an event stream (None at the end of the body).
    pub fn next_data(&mut self) -> Option<String> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let mut byte = [0u8; 1];
            loop {
                match self.read(&mut byte) {
                    Ok(1) if byte[0] == b'\n' => break,
                    Ok(1) => line.push(byte[0]),
                    _ if line.is_empty() => return None,
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&line);
            if let Some(data) = text.trim_end().strip_prefix("data: ") {
                return Some(data.to_string());
            }
        }
    }

    /// Close the connection now (a client that leaves).
    pub fn abandon(self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.reader.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.reader.read_line(&mut line)?; // the CRLF after the previous chunk
            }
            self.left = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let n = self.reader.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

/// POST JSON; returns the status and the body as JSON.
pub fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let r = send(addr, "POST", path, Some(&body.to_string()));
    let status = r.status;
    (status, r.json())
}

/// POST a `stream: true` request; returns the status, the text pieces, the finish reason,
/// and whether the stream ended with `[DONE]`.
pub fn post_stream(
    addr: SocketAddr,
    path: &str,
    body: &Value,
) -> (u16, String, Option<String>, bool) {
    let mut r = send(addr, "POST", path, Some(&body.to_string()));
    let status = r.status;
    let mut text = String::new();
    let mut finish = None;
    let mut done = false;
    while let Some(data) = r.next_data() {
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        for choice in chunk["choices"].as_array().unwrap() {
            let piece = choice["text"]
                .as_str()
                .or_else(|| choice["delta"]["content"].as_str())
                .unwrap_or("");
            text.push_str(piece);
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (status, text, finish, done)
}

/// The value of one sample line of the Prometheus text.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = send(addr, "GET", "/metrics", None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}
